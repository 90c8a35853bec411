package fib

import "math/bits"

// This file holds the exact-match table used for the prefix lengths in
// heavy use: an extendible hash table (a directory indexed by the top bits
// of the hash, pointing at small open-addressing buckets) whose directory
// and buckets are copied on first write in each generation. A batch of k
// changes therefore copies the directory once and at most k buckets of at
// most maxSlots slots, however large the table is, and every published
// generation stays intact for its readers.
//
// Each bucket keeps a control byte per slot beside the slots (as Swiss
// tables do): zero for an empty slot, else seven bits of the key's hash.
// The control bytes take one byte per slot, so they and the directory stay
// in cache when the slots do not; a lookup that misses (a packet to an
// undelegated address) then rarely touches a slot at all.

const (
	minSlots = 8   // smallest bucket
	maxSlots = 128 // a bucket that would need more slots is split instead
	maxDepth = 32  // hard directory limit; see canSplit for the usual one
)

// slot is one entry of a bucket: the masked prefix address (hi, lo), its
// namespace (the port for source entries, zero for routes) and the value.
type slot[V any] struct {
	hi, lo uint64
	port   uint16
	v      V
}

// store is a bucket's open-addressing array: ctrl[i] is zero when slot i is
// empty, else tag(hash) of its key. Both have the same power-of-two length.
type store[V any] struct {
	ctrl  []uint8
	slots []slot[V]
}

// bucket is the writer's bookkeeping for one store.
type bucket struct {
	gen   uint64 // generation that may modify the store in place
	n     int    // entries held
	depth uint8  // local depth: how many top hash bits all entries share
}

// dirEnt is a directory entry. The 1<<(depth-b.depth) entries that share a
// bucket are adjacent and hold the same store and bucket.
type dirEnt[V any] struct {
	store[V]
	b *bucket
}

// exact maps (masked address, namespace) to V for one prefix length. The
// writer owns (may modify in place) the table and those buckets whose gen
// equals the current generation; everything else is shared with published
// snapshots and is copied before it is changed.
type exact[V any] struct {
	dir    []dirEnt[V]
	shift  uint  // 64 - depth: h>>shift indexes dir
	depth  uint8 // global depth, len(dir) == 1<<depth
	n      int
	gen    uint64
	s0, s1 uint64 // hash seeds
}

// hash mixes a key with the table seeds: one 64x64->128 bit multiply,
// folded. The seeds are random per Table, so traffic cannot aim at a
// bucket. The top bits index the directory, the low bits the bucket, and
// bits 24-30 make the control byte.
func hash(hi, lo uint64, port uint16, s0, s1 uint64) uint64 {
	a, b := bits.Mul64(hi^s0, lo^uint64(port)^s1)
	return a ^ b
}

// tag is the control byte of a key with hash h; never zero.
func tag(h uint64) uint8 { return uint8(h>>24) | 0x80 }

// find returns the slot index of a key in the store, or the index of the
// empty slot that ends its probe run. Stores are never full, so the loop
// ends.
func (s *store[V]) find(h, hi, lo uint64, port uint16) (uint64, bool) {
	m := uint64(len(s.ctrl) - 1)
	t := tag(h)
	for i := h & m; ; i = (i + 1) & m {
		c := s.ctrl[i]
		if c == 0 {
			return i, false
		}
		if c == t {
			if e := &s.slots[i]; e.hi == hi && e.lo == lo && e.port == port {
				return i, true
			}
		}
	}
}

// lookup is the packet-path primitive: the value for a key in a directory.
func lookup[V any](dir []dirEnt[V], shift uint, h, hi, lo uint64, port uint16) (v V, ok bool) {
	s := &dir[h>>shift].store
	if i, ok := s.find(h, hi, lo, port); ok {
		return s.slots[i].v, true
	}
	return v, false
}

// maxLoad is how many entries a bucket of c slots may hold.
func maxLoad(c int) int { return c - c/4 }

// capFor is the bucket size for n entries.
func capFor(n int) int {
	c := minSlots
	for maxLoad(c) < n {
		c <<= 1
	}
	return c
}

func newStore[V any](c int) store[V] {
	return store[V]{ctrl: make([]uint8, c), slots: make([]slot[V], c)}
}

func newExact[V any](gen, s0, s1 uint64) *exact[V] {
	return &exact[V]{
		dir:   []dirEnt[V]{{store: newStore[V](minSlots), b: &bucket{gen: gen}}},
		shift: 64,
		gen:   gen,
		s0:    s0,
		s1:    s1,
	}
}

func (t *exact[V]) hash(e *slot[V]) uint64 {
	return hash(e.hi, e.lo, e.port, t.s0, t.s1)
}

func (t *exact[V]) get(hi, lo uint64, port uint16) (V, bool) {
	return lookup(t.dir, t.shift, hash(hi, lo, port, t.s0, t.s1), hi, lo, port)
}

// clone returns a copy of the table header and directory owned by gen; the
// buckets stay shared until they are written.
func (t *exact[V]) clone(gen uint64) *exact[V] {
	c := *t
	c.dir = append([]dirEnt[V](nil), t.dir...)
	c.gen = gen
	return &c
}

// span returns the first directory index and the number of entries that
// share the bucket at index i.
func (t *exact[V]) span(i uint64) (uint64, uint64) {
	w := uint(t.depth - t.dir[i].b.depth)
	return i >> w << w, 1 << w
}

// setBucket points every directory entry of the bucket at index i to the
// given store and bucket.
func (t *exact[V]) setBucket(i uint64, s store[V], b *bucket) {
	start, n := t.span(i)
	for j := start; j < start+n; j++ {
		t.dir[j] = dirEnt[V]{store: s, b: b}
	}
}

// insert places an entry known to be absent into s.
func (t *exact[V]) insert(s store[V], e *slot[V]) {
	h := t.hash(e)
	m := uint64(len(s.ctrl) - 1)
	i := h & m
	for s.ctrl[i] != 0 {
		i = (i + 1) & m
	}
	s.ctrl[i], s.slots[i] = tag(h), *e
}

// rebuild replaces the bucket at directory index i with an owned copy of c
// slots.
func (t *exact[V]) rebuild(i uint64, c int) {
	old := t.dir[i]
	s := newStore[V](c)
	if c == len(old.ctrl) {
		copy(s.ctrl, old.ctrl)
		copy(s.slots, old.slots)
	} else {
		for j, ct := range old.ctrl {
			if ct != 0 {
				t.insert(s, &old.slots[j])
			}
		}
	}
	t.setBucket(i, s, &bucket{gen: t.gen, n: old.b.n, depth: old.b.depth})
}

// canSplit reports whether the bucket b may be split. Splitting a bucket
// that uses all directory bits doubles the directory, which is allowed only
// while the directory stays small next to the entries: should keys ever
// cluster in the hash, buckets grow past maxSlots rather than the directory
// growing without bound.
func (t *exact[V]) canSplit(b *bucket) bool {
	return b.depth < t.depth || (t.depth < maxDepth && len(t.dir) < 64+t.n/8)
}

// split divides the bucket at directory index i in two by the next hash bit,
// doubling the directory first if the bucket already uses all its bits.
func (t *exact[V]) split(i uint64) {
	if t.dir[i].b.depth == t.depth {
		d := make([]dirEnt[V], 2*len(t.dir))
		for j, e := range t.dir {
			d[2*j], d[2*j+1] = e, e
		}
		t.dir = d
		t.depth++
		t.shift--
		i *= 2
	}
	old := t.dir[i]
	start, n := t.span(i)
	bit := uint64(1) << (63 - uint(old.b.depth))
	var nl, nr int
	for j, c := range old.ctrl {
		if c != 0 {
			if t.hash(&old.slots[j])&bit == 0 {
				nl++
			} else {
				nr++
			}
		}
	}
	ls, rs := newStore[V](capFor(nl)), newStore[V](capFor(nr))
	for j, c := range old.ctrl {
		if c != 0 {
			if e := &old.slots[j]; t.hash(e)&bit == 0 {
				t.insert(ls, e)
			} else {
				t.insert(rs, e)
			}
		}
	}
	lb := &bucket{gen: t.gen, n: nl, depth: old.b.depth + 1}
	rb := &bucket{gen: t.gen, n: nr, depth: old.b.depth + 1}
	for j := start; j < start+n/2; j++ {
		t.dir[j] = dirEnt[V]{store: ls, b: lb}
	}
	for j := start + n/2; j < start+n; j++ {
		t.dir[j] = dirEnt[V]{store: rs, b: rb}
	}
}

// put sets the value for a key and returns the previous one. The table must
// be owned by the current generation.
func (t *exact[V]) put(hi, lo uint64, port uint16, v V) (old V, existed bool) {
	h := hash(hi, lo, port, t.s0, t.s1)
	for {
		i := h >> t.shift
		e := t.dir[i]
		j, found := e.find(h, hi, lo, port)
		owned := e.b.gen == t.gen
		if found {
			if !owned {
				t.rebuild(i, capFor(e.b.n))
				continue // positions may have moved: look again
			}
			old, e.slots[j].v = e.slots[j].v, v
			return old, true
		}
		switch {
		case owned && e.b.n < maxLoad(len(e.ctrl)):
			e.ctrl[j], e.slots[j] = tag(h), slot[V]{hi: hi, lo: lo, port: port, v: v}
			e.b.n++
			t.n++
			return old, false
		case e.b.n >= maxLoad(maxSlots) && t.canSplit(e.b):
			t.split(i)
		default:
			t.rebuild(i, capFor(e.b.n+1))
		}
	}
}

// del removes a key and returns its value. The table must be owned by the
// current generation.
func (t *exact[V]) del(hi, lo uint64, port uint16) (old V, existed bool) {
	h := hash(hi, lo, port, t.s0, t.s1)
	i := h >> t.shift
	for {
		e := t.dir[i]
		j, found := e.find(h, hi, lo, port)
		if !found {
			return old, false
		}
		if e.b.gen != t.gen {
			// Copy before writing; shrink a bucket left mostly empty.
			t.rebuild(i, capFor(e.b.n))
			continue
		}
		old = e.slots[j].v
		t.remove(e.store, j)
		e.b.n--
		t.n--
		return old, true
	}
}

// remove empties slot j and shifts later entries of its probe run back, so
// lookups never need tombstones.
func (t *exact[V]) remove(s store[V], j uint64) {
	m := uint64(len(s.ctrl) - 1)
	s.ctrl[j], s.slots[j] = 0, slot[V]{}
	for k := (j + 1) & m; s.ctrl[k] != 0; k = (k + 1) & m {
		home := t.hash(&s.slots[k]) & m
		// The entry at k may move to the hole at j unless its home lies
		// cyclically within (j, k].
		if (k > j && (home <= j || home > k)) || (k < j && home <= j && home > k) {
			s.ctrl[j], s.slots[j] = s.ctrl[k], s.slots[k]
			s.ctrl[k], s.slots[k] = 0, slot[V]{}
			j = k
		}
	}
}

// all calls yield for every entry until it returns false.
func (t *exact[V]) all(yield func(hi, lo uint64, port uint16, v V) bool) bool {
	for i := uint64(0); i < uint64(len(t.dir)); {
		_, n := t.span(i)
		s := &t.dir[i].store
		for j, c := range s.ctrl {
			if e := &s.slots[j]; c != 0 && !yield(e.hi, e.lo, e.port, e.v) {
				return false
			}
		}
		i += n
	}
	return true
}
