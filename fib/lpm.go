package fib

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/gaissmai/bart"
)

// maxFast is how many prefix lengths get an exact-match table. Lookups probe
// every one of them on a miss, so the number bounds the miss cost; the
// lengths beyond it (rare in a real delegation plan) are served by bart.
const maxFast = 6

// swapSlack is the margin by which a slow length must outnumber twice the
// least used fast length to take its exact table. A variable for tests.
var swapSlack = 64

// fastLen is one exact-match table as a snapshot sees it: the length, its
// masks, and the table's directory copied out of the writer's header so a
// lookup touches one directory entry and one bucket.
type fastLen[V any] struct {
	mhi, mlo uint64
	dir      []dirEnt[V]
	shift    uint
	bits     uint8
	t        *exact[V] // writer's table; its dir and shift are copied above on freeze
}

// lpm is one generation of a prefix table over (namespace, prefix) keys. The
// namespace is the port for source filters and zero for routes. Prefixes of
// the lengths in fast live in exact-match tables; all other prefixes live in
// one persistent bart table per namespace, slow.
type lpm[V any] struct {
	fast    [maxFast]fastLen[V] // fast[:nfast], longest length first
	nfast   int
	slowMax int              // longest length held in slow, -1 if slow is empty
	slow    []*bart.Table[V] // by namespace; nil or empty when unused
	n       int              // entries
	s0, s1  uint64           // hash seeds
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

// lpmWriter is the writer's working copy of an lpm: it is changed in place,
// copying on first write whatever the last published generation shares.
type lpmWriter[V any] struct {
	cur     lpm[V]
	counts  [129]int // entries by prefix length
	slowGen uint64   // generation that owns cur.slow (the slice, not the tables)
	moves   int      // migrations done, for tests
}

func newLPMWriter[V any](s0, s1 uint64) *lpmWriter[V] {
	w := &lpmWriter[V]{}
	w.cur.s0, w.cur.s1 = s0, s1
	w.cur.slowMax = -1
	return w
}

// fastIndex returns the index in cur.fast of a prefix length, or -1.
func (w *lpmWriter[V]) fastIndex(bits int) int {
	for i := range w.cur.nfast {
		if int(w.cur.fast[i].bits) == bits {
			return i
		}
	}
	return -1
}

// own returns fast table i, copied first if a published snapshot shares it.
func (w *lpmWriter[V]) own(i int, gen uint64) *exact[V] {
	f := &w.cur.fast[i]
	if f.t.gen != gen {
		f.t = f.t.clone(gen)
	}
	return f.t
}

// addFast makes bits a fast length with an empty table, keeping the fast
// lengths sorted longest first.
func (w *lpmWriter[V]) addFast(bits int, t *exact[V]) {
	mhi, mlo := masks(bits)
	f := fastLen[V]{mhi: mhi, mlo: mlo, bits: uint8(bits), t: t}
	i := 0
	for i < w.cur.nfast && int(w.cur.fast[i].bits) > bits {
		i++
	}
	copy(w.cur.fast[i+1:w.cur.nfast+1], w.cur.fast[i:w.cur.nfast])
	w.cur.fast[i] = f
	w.cur.nfast++
}

// removeFast drops fast table i.
func (w *lpmWriter[V]) removeFast(i int) {
	copy(w.cur.fast[i:], w.cur.fast[i+1:w.cur.nfast])
	w.cur.nfast--
	w.cur.fast[w.cur.nfast] = fastLen[V]{}
}

// slowTable returns the bart table of a namespace, or nil.
func (w *lpmWriter[V]) slowTable(ns uint16) *bart.Table[V] {
	if int(ns) < len(w.cur.slow) {
		return w.cur.slow[ns]
	}
	return nil
}

// setSlow replaces the bart table of a namespace, copying the slice of
// tables first if a published snapshot shares it.
func (w *lpmWriter[V]) setSlow(ns uint16, t *bart.Table[V], gen uint64) {
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
		w.cur.slow = append(w.cur.slow, make([]*bart.Table[V], int(ns)+1-len(w.cur.slow))...)
	}
	w.cur.slow[ns] = t
}

// get returns the value stored for exactly p (masked) in namespace ns.
func (w *lpmWriter[V]) get(p netip.Prefix, ns uint16) (v V, ok bool) {
	if i := w.fastIndex(p.Bits()); i >= 0 {
		hi, lo := split128(p.Addr())
		return w.cur.fast[i].t.get(hi, lo, ns)
	}
	if t := w.slowTable(ns); t != nil {
		return t.Get(p)
	}
	return v, false
}

// put stores v for p (masked) in namespace ns and returns the old value.
func (w *lpmWriter[V]) put(p netip.Prefix, ns uint16, v V, gen uint64) (old V, existed bool) {
	bits := p.Bits()
	i := w.fastIndex(bits)
	if i < 0 && w.counts[bits] == 0 && w.cur.nfast < maxFast {
		// A length not in use yet takes a free fast table directly.
		w.addFast(bits, newExact[V](gen, w.cur.s0, w.cur.s1))
		i = w.fastIndex(bits)
	}
	if i >= 0 {
		hi, lo := split128(p.Addr())
		old, existed = w.own(i, gen).put(hi, lo, ns, v)
	} else {
		t := w.slowTable(ns)
		if t == nil {
			t = new(bart.Table[V])
		}
		old, existed = t.Get(p)
		w.setSlow(ns, t.InsertPersist(p, v), gen)
	}
	if !existed {
		w.counts[bits]++
		w.cur.n++
	}
	return old, existed
}

// del removes p (masked) from namespace ns and returns its value.
func (w *lpmWriter[V]) del(p netip.Prefix, ns uint16, gen uint64) (old V, existed bool) {
	bits := p.Bits()
	if i := w.fastIndex(bits); i >= 0 {
		hi, lo := split128(p.Addr())
		if _, ok := w.cur.fast[i].t.get(hi, lo, ns); !ok {
			return old, false
		}
		old, existed = w.own(i, gen).del(hi, lo, ns)
		if w.counts[bits] == 1 {
			w.removeFast(i) // the length is out of use: free its table
		}
	} else {
		t := w.slowTable(ns)
		if t == nil {
			return old, false
		}
		if old, existed = t.Get(p); !existed {
			return old, false
		}
		w.setSlow(ns, t.DeletePersist(p), gen)
	}
	w.counts[bits]--
	w.cur.n--
	return old, true
}

// rebalance moves prefix lengths between the exact tables and bart so that
// the most used lengths are fast: a free fast table goes to the most used
// slow length, and a slow length displaces the least used fast one once it
// has more than twice its entries (the margin keeps lengths from flapping).
// Moving rebuilds the slow tables, which costs time in proportion to the
// entries moved and those left slow.
func (w *lpmWriter[V]) rebalance(gen uint64) {
	var fast [129]bool
	nfast := w.cur.nfast
	for i := range nfast {
		fast[w.cur.fast[i].bits] = true
	}
	promoted := false
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
			promoted = true
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
		promoted = true
	}
	if !promoted {
		return
	}
	w.migrate(fast, gen)
}

// migrate rebuilds the tables so that exactly the lengths marked in fast
// have exact tables.
func (w *lpmWriter[V]) migrate(fast [129]bool, gen uint64) {
	type entry struct {
		p  netip.Prefix
		ns uint16
		v  V
	}
	w.moves++
	var toSlow []entry
	tables := make(map[int]*exact[V])
	// Keep the exact tables that stay; empty the ones that go slow.
	for i := w.cur.nfast - 1; i >= 0; i-- {
		f := w.cur.fast[i]
		if fast[f.bits] {
			tables[int(f.bits)] = f.t
			continue
		}
		f.t.all(func(hi, lo uint64, ns uint16, v V) bool {
			toSlow = append(toSlow, entry{netip.PrefixFrom(join128(hi, lo), int(f.bits)), ns, v})
			return true
		})
		w.removeFast(i)
	}
	// Rebuild the slow tables from scratch: the new tables are private
	// until published, so plain (in-place) inserts are safe and fast.
	var slow []*bart.Table[V]
	for ns, t := range w.cur.slow {
		if t == nil {
			continue
		}
		for p, v := range t.All6() {
			toSlow = append(toSlow, entry{p, uint16(ns), v})
		}
	}
	for _, e := range toSlow {
		b := e.p.Bits()
		if fast[b] {
			t := tables[b]
			if t == nil {
				t = newExact[V](gen, w.cur.s0, w.cur.s1)
				tables[b] = t
				w.addFast(b, t)
			}
			hi, lo := split128(e.p.Addr())
			if t.gen != gen {
				t = t.clone(gen)
				tables[b] = t
				w.cur.fast[w.fastIndex(b)].t = t
			}
			t.put(hi, lo, e.ns, e.v)
			continue
		}
		if int(e.ns) >= len(slow) {
			slow = append(slow, make([]*bart.Table[V], int(e.ns)+1-len(slow))...)
		}
		if slow[e.ns] == nil {
			slow[e.ns] = new(bart.Table[V])
		}
		slow[e.ns].Insert(e.p, e.v)
	}
	w.cur.slow, w.slowGen = slow, gen
}

// freeze rebalances and returns the lpm as a snapshot sees it. After the
// caller publishes it, it must move on to a new generation.
func (w *lpmWriter[V]) freeze(gen uint64) lpm[V] {
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
		f.dir, f.shift = f.t.dir, f.t.shift
	}
	return w.cur
}
