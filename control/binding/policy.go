package binding

import (
	"errors"
	"fmt"
	"net/netip"
)

// Policy is what a delegated prefix must satisfy before it becomes a
// binding, whatever taught it: a snooped Reply, the store at start, or
// Bulk Leasequery (invariant 8 in ARCHITECTURE.md). A refused prefix
// installs nothing (no route, no source entry); the DHCPv6 message that
// carried it is relayed all the same (G-1).
//
// Besides what a Policy holds, a prefix is always refused when it
// overlaps the space that is never delegated (Reserved), and when it
// strictly contains, or lies strictly inside, the binding of another
// client (a different port or DUID). An identical prefix is not refused:
// it moves to its new client, the server's newer word winning.
type Policy struct {
	// MinLen and MaxLen bound the delegated prefix length (inclusive);
	// both 0 means any length.
	MinLen, MaxLen int
	// Pools, when not empty, are where every delegated prefix must lie,
	// unless PortPools has the port's own.
	Pools     []netip.Prefix
	PortPools map[string][]netip.Prefix
	// Own are the relay's own prefixes: the addresses (as /128) and
	// on-link subnets of its ports and every port's allowed_sources. A
	// delegation overlapping one would route the relay's own space to a
	// subscriber, or let the subscriber source it.
	Own []OwnPrefix
}

// OwnPrefix is a prefix of the relay's own, with what it is, for logs.
type OwnPrefix struct {
	Prefix netip.Prefix
	What   string // e.g. "address of up0", "allowed_sources of dl1"
}

// Refusal reasons, the values of RefusedError.Reason and of the metric's
// reason label.
const (
	RefuseLength   = "length"   // outside delegated_lengths
	RefusePool     = "pool"     // outside delegated_pools
	RefuseReserved = "reserved" // not unicast: ::/8, fe80::/10, ff00::/8
	RefuseOwn      = "relay"    // overlaps the relay's own addresses, subnets or allowed_sources
	RefuseNested   = "nested"   // contains or lies inside another client's binding
	RefuseInvalid  = "invalid"  // not an IPv6 prefix
)

// RefuseReasons lists every refusal reason, for metrics.
var RefuseReasons = []string{RefuseLength, RefusePool, RefuseReserved, RefuseOwn, RefuseNested, RefuseInvalid}

// ErrRefused is wrapped by every RefusedError.
var ErrRefused = errors.New("delegation refused")

// RefusedError says why a delegated prefix was not installed.
type RefusedError struct {
	Reason string
	Detail string // what it met, e.g. "outside 32-64" or "inside 2001:db8::/48 of dl1 client 0001..."
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("delegation refused (%s): %s", e.Reason, e.Detail)
}

func (e *RefusedError) Unwrap() error { return ErrRefused }

// Reserved is the address space never delegated: below ::/8 (the
// unspecified and loopback addresses, IPv4-mapped and -compatible
// addresses and other reserved space), link-local unicast and multicast.
// Unique local addresses (fc00::/7) are allowed: labs use them.
var Reserved = []netip.Prefix{
	netip.MustParsePrefix("::/8"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// ReservedOverlap returns the Reserved range p overlaps, or the zero
// Prefix.
func ReservedOverlap(p netip.Prefix) netip.Prefix {
	for _, r := range Reserved {
		if r.Overlaps(p) {
			return r
		}
	}
	return netip.Prefix{}
}

// check applies what the policy says of prefix p delegated on port; p is
// masked and IPv6. It does not look at other bindings (Table.checkNested
// does).
func (pol *Policy) check(port string, p netip.Prefix) error {
	if r := ReservedOverlap(p); r.IsValid() {
		return &RefusedError{RefuseReserved, "overlaps " + r.String()}
	}
	if (pol.MinLen != 0 || pol.MaxLen != 0) && (p.Bits() < pol.MinLen || p.Bits() > pol.MaxLen) {
		return &RefusedError{RefuseLength, fmt.Sprintf("/%d is outside delegated_lengths %d-%d", p.Bits(), pol.MinLen, pol.MaxLen)}
	}
	pools := pol.Pools
	if pp, ok := pol.PortPools[port]; ok && len(pp) > 0 {
		pools = pp
	}
	if len(pools) > 0 {
		in := false
		for _, q := range pools {
			if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
				in = true
				break
			}
		}
		if !in {
			return &RefusedError{RefusePool, fmt.Sprintf("outside the delegated_pools of %s", port)}
		}
	}
	for _, o := range pol.Own {
		if o.Prefix.Overlaps(p) {
			return &RefusedError{RefuseOwn, "overlaps " + o.Prefix.String() + " (" + o.What + ")"}
		}
	}
	return nil
}

// validPrefix reports whether p is a usable IPv6 prefix.
func validPrefix(p netip.Prefix) bool {
	return p.IsValid() && p.Addr().Is6() && !p.Addr().Is4In6() && p.Addr().Zone() == ""
}
