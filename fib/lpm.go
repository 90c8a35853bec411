package fib

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/gaissmai/bart"
)

// maxFast is how many prefix lengths get an exact-match table. Lookups probe
// every one of them, so the number bounds the lookup cost; the lengths
// beyond it (rare in a real delegation plan) are served by bart.
const maxFast = 6

// swapSlack is the margin by which a slow length must outnumber twice the
// least used fast length to take its exact table. A variable for tests.
var swapSlack = 64

// fastLen is one exact-match table as a snapshot sees it: the length, its
// masks, and the table's directory copied out of the writer's header so a
// lookup reads the directory and a bucket without the writer's header.
type fastLen[P entry] struct {
	mhi, mlo uint64
	top      []*chunk[P]
	shift    uint
	bits     uint8
	blocks   bool      // the length has dense blocks (dense.go)
	runs0    []dirRun  // the index's runs of the length in namespace 0 (routes)
	t        *exact[P] // the table; top and shift are copied from it on freeze
}

// lpm is one generation of a prefix table over (namespace, prefix) keys. The
// namespace is the port for source filters and zero for routes. Prefixes of
// the lengths in fast live in exact-match tables; all other prefixes live in
// one persistent bart table per namespace, slow.
type lpm[P entry] struct {
	fast    [maxFast]fastLen[P] // fast[:nfast], longest length first
	nfast   int
	slowMax int              // longest length held in slow, -1 if slow is empty
	slow    []*bart.Table[P] // by namespace; nil where empty
	n       int              // entries
	s0, s1  uint64           // hash seeds

	// outer is the region filter (see outer.go), when filter is set.
	outer  []outerEnt
	filter bool

	dense denseIndex[P] // the dense blocks (dense.go)
}

// split128 returns an address as two big-endian words.
func split128(a netip.Addr) (hi, lo uint64) {
	b := a.As16()
	return binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
}

// join128 is the inverse of split128.
func join128(hi, lo uint64) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo)
	return netip.AddrFrom16(b)
}

// masks returns the network masks of a prefix length.
func masks(bits int) (mhi, mlo uint64) {
	if bits <= 64 {
		return ^uint64(0) << (64 - bits), 0
	}
	return ^uint64(0), ^uint64(0) << (128 - bits)
}

// keyOf returns the key of a masked prefix in namespace ns.
func keyOf(p netip.Prefix, ns uint16) key {
	hi, lo := split128(p.Addr())
	return key{hi: hi, lo: lo, port: ns}
}

// prefixOf is the inverse of keyOf.
func prefixOf(k *key, bits int) netip.Prefix {
	return netip.PrefixFrom(join128(k.hi, k.lo), bits)
}

// lpmWriter is the writer's working copy of an lpm: it is changed in place,
// copying on first write whatever the last published generation shares.
type lpmWriter[P entry] struct {
	cur     lpm[P]
	counts  [129]int // entries by prefix length
	slowGen uint64   // generation that owns cur.slow (the slice, not the tables)
	moves   int      // migrations done, for tests

	regions    map[uint64]int32       // entries by region<<8 | length, lengths >= regionBits
	short      map[netip.Prefix]int32 // entries of lengths < regionBits, by prefix
	outerDirty bool                   // the filter may have changed

	dense denseWriter[P]
}

func newLPMWriter[P entry](s0, s1 uint64) *lpmWriter[P] {
	w := &lpmWriter[P]{regions: make(map[uint64]int32), short: make(map[netip.Prefix]int32), dense: newDenseWriter[P]()}
	w.cur.s0, w.cur.s1 = s0, s1
	w.cur.slowMax = -1
	return w
}

// fastIndex returns the index in cur.fast of a prefix length, or -1.
func (w *lpmWriter[P]) fastIndex(bits int) int {
	for i := range w.cur.nfast {
		if int(w.cur.fast[i].bits) == bits {
			return i
		}
	}
	return -1
}

// own returns fast table i, copied first if a published snapshot shares it.
func (w *lpmWriter[P]) own(i int, gen uint64) *exact[P] {
	f := &w.cur.fast[i]
	if f.t.gen != gen {
		f.t = f.t.clone(gen)
	}
	return f.t
}

// addFast makes bits a fast length served by t, keeping the fast lengths
// sorted longest first.
func (w *lpmWriter[P]) addFast(bits int, t *exact[P]) {
	mhi, mlo := masks(bits)
	i := 0
	for i < w.cur.nfast && int(w.cur.fast[i].bits) > bits {
		i++
	}
	copy(w.cur.fast[i+1:w.cur.nfast+1], w.cur.fast[i:w.cur.nfast])
	w.cur.fast[i] = fastLen[P]{mhi: mhi, mlo: mlo, bits: uint8(bits), t: t}
	w.cur.nfast++
	w.outerDirty = true // the indices of the fast lengths moved
}

// removeFast drops fast table i.
func (w *lpmWriter[P]) removeFast(i int) {
	copy(w.cur.fast[i:], w.cur.fast[i+1:w.cur.nfast])
	w.cur.nfast--
	w.cur.fast[w.cur.nfast] = fastLen[P]{}
	w.outerDirty = true
}

// slowTable returns the bart table of a namespace, or nil.
func (w *lpmWriter[P]) slowTable(ns uint16) *bart.Table[P] {
	if int(ns) < len(w.cur.slow) {
		return w.cur.slow[ns]
	}
	return nil
}

// setSlow replaces the bart table of a namespace, copying the slice of
// tables first if a published snapshot shares it.
func (w *lpmWriter[P]) setSlow(ns uint16, t *bart.Table[P], gen uint64) {
	if t != nil && t.Size() == 0 {
		t = nil
	}
	if w.slowGen != gen {
		w.cur.slow = slices.Clone(w.cur.slow)
		w.slowGen = gen
	}
	if int(ns) >= len(w.cur.slow) {
		if t == nil {
			return
		}
		w.cur.slow = append(w.cur.slow, make([]*bart.Table[P], int(ns)+1-len(w.cur.slow))...)
	}
	w.cur.slow[ns] = t
}

// get returns the entry for exactly p (masked) in namespace ns, or the zero
// P.
func (w *lpmWriter[P]) get(p netip.Prefix, ns uint16) P {
	if i := w.fastIndex(p.Bits()); i >= 0 {
		k := keyOf(p, ns)
		return w.cur.fast[i].t.get(&k)
	}
	var e P
	if t := w.slowTable(ns); t != nil {
		e, _ = t.Get(p)
	}
	return e
}

// put stores e for p (masked) in namespace ns, where e's key is
// keyOf(p, ns), and returns the entry it replaces.
func (w *lpmWriter[P]) put(p netip.Prefix, ns uint16, e P, gen uint64) (old P) {
	bits := p.Bits()
	i := w.fastIndex(bits)
	if i < 0 && w.counts[bits] == 0 && w.cur.nfast < maxFast {
		// A length not in use yet takes a free fast table directly.
		w.addFast(bits, newExact[P](gen, w.cur.s0, w.cur.s1))
		i = w.fastIndex(bits)
	}
	if i >= 0 {
		old = w.own(i, gen).put(e)
	} else {
		t := w.slowTable(ns)
		if t == nil {
			t = new(bart.Table[P])
		}
		old, _ = t.Get(p)
		w.setSlow(ns, t.InsertPersist(p, e), gen)
	}
	added := int32(0)
	if old == *new(P) {
		w.counts[bits]++
		w.cur.n++
		w.count(p, 1)
		added = 1
	}
	w.dense.update(p, ns, e, added, gen)
	return old
}

// del removes p (masked) from namespace ns and returns its entry, or the
// zero P if there was none.
func (w *lpmWriter[P]) del(p netip.Prefix, ns uint16, gen uint64) (old P) {
	bits := p.Bits()
	if i := w.fastIndex(bits); i >= 0 {
		k := keyOf(p, ns)
		if old = w.cur.fast[i].t.get(&k); old == *new(P) {
			return old
		}
		w.own(i, gen).del(&k)
		if w.counts[bits] == 1 {
			w.removeFast(i) // the length is out of use: free its table
		}
	} else {
		t := w.slowTable(ns)
		if t == nil {
			return old
		}
		if old, _ = t.Get(p); old == *new(P) {
			return old
		}
		w.setSlow(ns, t.DeletePersist(p), gen)
	}
	w.counts[bits]--
	w.cur.n--
	w.count(p, -1)
	w.dense.update(p, ns, *new(P), -1, gen)
	return old
}

// rebalance moves prefix lengths between the exact tables and bart so that
// the most used lengths are fast: a free fast table goes to the most used
// slow length, and a slow length displaces the least used fast one once it
// has more than twice its entries plus swapSlack (the margin keeps lengths
// from flapping). Moving rebuilds the slow tables, which costs time in
// proportion to the entries moved and those left slow.
func (w *lpmWriter[P]) rebalance(gen uint64) {
	var fast [129]bool
	nfast := w.cur.nfast
	for i := range nfast {
		fast[w.cur.fast[i].bits] = true
	}
	moved := false
	for {
		best := -1
		for b, c := range w.counts {
			if c > 0 && !fast[b] && (best < 0 || c > w.counts[best]) {
				best = b
			}
		}
		if best < 0 {
			break
		}
		if nfast < maxFast {
			fast[best] = true
			nfast++
			moved = true
			continue
		}
		worst := -1
		for b, isFast := range fast {
			if isFast && (worst < 0 || w.counts[b] < w.counts[worst]) {
				worst = b
			}
		}
		if w.counts[best] <= 2*w.counts[worst]+swapSlack {
			break
		}
		fast[best], fast[worst] = true, false
		moved = true
	}
	if moved {
		w.migrate(fast, gen)
	}
}

// migrate rebuilds the tables so that exactly the lengths marked in fast
// have exact tables.
func (w *lpmWriter[P]) migrate(fast [129]bool, gen uint64) {
	w.moves++
	type item struct {
		p netip.Prefix
		e P
	}
	var moving []item
	tables := make(map[int]*exact[P])
	// Keep the exact tables that stay; empty those that go.
	for i := w.cur.nfast - 1; i >= 0; i-- {
		f := w.cur.fast[i]
		if fast[f.bits] {
			tables[int(f.bits)] = f.t
			continue
		}
		f.t.all(func(e P) bool {
			moving = append(moving, item{prefixOf(e.k(), int(f.bits)), e})
			return true
		})
		w.removeFast(i)
	}
	// Rebuild the slow tables from scratch: the new tables are private
	// until published, so plain (in-place) inserts are safe and fast.
	for _, t := range w.cur.slow {
		if t != nil {
			for p, e := range t.All6() {
				moving = append(moving, item{p, e})
			}
		}
	}
	var slow []*bart.Table[P]
	for _, it := range moving {
		b := it.p.Bits()
		if fast[b] {
			t := tables[b]
			if t == nil {
				t = newExact[P](gen, w.cur.s0, w.cur.s1)
				w.addFast(b, t)
			} else if t.gen != gen {
				t = t.clone(gen)
				w.cur.fast[w.fastIndex(b)].t = t
			}
			tables[b] = t
			t.put(it.e)
			continue
		}
		ns := int(it.e.k().port)
		if ns >= len(slow) {
			slow = append(slow, make([]*bart.Table[P], ns+1-len(slow))...)
		}
		if slow[ns] == nil {
			slow[ns] = new(bart.Table[P])
		}
		slow[ns].Insert(it.p, it.e)
	}
	w.cur.slow, w.slowGen = slow, gen
}

// freeze rebalances and returns the lpm as a snapshot sees it. After the
// caller publishes it, it must move on to a new generation.
func (w *lpmWriter[P]) freeze(gen uint64, dense bool) lpm[P] {
	w.rebalance(gen)
	w.cur.slowMax = -1
	for b := 128; b >= 0; b-- {
		if w.counts[b] > 0 && w.fastIndex(b) < 0 {
			w.cur.slowMax = b
			break
		}
	}
	for i := range w.cur.nfast {
		f := &w.cur.fast[i]
		f.top, f.shift = f.t.top, f.t.shift
	}
	if w.outerDirty {
		// A new slice: the published one stays as it is.
		w.cur.outer, w.cur.filter = w.buildOuter()
	}
	w.cur.dense = w.freezeDense(gen, dense)
	for i := range w.cur.nfast {
		f := &w.cur.fast[i]
		f.blocks = denseLen(int(f.bits)) && w.dense.blocks[f.bits] > 0
		f.runs0 = w.cur.dense.runs(0, f.bits)
	}
	w.outerDirty = false
	return w.cur
}
