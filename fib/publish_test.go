package fib

import (
	"net/netip"
	"runtime"
	"testing"
)

// TestPublishCost: a Publish copies what its batch changed, not the
// table. Two changes and a Publish allocate about as many bytes in a
// table 64 times larger (16 times with -short): dense blocks (the /56
// pool) and hashed buckets (the /60s, too sparse for blocks) are copied
// on first write per generation, not cloned whole.
func TestPublishCost(t *testing.T) {
	small, large := 4096, 1<<18
	if testing.Short() {
		large = 1 << 16
	}
	bytesSmall := publishBytes(t, small)
	bytesLarge := publishBytes(t, large)
	t.Logf("bytes a Publish of two changes allocates: %d at %d routes, %d at %d", bytesSmall, 2*small, bytesLarge, 2*large)
	if bytesLarge > 2*bytesSmall+4096 {
		t.Errorf("a Publish of two changes allocates %d bytes in a table of %d routes, %d in one of %d: it copies in proportion to the table",
			bytesLarge, 2*large, bytesSmall, 2*small)
	}
}

// publishBytes fills a table with n /56 routes and sources and n /60
// routes, then returns the bytes allocated by a Publish after two
// changes, on average.
func publishBytes(t *testing.T, n int) uint64 {
	p56 := func(i int) netip.Prefix { return netip.PrefixFrom(join128(0x20010db8<<32|uint64(i)<<8, 0), 56) }
	p60 := func(i int) netip.Prefix { return netip.PrefixFrom(join128(0x20010db9<<32|uint64(i)*7919<<4, 0), 60) }
	tb := NewTable()
	for i := range n {
		mustAdd(t, tb, Route{Prefix: p56(i), Port: 1})
		if err := tb.AddSource(1, p56(i)); err != nil {
			t.Fatal(err)
		}
		mustAdd(t, tb, Route{Prefix: p60(i), Port: 2})
	}
	tb.Publish()
	if s := tb.Publish(); len(indexed(&s.routes)) == 0 || len(indexed(&s.src)) == 0 {
		t.Fatal("no dense blocks: the test would not cover their copies")
	}
	const rounds = 50
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range rounds {
		mustAdd(t, tb, Route{Prefix: p56(i * 37 % n), Port: PortID(i % 3)})
		mustAdd(t, tb, Route{Prefix: p60(i * 101 % n), Port: PortID(i % 3)})
		tb.Publish()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / rounds
}
