package fib

import (
	"encoding/binary"
	"iter"
	"math/bits"
	"net/netip"
	"unsafe"
)

// routeEnt is a route as the tables hold it.
type routeEnt struct {
	key
	Route
	_ [routePad]byte
}

// routePad makes a routeEnt 128 bytes, a size class whose objects start
// on a cache line: the key and the fields the packet path reads (Port,
// MAC, Loop) then always share the first line, so a lookup and the
// forwarding after it miss the cache once for the entry, not twice.
const routePad = 128 - unsafe.Sizeof(struct {
	key
	Route
}{})

func (e *routeEnt) k() *key        { return &e.key }
func (*routeEnt) cells() bool      { return true }
func (e *routeEnt) hop() packedHop { return e.Route.Hop().pack() }

// srcEnt is a source-filter entry: how many bindings allow the prefix on
// the port (AddSource), plus srcConf if the port's configuration allows it
// (SetAllowedSources). An entry exists while refs is non-zero.
type srcEnt struct {
	key
	refs uint32
}

const (
	srcConf    uint32 = 1 << 31
	srcRefMask uint32 = srcConf - 1
)

func (e *srcEnt) k() *key      { return &e.key }
func (*srcEnt) cells() bool    { return false }
func (*srcEnt) hop() packedHop { return packedHop{} }

// Snapshot is one published, immutable generation of the forwarding tables.
// All its methods are safe for concurrent use and allocate nothing. A nil
// *Snapshot is the empty table: it finds no route and allows no source, so
// a dataplane that has not been given a table drops everything.
type Snapshot struct {
	routes lpm[*routeEnt]
	src    lpm[*srcEnt]
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

// The lookups below are written out for their concrete types: calls to
// generic functions are not inlined here.

func (s *Snapshot) lookup(hi, lo uint64) (*Route, bool) {
	rt := &s.routes
	fast, slowMax := uint8(1<<maxFast-1), rt.slowMax
	if rt.filter {
		o, ok := findOuter(rt.outer, region(hi))
		if !ok {
			return nil, false
		}
		if fast = o.fast; !o.slow {
			slowMax = -1
		}
	}
	n := min(rt.nfast, maxFast)
	// First find every length's bucket and whether any of its tags match:
	// the loads are independent, so the CPU overlaps their cache misses.
	// Then look at the candidates, longest length first.
	var bs [maxFast]*bkt[*routeEnt]
	var hs [maxFast]uint64
	var cand [maxFast]bool
	var des [maxFast]*routeEnt // matches found in dense blocks
	for i := range n {
		if fast&(1<<i) == 0 {
			continue
		}
		f := &rt.fast[i]
		if f.blocks {
			id, x := blockID(hi, int(f.bits))
			if b := rt.dense.block(f.runs0, id); b != nil {
				des[i] = b.get(x)
				continue
			}
		}
		h := hash(hi&f.mhi, lo&f.mlo, 0, rt.s0, rt.s1)
		x := h >> f.shift
		b := f.top[x>>chunkBits][x&chunkMask]
		w := ctrlWord(&b.ctrl, home(h))
		// A candidate if a tag in the home group matches or the group is
		// full, so that the key may lie further on.
		bs[i], hs[i] = b, h
		cand[i] = matchTag(w, tag(h)) != 0 || matchTag(w, ctrlEmpty) == 0
	}
	for i := range n {
		if !cand[i] && des[i] == nil {
			continue
		}
		f := &rt.fast[i]
		e := des[i]
		if e == nil {
			e = findRoute(bs[i], hs[i], hi&f.mhi, lo&f.mlo)
		}
		if e != nil {
			if int(f.bits) < slowMax {
				return s.lookupSlow(hi, lo, &e.Route)
			}
			return &e.Route, true
		}
	}
	if slowMax < 0 {
		return nil, false
	}
	return s.lookupSlow(hi, lo, nil)
}

// findRoute is bkt.find for routes.
func findRoute(b *bkt[*routeEnt], h, hi, lo uint64) *routeEnt {
	tg, g0 := tag(h), home(h)
	for ; b != nil; b = b.next {
		for i := range groups {
			g := (g0 + i) & (groups - 1)
			w := ctrlWord(&b.ctrl, g)
			for m := matchTag(w, tg); m != 0; m &= m - 1 {
				if e := b.slots[8*g+bits.TrailingZeros64(m)>>3]; e.hi == hi && e.lo == lo {
					return e
				}
			}
			if matchTag(w, ctrlEmpty) != 0 {
				return nil
			}
		}
	}
	return nil
}

// findSource is bkt.find for source-filter entries.
func findSource(b *bkt[*srcEnt], h, hi, lo uint64, port uint16) bool {
	tg, g0 := tag(h), home(h)
	for ; b != nil; b = b.next {
		for i := range groups {
			g := (g0 + i) & (groups - 1)
			w := ctrlWord(&b.ctrl, g)
			for m := matchTag(w, tg); m != 0; m &= m - 1 {
				if e := b.slots[8*g+bits.TrailingZeros64(m)>>3]; e.hi == hi && e.lo == lo && e.port == port {
					return true
				}
			}
			if matchTag(w, ctrlEmpty) != 0 {
				return false
			}
		}
	}
	return false
}

// lookupSlow completes a lookup in the bart table of the lengths without an
// exact table; best is the fast match, if any.
func (s *Snapshot) lookupSlow(hi, lo uint64, best *Route) (*Route, bool) {
	if len(s.routes.slow) > 0 && s.routes.slow[0] != nil {
		e, ok := s.routes.slow[0].Lookup(join128(hi, lo))
		if ok && (best == nil || e.Prefix.Bits() > best.Prefix.Bits()) {
			return &e.Route, true
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
	fast, slow := uint8(1<<maxFast-1), st.slowMax >= 0
	if st.filter {
		o, ok := findOuter(st.outer, region(hi))
		if !ok {
			return false
		}
		fast, slow = o.fast, o.slow
	}
	n := min(st.nfast, maxFast)
	var bs [maxFast]*bkt[*srcEnt]
	var hs [maxFast]uint64
	var cand [maxFast]bool
	for i := range n {
		if fast&(1<<i) == 0 {
			continue
		}
		f := &st.fast[i]
		if f.blocks {
			k, x := blockOf(hi, int(f.bits), port)
			if b := st.dense.find(k); b != nil {
				if b.holds(x) {
					return true
				}
				continue
			}
		}
		h := hash(hi&f.mhi, lo&f.mlo, port, st.s0, st.s1)
		x := h >> f.shift
		b := f.top[x>>chunkBits][x&chunkMask]
		w := ctrlWord(&b.ctrl, home(h))
		bs[i], hs[i] = b, h
		cand[i] = matchTag(w, tag(h)) != 0 || matchTag(w, ctrlEmpty) == 0
	}
	for i := range n {
		if !cand[i] {
			continue
		}
		f := &st.fast[i]
		if findSource(bs[i], hs[i], hi&f.mhi, lo&f.mlo, port) {
			return true
		}
	}
	if slow && int(port) < len(st.slow) && st.slow[port] != nil {
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
			ok := s.routes.fast[i].t.all(func(e *routeEnt) bool {
				return yield(&e.Route)
			})
			if !ok {
				return
			}
		}
		for _, t := range s.routes.slow {
			if t == nil {
				continue
			}
			for _, e := range t.All6() {
				if !yield(&e.Route) {
					return
				}
			}
		}
	}
}
