package fib

import "math/bits"

// This file holds the exact-match table used for the prefix lengths in
// heavy use: an extendible hash table (a directory indexed by the top bits
// of the hash, pointing at small open-addressing buckets) whose directory
// and buckets are copied on first write in each generation. A batch of k
// changes therefore copies the directory once and at most k buckets of at
// most maxSlots slots, however large the table is, and every published
// generation stays intact for its readers.

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
	used   bool
	v      V
}

// bucket is the writer's bookkeeping for one run of slots.
type bucket struct {
	gen   uint64 // generation that may modify the slots in place
	n     int    // entries held
	depth uint8  // local depth: how many top hash bits all entries share
}

// dirEnt is a directory entry. The 1<<(depth-b.depth) entries that share a
// bucket are adjacent and hold the same slots and bucket.
type dirEnt[V any] struct {
	slots []slot[V]
	b     *bucket
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
// bucket.
func hash(hi, lo uint64, port uint16, s0, s1 uint64) uint64 {
	a, b := bits.Mul64(hi^s0, lo^uint64(port)^s1)
	return a ^ b
}

// home returns the first slot a key with hash h probes in a directory.
// Lookups call it for every length before comparing any keys, so that the
// memory loads of all lengths overlap instead of queueing behind each other.
func home[V any](dir []dirEnt[V], shift uint, h uint64) *slot[V] {
	s := dir[h>>shift].slots
	return &s[h&uint64(len(s)-1)]
}

// probe looks a key up in a directory; it is the packet-path primitive and
// allocates nothing. Buckets are never full, so the loop ends at an empty
// slot at the latest.
func probe[V any](dir []dirEnt[V], shift uint, h, hi, lo uint64, port uint16) (v V, ok bool) {
	s := dir[h>>shift].slots
	m := uint64(len(s) - 1)
	for i := h & m; ; i = (i + 1) & m {
		e := &s[i]
		if !e.used {
			return v, false
		}
		if e.hi == hi && e.lo == lo && e.port == port {
			return e.v, true
		}
	}
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

func newExact[V any](gen, s0, s1 uint64) *exact[V] {
	return &exact[V]{
		dir:   []dirEnt[V]{{slots: make([]slot[V], minSlots), b: &bucket{gen: gen}}},
		shift: 64,
		gen:   gen,
		s0:    s0,
		s1:    s1,
	}
}

func (t *exact[V]) hash(hi, lo uint64, port uint16) uint64 {
	return hash(hi, lo, port, t.s0, t.s1)
}

func (t *exact[V]) get(hi, lo uint64, port uint16) (V, bool) {
	return probe(t.dir, t.shift, t.hash(hi, lo, port), hi, lo, port)
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
// given slots and bucket.
func (t *exact[V]) setBucket(i uint64, s []slot[V], b *bucket) {
	start, n := t.span(i)
	for j := start; j < start+n; j++ {
		t.dir[j] = dirEnt[V]{slots: s, b: b}
	}
}

// insertSlot places an entry known to be absent into s by linear probing.
func (t *exact[V]) insertSlot(s []slot[V], e slot[V]) {
	m := uint64(len(s) - 1)
	i := t.hash(e.hi, e.lo, e.port) & m
	for s[i].used {
		i = (i + 1) & m
	}
	s[i] = e
}

// rebuild replaces the bucket at directory index i with an owned copy of c
// slots.
func (t *exact[V]) rebuild(i uint64, c int) {
	old := t.dir[i]
	s := make([]slot[V], c)
	if c == len(old.slots) {
		copy(s, old.slots)
	} else {
		for _, e := range old.slots {
			if e.used {
				t.insertSlot(s, e)
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
	ld := old.b.depth + 1
	bit := uint64(1) << (63 - uint(old.b.depth))
	var nl, nr int
	for _, e := range old.slots {
		if e.used {
			if t.hash(e.hi, e.lo, e.port)&bit == 0 {
				nl++
			} else {
				nr++
			}
		}
	}
	ls, rs := make([]slot[V], capFor(nl)), make([]slot[V], capFor(nr))
	for _, e := range old.slots {
		if e.used {
			if t.hash(e.hi, e.lo, e.port)&bit == 0 {
				t.insertSlot(ls, e)
			} else {
				t.insertSlot(rs, e)
			}
		}
	}
	lb := &bucket{gen: t.gen, n: nl, depth: ld}
	rb := &bucket{gen: t.gen, n: nr, depth: ld}
	for j := start; j < start+n/2; j++ {
		t.dir[j] = dirEnt[V]{slots: ls, b: lb}
	}
	for j := start + n/2; j < start+n; j++ {
		t.dir[j] = dirEnt[V]{slots: rs, b: rb}
	}
}

// put sets the value for a key and returns the previous one. The table must
// be owned by the current generation.
func (t *exact[V]) put(hi, lo uint64, port uint16, v V) (old V, existed bool) {
	h := t.hash(hi, lo, port)
	for {
		i := h >> t.shift
		e := t.dir[i]
		m := uint64(len(e.slots) - 1)
		j := h & m
		for ; e.slots[j].used; j = (j + 1) & m {
			if s := &e.slots[j]; s.hi == hi && s.lo == lo && s.port == port {
				break
			}
		}
		owned := e.b.gen == t.gen
		if e.slots[j].used { // present: replace the value
			if !owned {
				t.rebuild(i, capFor(e.b.n))
				continue // positions may have moved: look again
			}
			old, e.slots[j].v = e.slots[j].v, v
			return old, true
		}
		switch {
		case owned && e.b.n < maxLoad(len(e.slots)):
			e.slots[j] = slot[V]{hi: hi, lo: lo, port: port, used: true, v: v}
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
	h := t.hash(hi, lo, port)
	i := h >> t.shift
	for {
		e := t.dir[i]
		m := uint64(len(e.slots) - 1)
		j := h & m
		for ; e.slots[j].used; j = (j + 1) & m {
			if s := &e.slots[j]; s.hi == hi && s.lo == lo && s.port == port {
				break
			}
		}
		if !e.slots[j].used {
			return old, false
		}
		if e.b.gen != t.gen {
			// Copy before writing; shrink a bucket left mostly empty.
			t.rebuild(i, capFor(e.b.n))
			continue
		}
		old = e.slots[j].v
		t.deleteSlot(e.slots, j)
		e.b.n--
		t.n--
		return old, true
	}
}

// deleteSlot empties slot j and shifts later entries of its probe run back,
// so lookups never need tombstones.
func (t *exact[V]) deleteSlot(s []slot[V], j uint64) {
	m := uint64(len(s) - 1)
	s[j] = slot[V]{}
	for k := (j + 1) & m; s[k].used; k = (k + 1) & m {
		home := t.hash(s[k].hi, s[k].lo, s[k].port) & m
		// The entry at k may move to the hole at j unless its home lies
		// cyclically within (j, k].
		if (k > j && (home <= j || home > k)) || (k < j && home <= j && home > k) {
			s[j], s[k] = s[k], slot[V]{}
			j = k
		}
	}
}

// all calls yield for every entry until it returns false.
func (t *exact[V]) all(yield func(hi, lo uint64, port uint16, v V) bool) bool {
	for i := uint64(0); i < uint64(len(t.dir)); {
		_, n := t.span(i)
		for _, e := range t.dir[i].slots {
			if e.used && !yield(e.hi, e.lo, e.port, e.v) {
				return false
			}
		}
		i += n
	}
	return true
}
