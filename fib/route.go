package fib

import (
	"errors"
	"fmt"
	"net/netip"
)

// PortID names a forwarding port (an uplink or a downlink interface). The
// control plane numbers ports, from 0 to MaxPort; the package gives no value
// a special meaning.
type PortID uint16

// MaxPort is the highest port a Route may name. Dense blocks keep a route's
// hop in 8 bytes beside the entry: the port takes 14 bits of them and the
// loop policy the other 2 (a router has far fewer ports than 16,384).
const MaxPort PortID = 1<<14 - 1

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
// packet goes, and what to do if that is back where it came from. A batch
// lookup can give it without reading the route (Batch.LookupHops).
type Hop struct {
	Port PortID     // egress port
	MAC  [6]byte    // the client's link-layer address
	Loop LoopPolicy // the route's loop policy
}

// Hop returns r's hop.
func (r *Route) Hop() Hop {
	var h Hop
	r.hopTo(&h)
	return h
}

// hopTo stores r's hop in *h a field at a time.
func (r *Route) hopTo(h *Hop) { h.Port, h.MAC, h.Loop = r.Port, r.MAC, r.Loop }

// packedHop is a Hop in 8 bytes, as a dense block's cell holds it: the
// loop policy in the top 2 bits of the port (checkRoute keeps ports to
// MaxPort and policies to 2 bits).
type packedHop struct {
	portLoop uint16
	mac      [6]byte
}

func (h Hop) pack() packedHop {
	return packedHop{portLoop: uint16(h.Port) | uint16(h.Loop)<<14, mac: h.MAC}
}

// unpackTo stores h in *d a field at a time.
func (h *packedHop) unpackTo(d *Hop) {
	d.Port, d.MAC, d.Loop = PortID(h.portLoop&uint16(MaxPort)), h.mac, LoopPolicy(h.portLoop>>14)
}

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
	if r.Port > MaxPort {
		return Route{}, fmt.Errorf("%w: %v: port %d above %d", ErrInvalidRoute, p, r.Port, MaxPort)
	}
	if r.Loop > LoopForward {
		return Route{}, fmt.Errorf("%w: %v: loop policy %v", ErrInvalidRoute, p, r.Loop)
	}
	return r, nil
}
