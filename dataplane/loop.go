package dataplane

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/gaissmai/bart"
	"github.com/pdrelay/pdrelay/fib"
)

// isLoop reports whether a frame that came in on p and is routed back
// out of p is a looping packet (RFC 8987 R-5): always on a point-to-point
// link; on a multi-access link only when the frame comes from the very
// next hop it would go back to (its source MAC is the route's MAC, mac).
// A client sending to another client on the same segment is not a loop:
// the relay forwards the frame back out of the port, to the other client.
func (p *port) isLoop(frame []byte, mac [6]byte) bool {
	return !p.multiAccess || *(*[6]byte)(frame[offSrcMAC : offSrcMAC+6]) == mac
}

// loopPolicy returns what to do with a looping packet to dst that a route
// whose own policy is client (the binding's: fib.Hop.Loop) sends back out
// of p, the most specific setting winning: the longest per-destination
// override, then the client's, then the port's. It allocates nothing.
func (s *shared) loopPolicy(p *port, client fib.LoopPolicy, dst *[16]byte) fib.LoopPolicy {
	// mayHold inlined first: a destination outside the overrides' range,
	// the common case, costs no call.
	if s.overrides.mayHold(dst) {
		if pol, ok := s.overrides.lookup(dst); ok {
			return pol
		}
	}
	if client != fib.LoopDefault {
		return client
	}
	return p.loop
}

// overrides holds the per-destination loop policies: a short list is
// scanned longest prefix first (a few ns), a long one goes to a bart
// table.
type overrides struct {
	list []override
	tbl  *bart.Table[fib.LoopPolicy]
	// The top 64 bits of every address an override holds lie in
	// [min, max] (min > max: there are none), so that most looping
	// packets, to a client's prefix no override is about, are answered
	// by one comparison.
	min, max uint64
}

// maxOverrideList is the most overrides kept as a list.
const maxOverrideList = 16

type override struct {
	hi, lo   uint64 // masked prefix
	mhi, mlo uint64 // mask
	bits     int
	pol      fib.LoopPolicy
}

// newOverrides builds the lookup for checked, masked, distinct overrides.
func newOverrides(os []LoopOverride) overrides {
	r := overrides{min: ^uint64(0), max: 0}
	for _, o := range os {
		a := o.Prefix.Addr().As16()
		hi := binary.BigEndian.Uint64(a[:8])
		mhi, _ := mask128(o.Prefix.Bits())
		r.min, r.max = min(r.min, hi&mhi), max(r.max, hi|^mhi)
	}
	if len(os) > maxOverrideList {
		r.tbl = new(bart.Table[fib.LoopPolicy])
		for _, o := range os {
			r.tbl.Insert(o.Prefix, o.Policy)
		}
		return r
	}
	for _, o := range os {
		a := o.Prefix.Addr().As16()
		mhi, mlo := mask128(o.Prefix.Bits())
		r.list = append(r.list, override{
			hi: binary.BigEndian.Uint64(a[:8]), lo: binary.BigEndian.Uint64(a[8:]),
			mhi: mhi, mlo: mlo, bits: o.Prefix.Bits(), pol: o.Policy,
		})
	}
	slices.SortStableFunc(r.list, func(a, b override) int { return b.bits - a.bits })
	return r
}

// mask128 returns the mask of a prefix length as two halves.
func mask128(bits int) (hi, lo uint64) {
	switch {
	case bits <= 0:
		return 0, 0
	case bits < 64:
		return ^uint64(0) << (64 - bits), 0
	case bits < 128:
		return ^uint64(0), ^uint64(0) << (128 - bits)
	}
	return ^uint64(0), ^uint64(0)
}

// mayHold reports whether an override may hold dst: whether dst's top 64
// bits lie in the overrides' range.
func (o *overrides) mayHold(dst *[16]byte) bool {
	hi := binary.BigEndian.Uint64(dst[:8])
	return hi >= o.min && hi <= o.max
}

// lookup returns the policy of the longest override holding dst, for a
// dst that mayHold (the caller checks, inlined).
func (o *overrides) lookup(dst *[16]byte) (fib.LoopPolicy, bool) {
	hi := binary.BigEndian.Uint64(dst[:8])
	if o.tbl != nil {
		return o.tbl.Lookup(netip.AddrFrom16(*dst))
	}
	lo := binary.BigEndian.Uint64(dst[8:])
	for i := range o.list {
		e := &o.list[i]
		if hi&e.mhi == e.hi && lo&e.mlo == e.lo {
			return e.pol, true
		}
	}
	return fib.LoopDefault, false
}
