package fib

import (
	"math/bits"
	"math/rand/v2"
	"testing"
)

// TestBlockCells drives one route block and one source block through
// random sets, removals and replacements over several generations, and
// checks every slot against a map after each step: the bitmap, the packed
// cells (entry and hop at the slot's rank), and that copies of the block
// taken at earlier generations, as snapshots hold them, still answer as
// they did.
func TestBlockCells(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	type frozen struct {
		b    block[*routeEnt]
		want map[int]*routeEnt
	}
	rb := &block[*routeEnt]{gen: 1}
	sb := &block[*srcEnt]{gen: 1}
	want := map[int]*routeEnt{}
	// Start as a fresh block does: filled at once.
	var rf []filler[*routeEnt]
	var sf []filler[*srcEnt]
	for _, i := range r.Perm(blockSlots)[:1500] {
		e := &routeEnt{Route: Route{Port: PortID(r.IntN(9)), MAC: [6]byte{byte(r.Uint32())}}}
		want[i] = e
		rf = append(rf, filler[*routeEnt]{i, e})
		sf = append(sf, filler[*srcEnt]{i, &srcEnt{}})
	}
	rb.fill(rf, 1)
	sb.fill(sf, 1)
	var old []frozen
	check := func(b *block[*routeEnt], want map[int]*routeEnt, what string) {
		t.Helper()
		for i := range blockSlots {
			e := want[i]
			c := b.cell(i)
			switch {
			case b.holds(i) != (e != nil):
				t.Fatalf("%s: slot %d: holds %v, want %v", what, i, b.holds(i), e != nil)
			case e == nil && c != nil:
				t.Fatalf("%s: free slot %d has a cell", what, i)
			case e != nil && (c == nil || c.e != e || c.hop.unpack() != e.Route.Hop() || b.get(i) != e):
				t.Fatalf("%s: slot %d: cell %+v, want %p", what, i, c, e)
			}
		}
	}
	// The writer's side, which only the newest copy of a block keeps.
	checkWriter := func(b *block[*routeEnt]) {
		t.Helper()
		for wi := range blockWords {
			w := &b.words[wi]
			if n := bits.OnesCount64(w.has); len(b.cw.cells[wi]) != n || n > 0 && w.cells != &b.cw.cells[wi][0] || n == 0 && w.cells != nil {
				t.Fatalf("word %d: %d taken, %d cells", wi, n, len(b.cw.cells[wi]))
			}
		}
	}
	for gen := uint64(1); gen <= 40; gen++ {
		if gen > 1 {
			// Publish: keep a copy of the block as a snapshot would, and
			// go on in a new generation.
			old = append(old, frozen{*rb, clone(want)})
			cp := *rb
			cp.gen = gen
			rb = &cp
			scp := *sb
			scp.gen = gen
			sb = &scp
		}
		// Early generations fill (many changes, words grow in place);
		// later ones change a few slots each.
		steps := 200
		if gen > 10 {
			steps = 1 + r.IntN(20)
		}
		for range steps {
			i := r.IntN(blockSlots)
			if gen > 10 {
				i = r.IntN(3 * wordSlots) // a few words, often the same
			}
			var e *routeEnt
			if r.IntN(3) > 0 {
				e = &routeEnt{Route: Route{Port: PortID(r.IntN(9)), MAC: [6]byte{byte(r.Uint32())}}}
				want[i] = e
			} else {
				delete(want, i)
			}
			rb.set(i, e, gen)
			var se *srcEnt
			if e != nil {
				se = &srcEnt{}
			}
			sb.set(i, se, gen)
			if rb.holds(i) != sb.holds(i) {
				t.Fatalf("gen %d: source slot %d holds %v", gen, i, sb.holds(i))
			}
		}
		check(rb, want, "current")
		checkWriter(rb)
		for _, f := range old {
			check(&f.b, f.want, "earlier generation")
		}
		if sb.cw != nil {
			t.Fatal("source block keeps cells")
		}
		for wi := range blockWords {
			if sb.words[wi].cells != nil {
				t.Fatalf("source block keeps cells in word %d", wi)
			}
		}
	}
}

func clone(m map[int]*routeEnt) map[int]*routeEnt {
	c := make(map[int]*routeEnt, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// TestDenseIndexSpread: the index's hash spreads keys that differ only in
// their namespace or length as well as keys that differ in their block
// number. (It once ORed the namespace into a constant, which lost most of
// its bits: 16 probes a search for 64 ports' source blocks.)
func TestDenseIndexSpread(t *testing.T) {
	for _, c := range []struct {
		name          string
		ns, ids, lens int
	}{{"ports", 256, 64, 1}, {"blocks", 1, 16384, 1}, {"lengths", 1, 512, 32}, {"all", 64, 256, 2}} {
		w := newDenseWriter[*srcEnt]()
		for ns := range c.ns {
			for id := range c.ids {
				for l := range c.lens {
					k := blockKey{id: 0x20010db8<<4 + uint64(id), ns: uint16(ns), bits: uint8(56 - l)}
					w.dense[k] = &blockInfo[*srcEnt]{key: k, b: &block[*srcEnt]{key: k}}
				}
			}
		}
		d := newDenseIndex(&w, 0x1234567)
		n, probes := 0, 0
		mask := d.n - 1
		for i := range d.n {
			s := d.at(i)
			if s.b == nil {
				continue
			}
			n++
			for j := d.home(s.key); ; j = (j + 1) & mask {
				probes++
				if d.at(j).key == s.key {
					break
				}
			}
			if d.find(s.key) != s.b {
				t.Fatalf("%s: find(%+v) misses", c.name, s.key)
			}
		}
		// Linear probing at a load of at most one half: 1.5 expected of
		// random homes, fewer here (1.1-1.6), as a multiplicative hash
		// spreads runs of ids evenly.
		if mean := float64(probes) / float64(n); n != len(w.dense) || mean > 2 {
			t.Errorf("%s: %d keys indexed of %d, %.2f probes a search", c.name, n, len(w.dense), mean)
		} else {
			t.Logf("%s: %d keys, %.2f probes a search", c.name, n, mean)
		}
	}
}
