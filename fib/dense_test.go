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

// TestDenseIndex: the directory finds every block by its key, through
// runs cut at gaps wider than dirGap, and finds no block for keys next
// to them, in other namespaces or at other lengths; its slots are no
// more than its blocks and its gaps of at most dirGap.
func TestDenseIndex(t *testing.T) {
	for _, c := range []struct {
		name          string
		ns, ids, lens int
		stride        uint64 // between the ids of a namespace and length
	}{
		{"ports", 256, 64, 1, 1}, {"blocks", 1, 16384, 1, 1}, {"lengths", 1, 512, 32, 1},
		{"all", 64, 256, 2, 1}, {"gaps", 4, 300, 2, dirGap}, {"runs", 3, 100, 1, dirGap + 1},
		{"scattered", 2, 1000, 1, 1 << 30},
	} {
		w := newDenseWriter[*srcEnt]()
		runs := 0
		for ns := range c.ns {
			for l := range c.lens {
				runs++
				if c.stride > dirGap {
					runs += c.ids - 1
				}
				for id := range uint64(c.ids) {
					k := blockKey{id: 0x20010db8<<4 + id*c.stride, ns: uint16(3 * ns), bits: uint8(56 - l)}
					w.dense[k] = &blockInfo[*srcEnt]{key: k, b: &block[*srcEnt]{key: k}}
				}
			}
		}
		d := newDenseIndex(&w)
		n := 0
		for _, s := range d.sets {
			n += len(s.runs)
		}
		if n != runs {
			t.Errorf("%s: %d runs, want %d", c.name, n, runs)
		}
		if slots, most := d.slots(), uint64(len(w.dense))*min(c.stride, dirGap+1)+dirChunkLen; slots > most {
			t.Errorf("%s: %d slots for %d blocks, more than %d", c.name, slots, len(w.dense), most)
		}
		for k, in := range w.dense {
			if b := d.find(k); b != in.b {
				t.Fatalf("%s: find(%+v) = %p, want %p", c.name, k, b, in.b)
			}
			for _, o := range []blockKey{
				{k.id - 1, k.ns, k.bits}, {k.id + 1, k.ns, k.bits}, {k.id + dirGap/2, k.ns, k.bits},
				{k.id, k.ns + 1, k.bits}, {k.id, k.ns, k.bits + 1}, {k.id, k.ns, k.bits - 1},
			} {
				if w.dense[o] == nil && d.find(o) != nil {
					t.Fatalf("%s: find(%+v) finds a block, next to %+v", c.name, o, k)
				}
			}
		}
		t.Logf("%s: %d blocks in %d runs, %d slots", c.name, len(w.dense), n, d.slots())
	}
	var empty denseIndex[*srcEnt]
	if empty.find(blockKey{id: 1, bits: 56}) != nil {
		t.Error("an empty index finds a block")
	}
}

// indexed returns the blocks in the index of l.
func indexed[P entry](l *lpm[P]) []*block[P] {
	var bs []*block[P]
	for i := range l.dense.slots() {
		if b := l.dense.at(i); b != nil {
			bs = append(bs, b)
		}
	}
	return bs
}
