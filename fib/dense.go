package fib

import (
	"cmp"
	"math/bits"
	"net/netip"
	"slices"
	"unsafe"
)

// Dense blocks. A delegation pool hands out prefixes of one length from a
// contiguous range, and a busy pool holds a good share of the prefixes it
// can. Where a length's prefixes are that dense, a block indexed by the
// prefix's number finds an entry with one memory access instead of a hash
// probe's three or four (directory, bucket, slot, entry), and a source
// check, which needs no more than presence, reads only a bitmap.
//
// A block covers the 4096 prefixes of one length (13 to 64) under one
// prefix 12 bits shorter, in one namespace: for /56s, the /44 they lie
// in. A block exists while at least a threshold of its prefixes are in
// the table and until fewer than a lower one are; it holds an entry for exactly
// the prefixes in the table, beside the exact tables and bart, which stay
// the record.
//
// A block is 64 words of 64 slots. A word is a bitmap of its taken slots
// and, for routes, a pointer to their cells, packed: the cell of slot s
// is the rank of s among the taken slots (a popcount). A cell is the
// entry and its Hop, so that forwarding along a route found in a block
// misses the cache once, for the cell, and not again for the entry. The
// words of a block take 1 KiB, read a line at a time and, at the
// thresholds, few enough to stay in the CPU caches; the cells cost 16
// bytes per entry however sparse the pool, which lets a block pay from a
// density of 1 in 128. A word's cells are copied on its first change per
// generation; a snapshot finds the blocks through a directory of their
// ids (denseIndex), rebuilt when a block is created or dropped and
// patched when one is copied.

const (
	blockBits  = 12
	blockSlots = 1 << blockBits
	wordBits   = 6
	wordSlots  = 1 << wordBits
	blockWords = blockSlots / wordSlots
)

// The block thresholds, in entries: a route block from a density of 1 in
// 128, where its cells save the cache miss of a route entry; a source
// block from 1 in 8, where its words, which are all a source check reads,
// are few enough to stay in cache: sparser (1M sources spread over 64
// ports), a check for a source not allowed cost 68 ns with blocks against
// 43 hashing. Variables for tests.
var (
	denseOn, denseOff       = int32(blockSlots / 128), int32(blockSlots / 256)
	srcDenseOn, srcDenseOff = int32(blockSlots / 8), int32(blockSlots / 16)
)

// thresholds returns the block thresholds of the kind of entries P.
func thresholds[P entry]() (on, off int32) {
	if (*new(P)).cells() {
		return denseOn, denseOff
	}
	return srcDenseOn, srcDenseOff
}

// blockKey names a block: the namespace, the prefix length and the top
// bits-blockBits bits of its prefixes.
type blockKey struct {
	id   uint64
	ns   uint16
	bits uint8
}

// denseLen reports whether prefixes of a length may be in blocks.
func denseLen(bits int) bool { return bits > blockBits && bits <= 64 }

// blockOf returns the block of the prefix of length bits whose top word is
// hi, and the prefix's slot in it. bits must pass denseLen, so that both
// shifts are below 64: the masks tell the compiler so, sparing the code
// for longer shifts in the batch lookups' setup.
func blockOf(hi uint64, bits int, ns uint16) (blockKey, int) {
	id, i := blockID(hi, bits)
	return blockKey{id: id, ns: ns, bits: uint8(bits)}, i
}

// blockID is blockOf's id and slot alone, for a lookup.
func blockID(hi uint64, bits int) (id uint64, slot int) {
	return hi >> ((64 - bits + blockBits) & 63), int(hi>>((64-bits)&63)) & (blockSlots - 1)
}

// cell is a taken slot of a route block: the entry, and its hop.
type cell[P entry] struct {
	e   P
	hop packedHop
}

// word is what a lookup reads of 64 slots of a block.
type word[P entry] struct {
	has   uint64   // bit s%64: slot s is taken
	cells *cell[P] // the cells of the taken slots in order (kinds with cells), nil if none
}

// block is one dense block.
type block[P entry] struct {
	words [blockWords]word[P]
	cw    *blockCells[P] // the writer's side of the cells (kinds with cells)
	gen   uint64
	key   blockKey
}

// blockCells is the writer's side of a block's cells: those of each word
// as a slice (what word.cells points at), and the generation that may
// change them in place. The copies of a block share it: only the newest,
// the writer's, reads it.
type blockCells[P entry] struct {
	cells [blockWords][]cell[P]
	gen   [blockWords]uint64
}

// holds reports whether slot i holds an entry.
func (b *block[P]) holds(i int) bool { return b.words[i>>wordBits].holds(i) }

// holds reports whether slot i of the word (i mod 64) holds an entry.
func (w *word[P]) holds(i int) bool { return w.has>>(i&(wordSlots-1))&1 != 0 }

// get returns the entry in slot i, or the zero P; only for kinds with
// cells.
func (b *block[P]) get(i int) P {
	if c := b.cell(i); c != nil {
		return c.e
	}
	var zero P
	return zero
}

// cell returns the cell of slot i, or nil if the slot is free; only for
// kinds with cells.
func (b *block[P]) cell(i int) *cell[P] { return b.words[i>>wordBits].cell(i) }

// cell returns the cell of slot i of the word (i mod 64), or nil if the
// slot is free: the cell at the slot's rank among the taken ones.
func (w *word[P]) cell(i int) *cell[P] {
	bit := uint64(1) << (i & (wordSlots - 1))
	if w.has&bit == 0 {
		return nil
	}
	rank := bits.OnesCount64(w.has & (bit - 1))
	return (*cell[P])(unsafe.Add(unsafe.Pointer(w.cells), uintptr(rank)*unsafe.Sizeof(cell[P]{})))
}

// set stores e (the zero P: none) in slot i; b must be owned by gen.
func (b *block[P]) set(i int, e P, gen uint64) {
	var zero P
	wi, bit := i>>wordBits, uint64(1)<<(i&(wordSlots-1))
	w := &b.words[wi]
	had := w.has&bit != 0
	if e == zero {
		if !had {
			return
		}
		w.has &^= bit
	} else {
		w.has |= bit
	}
	if !zero.cells() {
		return
	}
	if b.cw == nil {
		b.cw = new(blockCells[P])
	}
	rank := bits.OnesCount64(w.has & (bit - 1))
	cs := b.cw.cells[wi]
	owned := b.cw.gen[wi] == gen
	switch {
	case had && e != zero: // replace
		if !owned {
			cs = slices.Clone(cs)
		}
		cs[rank] = cell[P]{e, e.hop()}
	case e != zero: // insert at rank
		if !owned || len(cs) == cap(cs) {
			// A word filling in one generation (a restore) grows its
			// cells by half; otherwise they take just their room.
			n := len(cs) + 1
			if owned {
				n = min(wordSlots, n+n/2)
			}
			cs = append(make([]cell[P], 0, n), cs...)
		}
		cs = slices.Insert(cs, rank, cell[P]{e, e.hop()})
	default: // remove
		if !owned {
			cs = slices.Clone(cs)
		}
		cs = slices.Delete(cs, rank, rank+1)
	}
	b.cw.cells[wi], b.cw.gen[wi] = cs, gen
	w.cells = nil
	if len(cs) > 0 {
		w.cells = &cs[0]
	}
}

// fill stores the entries of an empty block, owned by gen, at once: each
// word's cells in one allocation of their size, where set would grow
// them an insert at a time (a restore fills most of a million slots).
func (b *block[P]) fill(fs []filler[P], gen uint64) {
	for _, f := range fs {
		b.words[f.i>>wordBits].has |= 1 << (f.i & (wordSlots - 1))
	}
	var zero P
	if !zero.cells() {
		return
	}
	if b.cw == nil {
		b.cw = new(blockCells[P])
	}
	for wi := range b.words {
		if n := bits.OnesCount64(b.words[wi].has); n > 0 {
			cs := make([]cell[P], n)
			b.cw.cells[wi], b.cw.gen[wi] = cs, gen
			b.words[wi].cells = &cs[0]
		}
	}
	for _, f := range fs {
		wi, bit := f.i>>wordBits, uint64(1)<<(f.i&(wordSlots-1))
		b.cw.cells[wi][bits.OnesCount64(b.words[wi].has&(bit-1))] = cell[P]{f.e, f.e.hop()}
	}
}

// denseIndex finds the blocks of a snapshot. A pool's blocks have
// consecutive ids, so the index is a directory and not a hash: the
// blocks of each (namespace, length) are cut into runs of ids with gaps
// of at most dirGap, and a run is a table of block pointers by id, nil
// where a block is missing. A search finds the set of its namespace and
// length (once per batch), the run by a search over the set's few runs
// (one compare for a single pool), and the block with one load from a
// table that stays in cache (2 KiB for a /36 of /56s). A hash index
// cost 3-4 ns more a lookup: the hash, a round of touches, a probe
// loop. The tables of all runs lie in one slot space, in chunks of 64,
// so that a publish that copies a few blocks copies a few chunks.
type denseIndex[P entry] struct {
	sets   []dirSet       // by namespace, then length
	chunks []*dirChunk[P] // the slots of all runs
}

// dirSet is the runs of one namespace and length, sorted by id.
type dirSet struct {
	key  uint32 // setKey(namespace, length)
	runs []dirRun
}

// dirRun is blocks first to last (ids); block id has slot id+base
// (modulo 2^64).
type dirRun struct {
	first, last, base uint64
}

const (
	dirChunkBits = 6
	dirChunkLen  = 1 << dirChunkBits
	// dirGap is the longest gap of ids inside a run: a run's table
	// spends at most this many nil slots (512 B) to spare a new run.
	dirGap = 64
)

type dirChunk[P entry] [dirChunkLen]*block[P]

// at returns the block in slot i, or nil.
func (d *denseIndex[P]) at(i uint64) *block[P] {
	return d.chunks[i>>dirChunkBits][i&(dirChunkLen-1)]
}

// slots is how many slots the runs take.
func (d *denseIndex[P]) slots() uint64 { return uint64(len(d.chunks)) * dirChunkLen }

// runs returns the runs of namespace ns and length bits, nil if it has
// no blocks.
func (d *denseIndex[P]) runs(ns uint16, bits uint8) []dirRun {
	sets := d.sets
	if len(sets) == 0 {
		return nil
	}
	want := setKey(ns, bits)
	base := lastAtMost(sets, uint64(want))
	if s := &sets[base]; s.key == want {
		return s.runs
	}
	return nil
}

// setKey orders the sets: by namespace, then length.
func setKey(ns uint16, bits uint8) uint32 { return uint32(ns)<<8 | uint32(bits) }

func (s dirSet) sortKey() uint64 { return uint64(s.key) }
func (r dirRun) sortKey() uint64 { return r.first }

// slotOf returns the slot of block id among runs, and false if no run
// covers id.
func slotOf(runs []dirRun, id uint64) (uint64, bool) {
	if len(runs) == 0 {
		return 0, false
	}
	base := lastAtMost(runs, id)
	r := &runs[base]
	return id + r.base, r.first <= id && id <= r.last
}

// block returns the block of id among runs (those of its namespace and
// length), or nil.
func (d *denseIndex[P]) block(runs []dirRun, id uint64) *block[P] {
	if i, ok := slotOf(runs, id); ok {
		return d.at(i)
	}
	return nil
}

// runFinder is slotOf for the runs of one namespace and length, held
// for a batch: the common case of a single run (one pool) takes one
// compare, written out in the loops (a method doing it does not inline),
//
//	i, ok := id+f.base, id-f.first <= f.span
//	if !f.one {
//		i, ok = f.search(id)
//	}
type runFinder struct {
	runs              []dirRun
	first, span, base uint64 // of runs[0], if it is the only one
	one               bool
}

func finder(runs []dirRun) runFinder {
	f := runFinder{runs: runs, one: len(runs) == 1}
	if f.one {
		f.first, f.span, f.base = runs[0].first, runs[0].last-runs[0].first, runs[0].base
	}
	return f
}

// search is slotOf, kept out of line.
//
//go:noinline
func (f *runFinder) search(id uint64) (uint64, bool) { return slotOf(f.runs, id) }

// find returns the block for k, or nil.
func (d *denseIndex[P]) find(k blockKey) *block[P] { return d.block(d.runs(k.ns, k.bits), k.id) }

// newDenseIndex indexes the blocks of w.
func newDenseIndex[P entry](w *denseWriter[P]) denseIndex[P] {
	var d denseIndex[P]
	if len(w.dense) == 0 {
		return d
	}
	keys := make([]blockKey, 0, len(w.dense))
	for k := range w.dense {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b blockKey) int {
		return cmp.Or(cmp.Compare(a.ns, b.ns), cmp.Compare(a.bits, b.bits), cmp.Compare(a.id, b.id))
	})
	// The sets and runs; each key's slot follows the last key's, by the
	// gap between their ids within a run, by one across runs.
	slot := make([]uint64, len(keys))
	for i, k := range keys {
		if i == 0 || k.ns != keys[i-1].ns || k.bits != keys[i-1].bits {
			d.sets = append(d.sets, dirSet{key: setKey(k.ns, k.bits)})
		}
		s := &d.sets[len(d.sets)-1]
		switch n := len(s.runs); {
		case n > 0 && k.id-s.runs[n-1].last <= dirGap:
			r := &s.runs[n-1]
			slot[i] = slot[i-1] + (k.id - r.last)
			r.last = k.id
		default:
			if i > 0 {
				slot[i] = slot[i-1] + 1
			}
			s.runs = append(s.runs, dirRun{first: k.id, last: k.id, base: slot[i] - k.id})
		}
	}
	d.chunks = make([]*dirChunk[P], slot[len(keys)-1]/dirChunkLen+1)
	for i := range d.chunks {
		d.chunks[i] = new(dirChunk[P])
	}
	for i, k := range keys {
		d.chunks[slot[i]>>dirChunkBits][slot[i]&(dirChunkLen-1)] = w.dense[k].b
	}
	return d
}

// denseWriter is the writer's side of the blocks of an lpm.
type denseWriter[P entry] struct {
	infos   map[blockKey]*blockInfo[P] // by block, for lengths that pass denseLen
	dense   map[blockKey]*blockInfo[P] // those with a block
	blocks  [65]int32                  // blocks by prefix length
	crossed []*blockInfo[P]            // counts that crossed a threshold since the last freeze
	copied  []*blockInfo[P]            // blocks copied since the last freeze
	rebuild bool                       // a block was made or dropped since the last freeze
}

// blockInfo is what the writer knows of one block's prefixes: how many
// are in the table, and the block if it has one.
type blockInfo[P entry] struct {
	key     blockKey
	n       int32
	b       *block[P]
	crossed bool        // listed in crossed
	fresh   bool        // made in this freeze: still to fill
	fill    []filler[P] // a fresh block's entries, gathered to fill it
}

type filler[P entry] struct {
	i int
	e P
}

// add gathers the entry e of slot i for a fresh block.
func (in *blockInfo[P]) add(i int, e P) {
	if in.fill == nil {
		in.fill = make([]filler[P], 0, in.n)
	}
	in.fill = append(in.fill, filler[P]{i, e})
}

func newDenseWriter[P entry]() denseWriter[P] {
	return denseWriter[P]{infos: map[blockKey]*blockInfo[P]{}, dense: map[blockKey]*blockInfo[P]{}}
}

// update records that the entry of p in namespace ns is now e (the zero
// P: removed); added is +1 for a new prefix, -1 for a removed one, 0 for a
// replaced entry.
func (d *denseWriter[P]) update(p netip.Prefix, ns uint16, e P, added int32, gen uint64) {
	if !denseLen(p.Bits()) {
		return
	}
	hi, _ := split128(p.Addr())
	k, i := blockOf(hi, p.Bits(), ns)
	in := d.infos[k]
	if in == nil {
		in = &blockInfo[P]{key: k}
		d.infos[k] = in
	}
	if added != 0 {
		in.n += added
		if on, off := thresholds[P](); (in.n == on || in.n == off-1) && !in.crossed {
			in.crossed = true
			d.crossed = append(d.crossed, in)
		}
	}
	if b := in.b; b != nil {
		if b.gen != gen {
			cp := *b
			cp.gen = gen
			b = &cp
			in.b = b
			d.copied = append(d.copied, in)
		}
		b.set(i, e, gen)
	}
	if in.n == 0 && in.b == nil && !in.crossed {
		delete(d.infos, k)
	}
}

// freezeDense makes and drops blocks as their counts crossed the
// thresholds (unless not build: then it leaves them for the next), and
// returns the index for the snapshot.
func (w *lpmWriter[P]) freezeDense(gen uint64, build bool) denseIndex[P] {
	d := &w.dense
	var zero P
	var fresh map[uint8][]*blockInfo[P] // new blocks by length
	crossed := d.crossed
	if !build {
		crossed = nil
	}
	on, off := thresholds[P]()
	for _, in := range crossed {
		in.crossed = false
		switch {
		case in.n >= on && in.b == nil:
			in.b, in.fresh = &block[P]{gen: gen, key: in.key}, true
			if fresh == nil {
				fresh = map[uint8][]*blockInfo[P]{}
			}
			fresh[in.key.bits] = append(fresh[in.key.bits], in)
			d.dense[in.key] = in
			d.blocks[in.key.bits]++
			d.rebuild = true
		case in.n < off && in.b != nil:
			in.b = nil
			delete(d.dense, in.key)
			d.blocks[in.key.bits]--
			d.rebuild = true
		}
		if in.n == 0 && in.b == nil {
			delete(d.infos, in.key)
		}
	}
	if build {
		d.crossed = d.crossed[:0]
	}
	// Fill the new blocks: by walking the length's exact table when they
	// are many (a restore), else by asking for each of their prefixes.
	for bits, ins := range fresh {
		if i := w.fastIndex(int(bits)); i >= 0 && len(ins)*blockSlots > w.cur.fast[i].t.n/4 {
			w.cur.fast[i].t.all(func(e P) bool {
				k, j := blockOf(e.k().hi, int(bits), e.k().port)
				if in := d.infos[k]; in != nil && in.fresh {
					in.add(j, e)
				}
				return true
			})
		} else {
			for _, in := range ins {
				k := in.key
				for j := range blockSlots {
					hi := k.id<<(64-int(k.bits)+blockBits) | uint64(j)<<(64-int(k.bits))
					if e := w.get(netip.PrefixFrom(join128(hi, 0), int(k.bits)), k.ns); e != zero {
						in.add(j, e)
					}
				}
			}
		}
		for _, in := range ins {
			in.b.fill(in.fill, gen)
			in.fill, in.fresh = nil, false
		}
	}
	// The index: rebuilt if blocks came or went, else the last one with
	// the slots of copied blocks, in copied chunks, pointing at their
	// copies.
	idx := w.cur.dense
	switch {
	case d.rebuild:
		idx = newDenseIndex(d)
	case len(d.copied) > 0:
		idx.chunks = slices.Clone(idx.chunks)
		var own []uint64 // the chunks copied
		for _, in := range d.copied {
			if in.b == nil {
				continue
			}
			i, ok := slotOf(idx.runs(in.key.ns, in.key.bits), in.key.id)
			if !ok {
				panic("fib: a copied block is not in the index")
			}
			if c := i >> dirChunkBits; !slices.Contains(own, c) {
				cp := *idx.chunks[c]
				idx.chunks[c] = &cp
				own = append(own, c)
			}
			idx.chunks[i>>dirChunkBits][i&(dirChunkLen-1)] = in.b
		}
	}
	d.rebuild = false
	clear(d.copied)
	d.copied = d.copied[:0]
	return idx
}
