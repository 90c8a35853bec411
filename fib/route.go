package fib

import (
	"errors"
	"fmt"
	"net/netip"
)

// PortID names a forwarding port (an uplink or a downlink interface). The
// control plane numbers ports; the package gives no value a special meaning.
type PortID uint16

// LoopPolicy says what the dataplane does with a packet that would leave on
// the port it arrived on (RFC 8987 section 4.3.2, loop prevention).
type LoopPolicy uint8

const (
	// LoopDefault defers to the egress port's configured loop policy.
	LoopDefault LoopPolicy = iota
	// LoopDrop drops a packet that would go back out of its ingress port.
	LoopDrop
	// LoopForward forwards such a packet anyway.
	LoopForward
)

// String returns the policy's name as the configuration spells it.
func (p LoopPolicy) String() string {
	switch p {
	case LoopDefault:
		return "default"
	case LoopDrop:
		return "drop"
	case LoopForward:
		return "forward"
	}
	return fmt.Sprintf("LoopPolicy(%d)", uint8(p))
}

// Route is one delegated prefix and where its traffic goes: out of Port to
// the client at NextHop (its link-local address) and MAC.
//
// Routes held by a Snapshot are shared and immutable; a *Route returned by a
// lookup must not be modified.
type Route struct {
	// The fields the packet path reads come first: in the FIB's entries
	// they share a cache line with the key a lookup compares.
	Port    PortID       // egress port
	MAC     [6]byte      // the client's link-layer address
	Loop    LoopPolicy   // loop handling for packets routed back out of their ingress port
	Prefix  netip.Prefix // delegated prefix, exactly as delegated (masked)
	NextHop netip.Addr   // the client's address (relay peer-address); may be the zero Addr
}

// Hop is the part of a Route that forwarding along it reads: where the
// packet goes. A batch lookup can give it without reading the route
// (Batch.LookupHops).
type Hop struct {
	Port PortID  // egress port
	MAC  [6]byte // the client's link-layer address
}

// Hop returns r's hop.
func (r *Route) Hop() Hop { return Hop{Port: r.Port, MAC: r.MAC} }

var (
	// ErrInvalidPrefix is returned for a prefix that is not a valid IPv6
	// prefix without a zone (IPv4 prefixes included).
	ErrInvalidPrefix = errors.New("invalid IPv6 prefix")
	// ErrInvalidRoute is returned for a route whose fields other than the
	// prefix are unusable.
	ErrInvalidRoute = errors.New("invalid route")
)

// checkPrefix validates p and returns it masked to its length, so that a
// route for a /56 covers exactly that /56 (RFC 8987 ).
func checkPrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() || !p.Addr().Is6() || p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%w: %v", ErrInvalidPrefix, p)
	}
	return p.Masked(), nil
}

// checkRoute validates r and returns a copy with its prefix masked.
func checkRoute(r Route) (Route, error) {
	p, err := checkPrefix(r.Prefix)
	if err != nil {
		return Route{}, err
	}
	r.Prefix = p
	if r.NextHop.IsValid() && !r.NextHop.Is6() {
		return Route{}, fmt.Errorf("%w: %v: next hop %v is not IPv6", ErrInvalidRoute, p, r.NextHop)
	}
	if r.Loop > LoopForward {
		return Route{}, fmt.Errorf("%w: %v: loop policy %v", ErrInvalidRoute, p, r.Loop)
	}
	return r, nil
}
