package fib

import (
	"encoding/binary"
	"iter"
	"net/netip"
)

// srcVal is the value of a source-filter entry: how many bindings allow the
// prefix on the port (AddSource), plus srcConf if the port's configuration
// allows it (SetAllowedSources). An entry exists while its value is non-zero.
type srcVal uint32

const (
	srcConf    srcVal = 1 << 31
	srcRefMask srcVal = srcConf - 1
)

// Snapshot is one published, immutable generation of the forwarding tables.
// All its methods are safe for concurrent use and allocate nothing. A nil
// *Snapshot is the empty table: it finds no route and allows no source, so
// a dataplane that has not been given a table drops everything.
type Snapshot struct {
	routes lpm[*Route]
	src    lpm[srcVal]
	def    *Route
	gen    uint64
}

// Lookup returns the route with the longest delegated prefix that contains
// dst. It returns false for an IPv4 or invalid address and when no delegated
// prefix contains dst; it does not fall back to the default route (see
// DefaultRoute). The returned Route is shared and must not be modified.
func (s *Snapshot) Lookup(dst netip.Addr) (*Route, bool) {
	if s == nil || !dst.Is6() {
		return nil, false
	}
	hi, lo := split128(dst)
	return s.lookup(hi, lo)
}

// LookupBytes is Lookup for an address in network byte order, as it sits in
// a packet header: (*[16]byte)(pkt[24:40]) is an IPv6 destination.
func (s *Snapshot) LookupBytes(dst *[16]byte) (*Route, bool) {
	if s == nil || dst == nil {
		return nil, false
	}
	return s.lookup(binary.BigEndian.Uint64(dst[:8]), binary.BigEndian.Uint64(dst[8:]))
}

func (s *Snapshot) lookup(hi, lo uint64) (*Route, bool) {
	rt := &s.routes
	// Load every length's home control byte first: the loads are
	// independent, so the CPU overlaps their cache misses. Then compare,
	// longest first.
	var ctrl [maxFast]uint8
	var hs [maxFast]uint64
	n := min(rt.nfast, maxFast)
	for i := range n {
		f := &rt.fast[i]
		h := hash(hi&f.mhi, lo&f.mlo, 0, rt.s0, rt.s1)
		c := f.dir[h>>f.shift].ctrl
		hs[i], ctrl[i] = h, c[h&uint64(len(c)-1)]
	}
	for i := range n {
		if ctrl[i] == 0 {
			continue // the home slot is empty: not here
		}
		// Inline of store.find: generic calls do not inline here.
		f := &rt.fast[i]
		khi, klo, h := hi&f.mhi, lo&f.mlo, hs[i]
		st := &f.dir[h>>f.shift]
		m, t := uint64(len(st.ctrl)-1), tag(h)
		for j := h & m; st.ctrl[j] != 0; j = (j + 1) & m {
			if e := &st.slots[j]; st.ctrl[j] == t && e.hi == khi && e.lo == klo {
				if int(f.bits) < rt.slowMax {
					return s.lookupSlow(hi, lo, e.v)
				}
				return e.v, true
			}
		}
	}
	if rt.slowMax < 0 {
		return nil, false
	}
	return s.lookupSlow(hi, lo, nil)
}

// lookupSlow completes a lookup in the bart table of the lengths without an
// exact table; best is the fast match, if any.
func (s *Snapshot) lookupSlow(hi, lo uint64, best *Route) (*Route, bool) {
	if len(s.routes.slow) > 0 && s.routes.slow[0] != nil {
		r, ok := s.routes.slow[0].Lookup(join128(hi, lo))
		if ok && (best == nil || r.Prefix.Bits() > best.Prefix.Bits()) {
			return r, true
		}
	}
	return best, best != nil
}

// SourceAllowed reports whether a packet from src may enter on port: src
// lies in a prefix delegated to a binding on that port (AddSource) or in one
// of the port's configured prefixes (SetAllowedSources). It is the BCP 38
// check of RFC 8987 R-3.
func (s *Snapshot) SourceAllowed(port PortID, src netip.Addr) bool {
	if s == nil || !src.Is6() {
		return false
	}
	hi, lo := split128(src)
	return s.sourceAllowed(uint16(port), hi, lo)
}

// SourceAllowedBytes is SourceAllowed for an address in network byte order:
// (*[16]byte)(pkt[8:24]) is an IPv6 source.
func (s *Snapshot) SourceAllowedBytes(port PortID, src *[16]byte) bool {
	if s == nil || src == nil {
		return false
	}
	return s.sourceAllowed(uint16(port), binary.BigEndian.Uint64(src[:8]), binary.BigEndian.Uint64(src[8:]))
}

func (s *Snapshot) sourceAllowed(port uint16, hi, lo uint64) bool {
	st := &s.src
	var ctrl [maxFast]uint8
	var hs [maxFast]uint64
	n := min(st.nfast, maxFast)
	for i := range n {
		f := &st.fast[i]
		h := hash(hi&f.mhi, lo&f.mlo, port, st.s0, st.s1)
		c := f.dir[h>>f.shift].ctrl
		hs[i], ctrl[i] = h, c[h&uint64(len(c)-1)]
	}
	for i := range n {
		if ctrl[i] == 0 {
			continue
		}
		f := &st.fast[i]
		khi, klo, h := hi&f.mhi, lo&f.mlo, hs[i]
		d := &f.dir[h>>f.shift]
		m, t := uint64(len(d.ctrl)-1), tag(h)
		for j := h & m; d.ctrl[j] != 0; j = (j + 1) & m {
			if e := &d.slots[j]; d.ctrl[j] == t && e.hi == khi && e.lo == klo && e.port == port {
				return true
			}
		}
	}
	if st.slowMax >= 0 && int(port) < len(st.slow) && st.slow[port] != nil {
		return st.slow[port].Contains(join128(hi, lo))
	}
	return false
}

// DefaultRoute returns the uplink default route, if the control plane has
// set one. The returned Route is shared and must not be modified.
func (s *Snapshot) DefaultRoute() (*Route, bool) {
	if s == nil || s.def == nil {
		return nil, false
	}
	return s.def, true
}

// Len returns the number of delegated routes.
func (s *Snapshot) Len() int {
	if s == nil {
		return 0
	}
	return s.routes.n
}

// SourceLen returns the number of (port, prefix) source-filter entries.
func (s *Snapshot) SourceLen() int {
	if s == nil {
		return 0
	}
	return s.src.n
}

// Gen returns the snapshot's generation: 1 for the first Publish of a
// Table, one more for each later one, 0 for a nil Snapshot.
func (s *Snapshot) Gen() uint64 {
	if s == nil {
		return 0
	}
	return s.gen
}

// Routes iterates over the delegated routes in no particular order.
func (s *Snapshot) Routes() iter.Seq[*Route] {
	return func(yield func(*Route) bool) {
		if s == nil {
			return
		}
		for i := range s.routes.nfast {
			ok := s.routes.fast[i].t.all(func(_, _ uint64, _ uint16, r *Route) bool {
				return yield(r)
			})
			if !ok {
				return
			}
		}
		for _, t := range s.routes.slow {
			if t == nil {
				continue
			}
			for _, r := range t.All6() {
				if !yield(r) {
					return
				}
			}
		}
	}
}
