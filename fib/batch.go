package fib

import (
	"encoding/binary"
	"math/bits"
	"unsafe"
)

// Batch lookups. A single lookup in a table larger than the caches is a
// chain of dependent cache misses (directory entry, bucket control word,
// slot, entry): 120-170 ns at 1M prefixes here, nearly all of it waiting.
// A worker holds a batch of frames anyway, so the batch lookups walk the
// chain a step at a time for the whole batch: the loads of a step are
// independent of each other, and before the steps that do real work a
// loop small enough for the CPU to keep all its misses in flight at once
// touches the lines the step will read. The result of each lookup is the
// same as the single lookup's; what a step cannot settle (more than two
// matching tags, an overflow bucket, a prefix length held in bart)
// finishes with the single lookup's code.

// batchStride is how many addresses the batch lookups work on together.
// ForwardBatch at 1M routes, cold, ns per frame: 68 at 16, 63 at 32, 69
// at 64 before dense blocks and the state kept in a Batch; with them, 47
// at 64 against 49-57 at 32.
const batchStride = 64

// Probe states after the control word step.
const (
	probeMiss  = iota // not in the table
	probeSlot         // one tag matches: compare the key of slot
	probeSlot2        // two tags match: compare the keys of slot and slot2
	probeFull         // more, or an overflow bucket: search as a lookup does
	probeFound        // e is the match
)

// probe is one (address, fast length) pair of a batch.
type probe[P entry] struct {
	c      *chunk[P] // the directory chunk, and the index in it
	x      uint8
	b      *bkt[P]
	h      uint64
	hi, lo uint64 // the address masked to the length
	e, e2  P
	slot   uint8
	slot2  uint8
	state  uint8
	j      uint8 // the address's index in the batch
	i      uint8 // the fast length's index
}

// dprobe is one (address, fast length) pair of a batch whose prefix lies
// in a dense block (dense.go), found by begin.
type dprobe[P entry] struct {
	x   uint16   // the slot in the block
	w   *word[P] // the slot's word
	c   *cell[P] // routes: the cell, nil if the slot is free
	e   P
	hop packedHop
	j   uint8 // the address's index in the batch
	i   uint8 // the fast length's index
}

// What a batch lookup gives: it decides what probeAll reads.
const (
	wantMatch   = iota // whether there is a match (sources)
	wantEntries        // the matched entries, which the caller will read
	wantHops           // the matched entries and their hops: the caller reads the hops
)

// batchState is the per-stride working set of a batch lookup.
type batchState[P entry] struct {
	probes   [batchStride * maxFast]probe[P]
	dprobes  [batchStride * maxFast]dprobe[P]
	hi, lo   [batchStride]uint64
	fast     [batchStride]uint8 // fast lengths to probe per address
	slow     [batchStride]bool  // bart may hold a match
	best     [batchStride]int8  // fast index of the longest match, -1 if none
	bestE    [batchStride]P
	bestHop  [batchStride]packedHop // with wantHops: the hop of bestE, if fromCell
	fromCell [batchStride]bool      // bestE came from a dense block's cell
	sink     uint64                 // what the touching loops read, so that they stay

	// The probes under way: probes[:np], dprobes[:nd], in table t,
	// namespace ns, for want.
	t      *lpm[P]
	np, nd int
	ns     uint16
	want   uint8
}

// load reads the addresses and applies the outer filter: it sets fast,
// slow and best for addrs[j], j < n; a nil address probes nothing.
func (st *batchState[P]) load(t *lpm[P], addrs []*[16]byte) {
	all := uint8(1<<min(t.nfast, maxFast) - 1)
	for j, a := range addrs {
		st.best[j] = -1
		if a == nil {
			st.fast[j], st.slow[j] = 0, false
			continue
		}
		hi, lo := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
		st.hi[j], st.lo[j] = hi, lo
		st.fast[j], st.slow[j] = all, t.slowMax >= 0
		if t.filter {
			o, ok := findOuter(t.outer, region(hi))
			st.fast[j], st.slow[j] = o.fast&all, ok && o.slow
		}
	}
}

// probeAll finds the longest fast match of each loaded address in
// namespace ns: best[j], and with want other than wantMatch bestE[j] and
// fromCell[j] (with bestHop[j] if set). With wantEntries it touches the
// matched entries too (the caller is going to read them); with wantHops
// it spares that for the matches in dense blocks, whose cells hold the
// hops.
func (st *batchState[P]) probeAll(t *lpm[P], ns uint16, n int, want uint8) {
	st.begin(t, ns, n, want)
	probeRounds[P, P](st, nil)
}

// probeRounds runs the rounds of probeAll for a, begun, and for b too
// if it is not nil (also begun), interleaved: each round's misses of
// both are issued together, so that a batch checking its sources and
// looking up its destinations waits for the memory once per round, not
// twice.
//
// A round's misses are issued by loops small enough for the CPU to keep
// them all in flight at once, those of the dense probes beside those of
// the hashed ones, and the loops doing the work of the round then find
// their lines in cache. A round costs a batch about one memory latency,
// however few probes take it: a plan with a pool in blocks and a small
// one hashed paid the rounds of both in turn, 5 ns a lookup. (Touching
// within the work loops costs 5 ns a lookup.)
func probeRounds[P, Q entry](a *batchState[P], b *batchState[Q]) {
	// Round 1: the directory entries of the hashed probes (begin found
	// the dense probes' blocks in the index, which stays in cache).
	a.touchIndex()
	if b != nil {
		b.touchIndex()
	}
	// Round 2: the block words, the buckets' control bytes. Then read
	// them.
	a.touchWords()
	if b != nil {
		b.touchWords()
	}
	a.readWords()
	if b != nil {
		b.readWords()
	}
	// Round 3: the cells of the dense probes, the slots of the hashed
	// ones; round 4: the entries the hashed probes compare. Then compare.
	a.readSlots()
	if b != nil {
		b.readSlots()
	}
	a.touchEntries()
	if b != nil {
		b.touchEntries()
	}
	a.compare()
	if b != nil {
		b.compare()
	}
}

// begin sets up the rounds of a probeAll: it lists the probes of lengths
// with dense blocks, finding their blocks, and hashes the others, and
// the probes that find no block.
func (st *batchState[P]) begin(t *lpm[P], ns uint16, n int, want uint8) {
	st.t, st.ns, st.want = t, ns, want
	np, nd := 0, 0
	// A copy of the index's header, which the stores below cannot
	// change: the compiler keeps its fields in registers.
	dense := t.dense
	if t.nfast == 1 && t.fast[0].blocks {
		// One length, in blocks (a plan of one delegated length): each
		// address is one dense probe, or one hashed, or none.
		bits := int(t.fast[0].bits)
		runs := finder(dense.runs(ns, uint8(bits)))
		// dense.at written out on a local of the chunks, which stays in
		// a register: through at, 0.5-1 ns a frame more.
		chunks := dense.chunks
		for j := range n {
			if st.fast[j] == 0 {
				continue
			}
			id, x := blockID(st.hi[j], bits)
			var b *block[P]
			i, ok := id+runs.base, id-runs.first <= runs.span // see runFinder
			if !runs.one {
				i, ok = runs.search(id)
			}
			if ok {
				b = chunks[i>>dirChunkBits][i&(dirChunkLen-1)]
			}
			if b != nil {
				d := &st.dprobes[nd]
				nd++
				d.w, d.x, d.j, d.i = &b.words[x>>wordBits&(blockWords-1)], uint16(x), uint8(j), 0
				continue
			}
			st.hashProbe(t, ns, np, uint8(j), 0)
			np++
		}
		st.np, st.nd = np, nd
		return
	}
	// The runs of each length with blocks, found once for the batch.
	var runs [maxFast]runFinder
	for i := range min(t.nfast, maxFast) {
		if f := &t.fast[i]; f.blocks {
			runs[i] = finder(dense.runs(ns, f.bits))
		}
	}
	chunks := dense.chunks // see above
	for j := range n {
		for m := st.fast[j]; m != 0; m &= m - 1 {
			i := bits.TrailingZeros8(m)
			f := &t.fast[i]
			if f.blocks {
				id, x := blockID(st.hi[j], int(f.bits))
				var b *block[P]
				r := &runs[i]
				s, ok := id+r.base, id-r.first <= r.span // see runFinder
				if !r.one {
					s, ok = r.search(id)
				}
				if ok {
					b = chunks[s>>dirChunkBits][s&(dirChunkLen-1)]
				}
				if b != nil {
					d := &st.dprobes[nd]
					nd++
					d.w, d.x, d.j, d.i = &b.words[x>>wordBits&(blockWords-1)], uint16(x), uint8(j), uint8(i)
					continue
				}
			}
			st.hashProbe(t, ns, np, uint8(j), uint8(i))
			np++
		}
	}
	st.np, st.nd = np, nd
}

// touchIndex is round 1: it reads the directory entries of the hashed
// probes.
func (st *batchState[P]) touchIndex() {
	for k := range st.np {
		p := &st.probes[k]
		p.b = p.c[p.x]
	}
}

// touchWords is round 2: the block words, the buckets' control bytes.
func (st *batchState[P]) touchWords() {
	var touchW uint64
	var touch uint8
	for k := range st.dprobes[:st.nd] {
		touchW ^= st.dprobes[k].w.has
	}
	for k := range st.probes[:st.np] {
		touch ^= st.probes[k].b.ctrl[0]
	}
	st.sink ^= touchW ^ uint64(touch)
}

// readWords reads the words (the answer for sources, the cells'
// addresses for routes) and each bucket's control bytes, finding the
// slots whose tags match in the order a search visits them.
func (st *batchState[P]) readWords() {
	var zero P
	dprobes := st.dprobes[:st.nd]
	for k := range dprobes {
		d := &dprobes[k]
		switch {
		case st.want == wantMatch:
			if d.w.holds(int(d.x)) {
				st.found(d.j, d.i, zero)
			}
		default:
			d.c = d.w.cell(int(d.x))
		}
	}
	if st.want == wantMatch {
		st.nd = 0 // the words settled the dense probes
	}
	probes := st.probes[:st.np]
	for k := range probes {
		p := &probes[k]
		p.state = probeMiss
		tg, g0 := tag(p.h), home(p.h)
		for gi := range groups {
			g := (g0 + gi) & (groups - 1)
			w := ctrlWord(&p.b.ctrl, g)
			for m := matchTag(w, tg); m != 0; m &= m - 1 {
				s := uint8(8*g + bits.TrailingZeros64(m)>>3)
				switch p.state {
				case probeMiss:
					p.state, p.slot = probeSlot, s
				case probeSlot:
					p.state, p.slot2 = probeSlot2, s
				default:
					p.state = probeFull
				}
			}
			if matchTag(w, ctrlEmpty) != 0 {
				break // nothing went past a group with room
			}
			if gi == groups-1 && p.b.next != nil {
				p.state = probeFull // the bucket overflows
			}
		}
	}
}

// readSlots is round 3: the cells of the dense probes, the slots of the
// hashed ones.
func (st *batchState[P]) readSlots() {
	var zero P
	dprobes := st.dprobes[:st.nd]
	for k := range dprobes {
		if d := &dprobes[k]; d.c != nil {
			d.e, d.hop = d.c.e, d.c.hop
		} else {
			d.e = zero
		}
	}
	probes := st.probes[:st.np]
	for k := range probes {
		switch p := &probes[k]; p.state {
		case probeSlot:
			p.e = p.b.slots[p.slot]
		case probeSlot2:
			p.e, p.e2 = p.b.slots[p.slot], p.b.slots[p.slot2]
		}
	}
}

// touchEntries is round 4: the entries the hashed probes compare, and
// with wantEntries the dense probes' (the caller is going to read them).
func (st *batchState[P]) touchEntries() {
	var zero P
	var touchD, touchE uint64
	if st.want == wantEntries {
		for k := range st.dprobes[:st.nd] {
			if d := &st.dprobes[k]; d.e != zero {
				touchD ^= entryKey(&d.e).hi
			}
		}
	}
	for k := range st.probes[:st.np] {
		if p := &st.probes[k]; p.state == probeSlot || p.state == probeSlot2 {
			touchE ^= entryKey(&p.e).hi
		}
	}
	st.sink ^= touchD ^ touchE
}

// compare compares the hashed probes' keys, searching where the control
// bytes could not settle, and records the matches.
func (st *batchState[P]) compare() {
	var zero P
	ns := st.ns
	probes := st.probes[:st.np]
	for k := range probes {
		p := &probes[k]
		want := key{hi: p.hi, lo: p.lo, port: ns}
		switch p.state {
		case probeSlot:
			if *p.e.k() == want {
				p.state = probeFound
			}
		case probeSlot2:
			if *p.e.k() == want {
				p.state = probeFound
			} else if *p.e2.k() == want {
				p.e, p.state = p.e2, probeFound
			}
		case probeFull:
			if e, _, _ := p.b.find(p.h, &want); e != zero {
				p.e, p.state = e, probeFound
			}
		}
		if p.state == probeFound {
			st.found(p.j, p.i, p.e)
		}
	}
	dprobes := st.dprobes[:st.nd]
	for k := range dprobes {
		// found, written out: this loop runs for nearly every address of
		// a busy pool.
		if d := &dprobes[k]; d.e != zero {
			if b := st.best[d.j]; b < 0 || int8(d.i) < b {
				st.best[d.j], st.bestE[d.j] = int8(d.i), d.e
				st.bestHop[d.j], st.fromCell[d.j] = d.hop, true
			}
		}
	}
}

// hashProbe sets probe np up for address j in fast length i: the hash
// and the directory chunk.
func (st *batchState[P]) hashProbe(t *lpm[P], ns uint16, np int, j, i uint8) {
	f := &t.fast[i]
	p := &st.probes[np]
	p.hi, p.lo = st.hi[j]&f.mhi, st.lo[j]&f.mlo
	p.h = hash(p.hi, p.lo, ns, t.s0, t.s1)
	x := p.h >> f.shift
	p.c, p.x = f.top[x>>chunkBits], uint8(x&chunkMask)
	p.j, p.i = j, i
}

// found records e, of fast length i, as a match for address j: the best
// if its length is the longest yet (fast lengths are longest first).
func (st *batchState[P]) found(j, i uint8, e P) {
	if b := st.best[j]; b < 0 || int8(i) < b {
		st.best[j], st.bestE[j], st.fromCell[j] = int8(i), e, false
	}
}

// LookupBatch does LookupBytes for each dsts[i] and stores the route in
// routes[i], nil where none; a nil dsts[i] is looked up as no address. It
// overlaps the cache misses of the lookups, so that in a table larger
// than the caches a batch costs much less than its lookups one by one.
// It allocates nothing, and panics if routes is shorter than dsts. A
// caller making many batch lookups should keep a Batch and use its
// methods, which spare setting up the working state each time.
func (s *Snapshot) LookupBatch(dsts []*[16]byte, routes []*Route) {
	var st batchState[*routeEnt]
	s.lookupBatch(&st, dsts, routes, nil)
}

// SourceAllowedBatch does SourceAllowedBytes(port, srcs[i]) for each
// srcs[i] and stores the answer in ok[i]; a nil srcs[i] is not allowed. Like
// LookupBatch it overlaps the cache misses of the checks, allocates
// nothing, and panics if ok is shorter than srcs.
func (s *Snapshot) SourceAllowedBatch(port PortID, srcs []*[16]byte, ok []bool) {
	var st batchState[*srcEnt]
	s.sourceAllowedBatch(&st, port, srcs, ok)
}

// Batch is the working state of batch lookups (a few KiB), for a caller
// that makes many, such as a dataplane worker: its methods are
// Snapshot.LookupBatch and SourceAllowedBatch without setting the state up
// each time, and SourcesAndHops, which does both of those at once. The
// zero Batch is ready to use. A Batch is not safe for concurrent use;
// between calls it keeps pointers into the last snapshot it looked in (its
// tables, and up to a batch of their entries), which stays in memory until
// the next call.
type Batch struct {
	routes batchState[*routeEnt]
	srcs   batchState[*srcEnt]
}

// LookupBatch is s.LookupBatch(dsts, routes).
func (b *Batch) LookupBatch(s *Snapshot, dsts []*[16]byte, routes []*Route) {
	s.lookupBatch(&b.routes, dsts, routes, nil)
}

// LookupHops is LookupBatch that also stores the hop of routes[i] in
// hops[i] (the zero Hop where there is no route), for a caller that
// forwards along the routes and reads no more of them than their hops in
// the common case: where a route lies in a dense block the hop comes from
// the block, and the route itself is not read (nor touched, as
// LookupBatch does for the caller's benefit). It panics if routes or hops
// is shorter than dsts.
func (b *Batch) LookupHops(s *Snapshot, dsts []*[16]byte, routes []*Route, hops []Hop) {
	s.lookupBatch(&b.routes, dsts, routes, hops[:len(dsts)])
}

// SourceAllowedBatch is s.SourceAllowedBatch(port, srcs, ok).
func (b *Batch) SourceAllowedBatch(s *Snapshot, port PortID, srcs []*[16]byte, ok []bool) {
	s.sourceAllowedBatch(&b.srcs, port, srcs, ok)
}

// SourcesAndHops is SourceAllowedBatch(s, port, srcs, ok) and
// LookupHops(s, dsts, routes, hops) in one: the memory rounds of the
// two run together, so that a batch of frames checked at their sources
// and routed by their destinations waits for the memory as long as a
// batch of one lookup. srcs and dsts must have the same length (nil
// elements where a frame needs no check or lookup); it panics if ok,
// routes or hops is shorter.
func (b *Batch) SourcesAndHops(s *Snapshot, port PortID, srcs []*[16]byte, ok []bool, dsts []*[16]byte, routes []*Route, hops []Hop) {
	if len(srcs) != len(dsts) {
		panic("fib: SourcesAndHops: srcs and dsts differ in length")
	}
	if s == nil {
		clear(ok[:len(srcs)])
		clear(routes[:len(dsts)])
		clear(hops[:len(dsts)])
		return
	}
	for len(dsts) > 0 {
		n := min(len(dsts), batchStride)
		b.srcs.load(&s.src, srcs[:n])
		b.routes.load(&s.routes, dsts[:n])
		b.srcs.begin(&s.src, uint16(port), n, wantMatch)
		b.routes.begin(&s.routes, 0, n, wantHops)
		probeRounds(&b.srcs, &b.routes)
		s.sourcesFound(&b.srcs, port, ok[:n])
		s.routesFound(&b.routes, routes[:n], hops[:n])
		srcs, ok = srcs[n:], ok[n:]
		dsts, routes, hops = dsts[n:], routes[n:], hops[n:]
	}
}

// lookupBatch is LookupBatch, and LookupHops if hops is not nil.
func (s *Snapshot) lookupBatch(st *batchState[*routeEnt], dsts []*[16]byte, routes []*Route, hops []Hop) {
	routes = routes[:len(dsts)]
	if s == nil {
		clear(routes)
		clear(hops)
		return
	}
	t := &s.routes
	want := uint8(wantEntries)
	if hops != nil {
		want = wantHops
	}
	for len(dsts) > 0 {
		n := min(len(dsts), batchStride)
		st.load(t, dsts[:n])
		st.probeAll(t, 0, n, want)
		var h []Hop
		if hops != nil {
			h = hops[:n]
		}
		s.routesFound(st, routes[:n], h)
		dsts, routes = dsts[n:], routes[n:]
		if hops != nil {
			hops = hops[n:]
		}
	}
}

// routesFound finishes the route lookups of a batch probed in st: it
// stores the route of each of its addresses in routes and, if hops is
// not nil, its hop in hops.
func (s *Snapshot) routesFound(st *batchState[*routeEnt], routes []*Route, hops []Hop) {
	t := &s.routes
	slowMax := t.slowMax // not reloaded after each store
	for j := range routes {
		var best *Route
		b := st.best[j]
		if b >= 0 {
			best = routeOf(st.bestE[j])
		}
		if st.slow[j] && (b < 0 || int(t.fast[b].bits) < slowMax) {
			// bart may hold a longer match.
			if r, _ := s.lookupSlow(st.hi[j], st.lo[j], best); r != best {
				b, best = -1, r
			}
		}
		routes[j] = best
		if hops == nil {
			continue
		}
		// Field by field: the caller reads the hop so, and a Hop
		// copied whole from one built in parts defeats store-to-load
		// forwarding (5-9 ns a frame in ForwardBatch).
		h := &hops[j]
		switch {
		case b >= 0 && st.fromCell[j]:
			st.bestHop[j].unpackTo(h)
		case best != nil:
			best.hopTo(h)
		default:
			*h = Hop{}
		}
	}
}

func (s *Snapshot) sourceAllowedBatch(st *batchState[*srcEnt], port PortID, srcs []*[16]byte, ok []bool) {
	ok = ok[:len(srcs)]
	if s == nil {
		clear(ok)
		return
	}
	t := &s.src
	for len(srcs) > 0 {
		n := min(len(srcs), batchStride)
		st.load(t, srcs[:n])
		st.probeAll(t, uint16(port), n, wantMatch)
		s.sourcesFound(st, port, ok[:n])
		srcs, ok = srcs[n:], ok[n:]
	}
}

// sourcesFound finishes the source checks of a batch probed in st,
// storing the answers in ok.
func (s *Snapshot) sourcesFound(st *batchState[*srcEnt], port PortID, ok []bool) {
	t, ns := &s.src, uint16(port)
	for j := range ok {
		switch {
		case st.best[j] >= 0:
			ok[j] = true
		case st.slow[j] && int(ns) < len(t.slow) && t.slow[ns] != nil:
			ok[j] = t.slow[ns].Contains(join128(st.hi[j], st.lo[j]))
		default:
			ok[j] = false
		}
	}
}

// routeOf is &e.Route for a non-nil e, computed without the nil check
// that reads *e: LookupHops gives a route it has not read.
func routeOf(e *routeEnt) *Route {
	return (*Route)(unsafe.Add(unsafe.Pointer(e), unsafe.Offsetof(e.Route)))
}

// entryKey is the key of the entry *e, read without the call through the
// generic dictionary that (*e).k() makes: the entry types embed key as
// their first field (TestEntryLayout), so a pointer to an entry is a
// pointer to its key.
func entryKey[P entry](e *P) *key {
	return (*key)(*(*unsafe.Pointer)(unsafe.Pointer(e)))
}
