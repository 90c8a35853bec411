package fib

import (
	"encoding/binary"
	"math/bits"
)

// This file holds the exact-match table used for the prefix lengths in
// heavy use: an extendible hash table. A directory, indexed by the top bits
// of a key's hash, points at buckets of bucketSlots entries; a full bucket
// splits in two by the next hash bit, and the directory doubles when a
// bucket needs more bits than it has. The directory is cut into chunks of
// chunkLen entries.
//
// Publishing is copy-on-write: the table header, each chunk and each bucket
// record the generation that may change them in place, and anything older
// (shared with a published snapshot) is copied before it is changed. A batch
// of k changes therefore copies at most k buckets and k chunks, however large
// the table is.
//
// A bucket keeps a control byte per slot, as Swiss tables do: ctrlEmpty,
// ctrlDeleted, or a tag of eight bits of the key's hash. Its 32 slots form
// four groups of eight; a key goes into the first group from its home group
// on with a free slot, and a lookup compares a group's tags in one word and
// stops at a group with an empty slot. Most lookups therefore read one
// control word and, only on a tag match, one entry: a lookup that misses (a
// packet to an undelegated address) reads the directory and one cache line
// of a bucket.

const (
	bucketSlots = 32
	chunkBits   = 8
	chunkLen    = 1 << chunkBits
	chunkMask   = chunkLen - 1
	maxDepth    = 40 // hard directory limit; see canSplit for the usual one
)

// key is what an exact table matches: a prefix address masked to the
// table's length (hi, lo) and a namespace (the port for source entries,
// zero for routes).
type key struct {
	hi, lo uint64
	port   uint16
}

// entry is implemented by the pointer types the tables hold. Entries are
// immutable once they are in a table: a new value is a new entry.
type entry interface {
	comparable
	k() *key
	// cells reports whether dense blocks of the kind keep cells (entries
	// and hops) or only say which slots are taken. It reads nothing of
	// the entry: a nil one answers too.
	cells() bool
	// hop returns the entry's hop, packed (the zero one for kinds
	// without).
	hop() packedHop
}

// Control bytes other than tags.
const (
	ctrlEmpty   = 0 // never used since the bucket was made
	ctrlDeleted = 1 // emptied while its group was full: lookups go on past it
)

// bkt is a bucket.
type bkt[P entry] struct {
	ctrl  [bucketSlots]uint8 // ctrlEmpty, ctrlDeleted or tag(hash)
	next  *bkt[P]            // overflow, only where splitting cannot help
	gen   uint64             // generation that may change this bucket and its overflow in place
	n     uint8              // entries in this bucket (not its overflow)
	depth uint8              // local depth: the top hash bits all its keys share
	slots [bucketSlots]P
}

type chunk[P entry] [chunkLen]*bkt[P]

// exact maps keys to entries, for one prefix length.
type exact[P entry] struct {
	top    []*chunk[P] // the directory: entry i is top[i>>chunkBits][i&chunkMask]
	topGen []uint64    // generation owning each chunk
	shift  uint        // 64 - depth: h>>shift indexes the directory
	depth  uint8       // global depth: the directory has 1<<depth entries
	n      int
	gen    uint64
	s0, s1 uint64 // hash seeds
}

// hash mixes a key with the table seeds: one 64x64->128 bit multiply,
// folded. The seeds are random per Table, so traffic cannot aim at a
// bucket. The top bits index the directory, bits 8-9 choose the home group
// and bits 24-31 make the tag.
func hash(hi, lo uint64, port uint16, s0, s1 uint64) uint64 {
	a, b := bits.Mul64(hi^s0, lo^uint64(port)^s1)
	return a ^ b
}

// tag is the control byte of a key with hash h; never ctrlEmpty or
// ctrlDeleted.
func tag(h uint64) uint8 { return max(uint8(h>>24), 2) }

// home is the group a key with hash h goes into if it has room.
func home(h uint64) int { return int(h>>8) & (groups - 1) }

const groups = bucketSlots / 8

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// matchTag returns the high bit of each byte of w that equals t: the
// slots of one control word whose tag matches. It is exact (no false
// positives).
func matchTag(w uint64, t uint8) uint64 {
	x := w ^ (lsb * uint64(t))
	return ^(((x &^ msb) + ^uint64(msb)) | x) & msb
}

// ctrlWord returns control bytes 8w to 8w+7 of b as one word.
func ctrlWord(c *[bucketSlots]uint8, w int) uint64 {
	return binary.LittleEndian.Uint64(c[8*w : 8*w+8])
}

func (t *exact[P]) hash(k *key) uint64 { return hash(k.hi, k.lo, k.port, t.s0, t.s1) }

func newExact[P entry](gen, s0, s1 uint64) *exact[P] {
	return &exact[P]{
		top:    []*chunk[P]{{0: &bkt[P]{gen: gen}}},
		topGen: []uint64{gen},
		shift:  64,
		gen:    gen,
		s0:     s0,
		s1:     s1,
	}
}

// bucket returns the bucket at directory index i.
func (t *exact[P]) bucket(i uint64) *bkt[P] { return t.top[i>>chunkBits][i&chunkMask] }

// find returns the entry for k in the bucket b or its overflow, with the
// bucket and slot holding it.
func (b *bkt[P]) find(h uint64, k *key) (P, *bkt[P], int) {
	tg, g0 := tag(h), home(h)
	for ; b != nil; b = b.next {
		for i := range groups {
			g := (g0 + i) & (groups - 1)
			w := ctrlWord(&b.ctrl, g)
			for m := matchTag(w, tg); m != 0; m &= m - 1 {
				j := 8*g + bits.TrailingZeros64(m)>>3
				if *b.slots[j].k() == *k {
					return b.slots[j], b, j
				}
			}
			if matchTag(w, ctrlEmpty) != 0 {
				// Nothing went past a group with room; and a bucket
				// overflows only once all its slots are taken.
				var zero P
				return zero, nil, -1
			}
		}
	}
	var zero P
	return zero, nil, -1
}

// get returns the entry for k, or the zero P.
func (t *exact[P]) get(k *key) P {
	h := t.hash(k)
	e, _, _ := t.bucket(h>>t.shift).find(h, k)
	return e
}

// clone returns a copy of the table header and chunk list owned by gen;
// chunks and buckets stay shared until they are written.
func (t *exact[P]) clone(gen uint64) *exact[P] {
	c := *t
	c.top = append([]*chunk[P](nil), t.top...)
	c.topGen = append([]uint64(nil), t.topGen...)
	c.gen = gen
	return &c
}

// setBucket points directory entry i at b, copying its chunk first if a
// published generation shares it.
func (t *exact[P]) setBucket(i uint64, b *bkt[P]) {
	c := i >> chunkBits
	if t.topGen[c] != t.gen {
		cp := *t.top[c]
		t.top[c], t.topGen[c] = &cp, t.gen
	}
	t.top[c][i&chunkMask] = b
}

// span returns the first directory index and the number of entries that
// share the bucket b found at index i.
func (t *exact[P]) span(i uint64, b *bkt[P]) (uint64, uint64) {
	w := uint(t.depth - b.depth)
	return i >> w << w, 1 << w
}

// setSpan points all directory entries of the bucket at index i to b.
func (t *exact[P]) setSpan(i uint64, old, b *bkt[P]) {
	start, n := t.span(i, old)
	for j := start; j < start+n; j++ {
		t.setBucket(j, b)
	}
}

// own returns the bucket at directory index i, copied (with its overflow)
// first if a published generation shares it.
func (t *exact[P]) own(i uint64) *bkt[P] {
	b := t.bucket(i)
	if b.gen == t.gen {
		return b
	}
	nb := t.rebucket(b, b.depth)
	t.setSpan(i, b, nb)
	return nb
}

// rebucket returns an owned copy of b and its overflow with the given
// local depth, compacted.
func (t *exact[P]) rebucket(b *bkt[P], depth uint8) *bkt[P] {
	if b.next == nil {
		nb := *b
		nb.gen, nb.depth = t.gen, depth
		return &nb
	}
	nb := &bkt[P]{gen: t.gen, depth: depth}
	for ; b != nil; b = b.next {
		for j, c := range b.ctrl {
			if c > ctrlDeleted {
				nb.add(t.hash(b.slots[j].k()), b.slots[j], t.gen)
			}
		}
	}
	return nb
}

// add puts an entry with hash h into the first free slot from its home
// group of b or its overflow, which must be owned, growing the overflow if
// needed.
func (b *bkt[P]) add(h uint64, e P, gen uint64) {
	for int(b.n) == bucketSlots {
		if b.next == nil {
			b.next = &bkt[P]{gen: gen, depth: b.depth}
		}
		b = b.next
	}
	g0 := home(h)
	for i := range groups {
		g := (g0 + i) & (groups - 1)
		for j := 8 * g; j < 8*g+8; j++ {
			if b.ctrl[j] <= ctrlDeleted {
				b.ctrl[j], b.slots[j] = tag(h), e
				b.n++
				return
			}
		}
	}
}

// remove empties slot j of b, which must be owned.
func (b *bkt[P]) remove(j int) {
	g := j / 8
	b.ctrl[j] = ctrlDeleted
	if matchTag(ctrlWord(&b.ctrl, g), ctrlEmpty) != 0 {
		// The group has room, so no lookup goes on past it.
		b.ctrl[j] = ctrlEmpty
	}
	var zero P
	b.slots[j] = zero
	b.n--
}

// canSplit reports whether the bucket b may be split. Splitting a bucket
// that uses all directory bits doubles the directory, which is allowed only
// while the directory has no more entries than the table: should keys ever
// cluster in the hash, buckets overflow rather than the directory growing
// without bound.
func (t *exact[P]) canSplit(b *bkt[P]) bool {
	return b.depth < t.depth || (t.depth < maxDepth && 1<<t.depth <= t.n+chunkLen)
}

// double doubles the directory.
func (t *exact[P]) double() {
	n := uint64(2) << t.depth
	top := make([]*chunk[P], max(1, n>>chunkBits))
	gens := make([]uint64, len(top))
	for c := range top {
		top[c], gens[c] = new(chunk[P]), t.gen
	}
	for j := range n {
		top[j>>chunkBits][j&chunkMask] = t.bucket(j >> 1)
	}
	t.top, t.topGen = top, gens
	t.depth++
	t.shift--
}

// split divides the bucket at directory index i in two by the next hash
// bit, doubling the directory first if the bucket uses all its bits.
func (t *exact[P]) split(i uint64) {
	if t.bucket(i).depth == t.depth {
		t.double()
		i *= 2
	}
	old := t.bucket(i)
	start, n := t.span(i, old)
	bit := uint64(1) << (63 - uint(old.depth))
	l := &bkt[P]{gen: t.gen, depth: old.depth + 1}
	r := &bkt[P]{gen: t.gen, depth: old.depth + 1}
	for b := old; b != nil; b = b.next {
		for j, c := range b.ctrl {
			if c > ctrlDeleted {
				if h := t.hash(b.slots[j].k()); h&bit == 0 {
					l.add(h, b.slots[j], t.gen)
				} else {
					r.add(h, b.slots[j], t.gen)
				}
			}
		}
	}
	for j := start; j < start+n/2; j++ {
		t.setBucket(j, l)
	}
	for j := start + n/2; j < start+n; j++ {
		t.setBucket(j, r)
	}
}

// put stores e, replacing the entry with the same key, which it returns.
// The table must be owned by the current generation.
func (t *exact[P]) put(e P) (old P) {
	k := e.k()
	h := t.hash(k)
	for {
		i := h >> t.shift
		b := t.bucket(i)
		if old, _, _ := b.find(h, k); old != *new(P) {
			_, ob, j := t.own(i).find(h, k)
			ob.slots[j] = e
			return old
		}
		full := true
		for c := b; c != nil; c = c.next {
			full = full && int(c.n) == bucketSlots
		}
		if full && t.canSplit(b) {
			t.split(i)
			continue
		}
		t.own(i).add(h, e, t.gen)
		t.n++
		return old
	}
}

// del removes the entry for k and returns it. The table must be owned by
// the current generation.
func (t *exact[P]) del(k *key) (old P) {
	h := t.hash(k)
	i := h >> t.shift
	if old, _, _ = t.bucket(i).find(h, k); old == *new(P) {
		return old
	}
	_, b, j := t.own(i).find(h, k)
	b.remove(j)
	t.n--
	return old
}

// all calls yield for every entry until it returns false.
func (t *exact[P]) all(yield func(P) bool) bool {
	for i := uint64(0); i < 1<<t.depth; {
		b := t.bucket(i)
		_, n := t.span(i, b)
		for ; b != nil; b = b.next {
			for j, c := range b.ctrl {
				if c > ctrlDeleted && !yield(b.slots[j]) {
					return false
				}
			}
		}
		i += n
	}
	return true
}
