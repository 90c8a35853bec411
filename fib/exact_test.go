package fib

import (
	"maps"
	"math/rand/v2"
	"testing"
	"unsafe"
)

// checkExact compares an exact table with a map, entry by entry.
func checkExact(t *testing.T, x *exact[*srcEnt], want map[key]uint32) {
	t.Helper()
	if x.n != len(want) {
		t.Fatalf("n = %d, want %d", x.n, len(want))
	}
	for k, v := range want {
		if e := x.get(&k); e == nil || e.refs != v {
			t.Fatalf("get(%v) = %v, want %d", k, e, v)
		}
	}
	n := 0
	x.all(func(e *srcEnt) bool {
		if w, ok := want[e.key]; !ok || w != e.refs {
			t.Fatalf("all yields %v, want %d %v", e, w, ok)
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
	size := 10000
	if testing.Short() {
		size = 3000
	}
	exactRun(t, 0x9e3779b97f4a7c15, 0xbf58476d1ce4e5b9, size)
	// A degenerate hash: keys that differ only in hi all hash alike in their
	// top 32 bits, so buckets overflow instead of splitting.
	exactRun(t, 0, 1, size/10)
}

func exactRun(t *testing.T, s0, s1 uint64, size int) {
	r := rand.New(rand.NewPCG(1, 2))
	gen := uint64(1)
	x := newExact[*srcEnt](gen, s0, s1)
	want := map[key]uint32{}
	type frozen struct {
		x    *exact[*srcEnt]
		want map[key]uint32
	}
	var old []frozen
	most := 0
	newKey := func() key {
		// Consecutive-looking /56 keys, with some /128 and ports mixed in.
		k := key{hi: 0x20010db8<<32 | uint64(r.IntN(2*size))<<8}
		if r.IntN(8) == 0 {
			k.lo = r.Uint64()
		}
		k.port = uint16(r.IntN(3))
		return k
	}
	for step := range 6 * size {
		if step < 3*size || step%3 == 0 {
			k := newKey()
			_, existed := want[k]
			if old := x.put(&srcEnt{k, uint32(step)}); (old != nil) != existed {
				t.Fatalf("put replaced %v, want existed %v", old, existed)
			}
			want[k] = uint32(step)
			most = max(most, len(want))
		} else {
			var k key
			for k = range want {
				break
			}
			if r.IntN(4) == 0 {
				k = newKey()
			}
			v, existed := want[k]
			if got := x.del(&k); (got != nil) != existed || existed && got.refs != v {
				t.Fatalf("del = %v, want %d %v", got, v, existed)
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
	buckets, overflow := bucketStats(x)
	t.Logf("seeds %x %x: %d entries, directory %d, %d buckets, %d overflow buckets",
		s0, s1, x.n, 1<<x.depth, buckets, overflow)
	if 1<<x.depth > 2*(most+chunkLen) {
		t.Errorf("directory %d for at most %d entries", 1<<x.depth, most)
	}
}

// bucketStats counts the distinct buckets of a table and their overflow.
func bucketStats[P entry](x *exact[P]) (buckets, overflow int) {
	for i := uint64(0); i < 1<<x.depth; {
		b := x.bucket(i)
		_, n := x.span(i, b)
		buckets++
		for b = b.next; b != nil; b = b.next {
			overflow++
		}
		i += n
	}
	return buckets, overflow
}

func TestHashSpread(t *testing.T) {
	// Consecutive /56 prefixes, random seeds as NewTable draws them: the
	// buckets should be about as many as the entries need, none overflowing.
	const n = 1 << 16
	r := rand.New(rand.NewPCG(3, 4))
	for range 3 {
		x := newExact[*srcEnt](1, r.Uint64(), r.Uint64()|1)
		for i := range n {
			x.put(&srcEnt{key{hi: 0x20010db8<<32 | uint64(i)<<8}, 1})
		}
		buckets, overflow := bucketStats(x)
		if ideal := n / bucketSlots; buckets > 3*ideal || 1<<x.depth > 16*ideal || overflow > 0 {
			t.Errorf("%d buckets, %d overflow, directory %d for %d entries (ideal %d buckets)",
				buckets, overflow, 1<<x.depth, n, ideal)
		}
		t.Logf("%d buckets, directory %d", buckets, 1<<x.depth)
	}
}

func TestMatchTag(t *testing.T) {
	for _, tt := range []struct {
		w    uint64
		t    uint8
		want uint64
	}{
		{0, 1, 0},
		{0x0100000000000001, 1, 0x8000000000000080},
		{0x0101010101010101, 1, msb},
		{0x8001ff0001000000, 1, 0x0080000080000000}, // 0x01 above 0x00: no false match
		{0x00000000000000ff, 0xff, 0x80},
		{0xfefffefffefffeff, 0xff, 0x0080008000800080},
	} {
		if got := matchTag(tt.w, tt.t); got != tt.want {
			t.Errorf("matchTag(%#x, %#x) = %#x, want %#x", tt.w, tt.t, got, tt.want)
		}
	}
	for h := range uint64(1 << 12) {
		if tag(h<<24) == 0 {
			t.Fatalf("tag(%#x) = 0", h<<24)
		}
	}
}

// TestEntryLayout: the batch lookups read an entry's key through a plain
// pointer to its first field, and routes are 128 bytes so that the key
// and the fields the packet path reads share a cache line.
func TestEntryLayout(t *testing.T) {
	var r routeEnt
	var s srcEnt
	if unsafe.Offsetof(r.key) != 0 || unsafe.Offsetof(s.key) != 0 {
		t.Fatal("key is not the first field of the entries")
	}
	if unsafe.Sizeof(r) != 128 {
		t.Fatalf("routeEnt is %d bytes", unsafe.Sizeof(r))
	}
	if end := unsafe.Offsetof(r.Route) + unsafe.Offsetof(r.Route.Loop) + 1; end > 64 {
		t.Fatalf("Port, MAC and Loop end at byte %d of the entry", end)
	}
}
