package fib

import (
	"maps"
	"math/rand/v2"
	"testing"
)

type ekey struct {
	hi, lo uint64
	port   uint16
}

// checkExact compares an exact table with a map, entry by entry.
func checkExact(t *testing.T, x *exact[int], want map[ekey]int) {
	t.Helper()
	if x.n != len(want) {
		t.Fatalf("n = %d, want %d", x.n, len(want))
	}
	for k, v := range want {
		if got, ok := x.get(k.hi, k.lo, k.port); !ok || got != v {
			t.Fatalf("get(%v) = %d %v, want %d", k, got, ok, v)
		}
	}
	n := 0
	x.all(func(hi, lo uint64, port uint16, v int) bool {
		if w, ok := want[ekey{hi, lo, port}]; !ok || w != v {
			t.Fatalf("all yields %x %x %d = %d, want %d %v", hi, lo, port, v, w, ok)
		}
		n++
		return true
	})
	if n != len(want) {
		t.Fatalf("all yields %d entries, want %d", n, len(want))
	}
}

// TestExact drives one exact table through growth (bucket splits and
// directory doubling) and shrinkage across generations, checking each
// frozen generation stays as it was.
func TestExact(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	gen := uint64(1)
	x := newExact[int](gen, r.Uint64(), r.Uint64()|1)
	want := map[ekey]int{}
	type frozen struct {
		x    *exact[int]
		want map[ekey]int
	}
	var old []frozen
	size := 20000
	if testing.Short() {
		size = 5000
	}
	key := func() ekey {
		// Sequential-looking /56 keys, with some /128 and ports mixed in.
		k := ekey{hi: 0x20010db8<<32 | uint64(r.IntN(2*size))<<8}
		if r.IntN(8) == 0 {
			k.lo = r.Uint64()
		}
		k.port = uint16(r.IntN(3))
		return k
	}
	for step := range 6 * size {
		grow := step < 3*size || step%3 == 0
		if grow {
			k := key()
			_, existed := want[k]
			if _, ok := x.put(k.hi, k.lo, k.port, step); ok != existed {
				t.Fatalf("put existed = %v, want %v", ok, existed)
			}
			want[k] = step
		} else {
			var k ekey
			for k = range want {
				break
			}
			if r.IntN(4) == 0 {
				k = key()
			}
			v, existed := want[k]
			if got, ok := x.del(k.hi, k.lo, k.port); ok != existed || ok && got != v {
				t.Fatalf("del = %d %v, want %d %v", got, ok, v, existed)
			}
			delete(want, k)
		}
		if step%(size/4) == 0 { // publish: freeze this generation
			checkExact(t, x, want)
			old = append(old, frozen{x, maps.Clone(want)})
			gen++
			x = x.clone(gen)
		}
	}
	checkExact(t, x, want)
	for _, f := range old {
		checkExact(t, f.x, f.want)
	}
	// The hash spreads sequential keys: no bucket far above the split
	// threshold, and a directory not much larger than needed.
	var most int
	for _, e := range x.dir {
		most = max(most, e.b.n)
	}
	if most > maxLoad(maxSlots) {
		t.Errorf("largest bucket holds %d entries", most)
	}
	t.Logf("%d entries, directory %d, largest bucket %d", x.n, len(x.dir), most)
}

// fill puts n consecutive /56 prefixes into a table with the given seeds
// and returns the number of buckets.
func fill(t *testing.T, s0, s1 uint64, n int) (*exact[int], int) {
	x := newExact[int](1, s0, s1)
	for i := range n {
		x.put(0x20010db8<<32|uint64(i)<<8, 0, 0, i)
	}
	buckets := 0
	for i := uint64(0); i < uint64(len(x.dir)); {
		_, w := x.span(i)
		buckets++
		i += w
	}
	for i := range n {
		if v, ok := x.get(0x20010db8<<32|uint64(i)<<8, 0, 0); !ok || v != i {
			t.Fatalf("entry %d lost", i)
		}
	}
	return x, buckets
}

func TestHashSpread(t *testing.T) {
	// Consecutive /56 prefixes, random seeds as NewTable draws them: the
	// buckets should be about as many as the entries need.
	const n = 1 << 16
	ideal := n / maxLoad(maxSlots)
	r := rand.New(rand.NewPCG(3, 4))
	for range 3 {
		x, buckets := fill(t, r.Uint64(), r.Uint64()|1, n)
		if buckets > 4*ideal || len(x.dir) > 16*ideal {
			t.Errorf("%d buckets, directory %d for %d entries (ideal %d buckets)", buckets, len(x.dir), n, ideal)
		}
		t.Logf("%d buckets, directory %d, depth %d", buckets, len(x.dir), x.depth)
	}
	// Degenerate seeds that leave the top hash bits constant: lookups get
	// slower but the table stays correct and the directory stays bounded.
	x, buckets := fill(t, 0, 1, n)
	if len(x.dir) > 64+n/8 {
		t.Errorf("degenerate hash: directory %d for %d entries", len(x.dir), n)
	}
	t.Logf("degenerate: %d buckets, directory %d", buckets, len(x.dir))
}
