package fib

import (
	"math/bits"
	"net/netip"
)

// Dense blocks. A delegation pool hands out prefixes of one length from a
// contiguous range, and a busy pool holds a good share of the prefixes it
// can. Where a length's prefixes are that dense, an array indexed by the
// prefix's number finds an entry with one memory access instead of a hash
// probe's three or four (directory, bucket, slot, entry), and a source
// check, which needs no more than presence, ends there.
//
// A block is the array of the 4096 prefixes of one length (13 to 64) under
// one prefix 12 bits shorter, in one namespace: for /56s, the /44 they lie
// in. A block exists while at least denseOn of its prefixes are in the
// table and until fewer than denseOff are; it holds an entry for exactly
// the prefixes in the table, beside the exact tables and bart, which stay
// the record. A bitmap in the block says which slots are taken: all a
// source check reads, and for a busy pool small enough to stay in the CPU
// caches (512 bytes for 4096 prefixes). A route block also keeps a cell
// per slot: the entry and its Hop, so that forwarding along a route found
// there misses the cache once, for the cell, and not again for the entry.
// The cells lie in chunks of 64, created when the first entry comes and
// copied on first write per generation; a snapshot finds the blocks
// through an open-addressing index rebuilt when a block is created,
// dropped or copied. At the threshold a route block costs at most 128
// bytes of cells per entry.

const (
	blockBits      = 12
	blockSlots     = 1 << blockBits
	denseChunkBits = 6
	denseChunkLen  = 1 << denseChunkBits
	blockChunks    = blockSlots / denseChunkLen
)

// The block thresholds, in entries; variables for tests.
var (
	denseOn  = int32(blockSlots / 8)
	denseOff = int32(blockSlots / 16)
)

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
// hi, and the prefix's slot in it. bits must pass denseLen.
func blockOf(hi uint64, bits int, ns uint16) (blockKey, int) {
	return blockKey{id: hi >> (64 - bits + blockBits), ns: ns, bits: uint8(bits)},
		int(hi>>(64-bits)) & (blockSlots - 1)
}

// cell is a slot of a route block: the entry, and its hop.
type cell[P entry] struct {
	e   P
	hop Hop
}

type denseChunk[P entry] [denseChunkLen]cell[P]

// block is one dense block.
type block[P entry] struct {
	has      [blockChunks]uint64         // bit i%64 of has[i/64]: slot i holds an entry
	chunks   [blockChunks]*denseChunk[P] // the cells of slots 64i to 64i+63 (kinds with cells)
	chunkGen [blockChunks]uint64
	gen      uint64
	key      blockKey
}

// holds reports whether slot i holds an entry.
func (b *block[P]) holds(i int) bool {
	return b.has[i>>denseChunkBits]>>(i&(denseChunkLen-1))&1 != 0
}

// get returns the entry in slot i, or the zero P; only for kinds with
// cells.
func (b *block[P]) get(i int) P {
	if c := b.cell(i); c != nil {
		return c.e
	}
	var zero P
	return zero
}

// cell returns a pointer to the cell of slot i, or nil if its chunk does
// not exist.
func (b *block[P]) cell(i int) *cell[P] {
	if c := b.chunks[i>>denseChunkBits]; c != nil {
		return &c[i&(denseChunkLen-1)]
	}
	return nil
}

// set stores e (the zero P: none) in slot i; b must be owned by gen.
func (b *block[P]) set(i int, e P, gen uint64) {
	var zero P
	ci, bit := i>>denseChunkBits, uint64(1)<<(i&(denseChunkLen-1))
	if e == zero {
		b.has[ci] &^= bit
	} else {
		b.has[ci] |= bit
	}
	c := b.chunks[ci]
	switch {
	case !zero.cells() || c == nil && e == zero:
		return
	case c == nil:
		c = new(denseChunk[P])
		b.chunks[ci], b.chunkGen[ci] = c, gen
	case b.chunkGen[ci] != gen:
		cp := *c
		c = &cp
		b.chunks[ci], b.chunkGen[ci] = c, gen
	}
	x := cell[P]{e: e}
	if e != zero {
		x.hop = e.hop()
	}
	c[i&(denseChunkLen-1)] = x
}

// denseIndex finds the blocks of a snapshot: open addressing over a
// power-of-two table at most half full. The keys sit in the table, so a
// search reads nothing else (a block's own key lies a kilobyte in).
type denseIndex[P entry] struct {
	slots []denseSlot[P]
	seed  uint64
}

type denseSlot[P entry] struct {
	key blockKey
	b   *block[P] // nil: empty
}

func (d *denseIndex[P]) hash(k blockKey) uint64 {
	a, b := bits.Mul64(k.id^d.seed, uint64(k.ns)<<8|uint64(k.bits)|0x9e3779b97f4a7c15)
	return a ^ b
}

// find returns the block for k, or nil.
func (d *denseIndex[P]) find(k blockKey) *block[P] {
	if len(d.slots) == 0 {
		return nil
	}
	mask := uint64(len(d.slots) - 1)
	for i := d.hash(k) & mask; ; i = (i + 1) & mask {
		if s := &d.slots[i]; s.b == nil || s.key == k {
			return s.b
		}
	}
}

// newDenseIndex indexes the blocks of w.
func newDenseIndex[P entry](w *denseWriter[P], seed uint64) denseIndex[P] {
	d := denseIndex[P]{seed: seed}
	if len(w.dense) == 0 {
		return d
	}
	d.slots = make([]denseSlot[P], 1<<bits.Len(uint(2*len(w.dense)-1)))
	mask := uint64(len(d.slots) - 1)
	for k, in := range w.dense {
		i := d.hash(k) & mask
		for d.slots[i].b != nil {
			i = (i + 1) & mask
		}
		d.slots[i] = denseSlot[P]{k, in.b}
	}
	return d
}

// denseWriter is the writer's side of the blocks of an lpm.
type denseWriter[P entry] struct {
	infos   map[blockKey]*blockInfo[P] // by block, for lengths that pass denseLen
	dense   map[blockKey]*blockInfo[P] // those with a block
	crossed []*blockInfo[P]            // counts that crossed a threshold since the last freeze
	changed bool                       // a block was made, dropped or copied since the last freeze
}

// blockInfo is what the writer knows of one block's prefixes: how many
// are in the table, and the block if it has one.
type blockInfo[P entry] struct {
	key     blockKey
	n       int32
	b       *block[P]
	crossed bool // listed in crossed
	fresh   bool // made in this freeze: still to fill
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
		if (in.n == denseOn || in.n == denseOff-1) && !in.crossed {
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
			d.changed = true
		}
		b.set(i, e, gen)
	}
	if in.n == 0 && in.b == nil && !in.crossed {
		delete(d.infos, k)
	}
}

// freezeDense makes and drops blocks as their counts crossed the
// thresholds (unless not build: then it leaves them for the next), and
// returns the index for the snapshot: the last one if nothing changed.
func (w *lpmWriter[P]) freezeDense(gen uint64, build bool) denseIndex[P] {
	d := &w.dense
	var zero P
	var fresh map[uint8][]*blockInfo[P] // new blocks by length
	crossed := d.crossed
	if !build {
		crossed = nil
	}
	for _, in := range crossed {
		in.crossed = false
		switch {
		case in.n >= denseOn && in.b == nil:
			in.b, in.fresh = &block[P]{gen: gen, key: in.key}, true
			if fresh == nil {
				fresh = map[uint8][]*blockInfo[P]{}
			}
			fresh[in.key.bits] = append(fresh[in.key.bits], in)
			d.dense[in.key] = in
			d.changed = true
		case in.n < denseOff && in.b != nil:
			in.b = nil
			delete(d.dense, in.key)
			d.changed = true
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
					in.b.set(j, e, gen)
				}
				return true
			})
		} else {
			for _, in := range ins {
				k := in.key
				for j := range blockSlots {
					hi := k.id<<(64-int(k.bits)+blockBits) | uint64(j)<<(64-int(k.bits))
					if e := w.get(netip.PrefixFrom(join128(hi, 0), int(k.bits)), k.ns); e != zero {
						in.b.set(j, e, gen)
					}
				}
			}
		}
		for _, in := range ins {
			in.fresh = false
		}
	}
	if !d.changed {
		return w.cur.dense
	}
	d.changed = false
	return newDenseIndex(d, w.cur.s0^w.cur.s1)
}
