package bgp

import (
	"context"
	"net/netip"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
)

// BenchmarkStartTable measures the Speaker's start with n restored
// prefixes and no neighbour: building GoBGP's table, the part of a
// restart that comes before any session, and the heap it keeps (the
// Speaker's set and GoBGP's table).
func BenchmarkStartTable(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			var heap float64 // live heap after the start, per prefix
			for range b.N {
				b.StopTimer()
				s, err := New(testConfig(), nil)
				if err != nil {
					b.Fatal(err)
				}
				s.Restore(func(yield func(netip.Prefix) bool) {
					for i := range n {
						if !yield(benchPrefix(i)) {
							return
						}
					}
				})
				runtime.GC()
				var m0, m1 runtime.MemStats
				runtime.ReadMemStats(&m0)
				b.StartTimer()
				s.delegated = s.takeRestored()
				if err := s.start(true); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				runtime.GC()
				runtime.ReadMemStats(&m1)
				heap = float64(m1.HeapAlloc-m0.HeapAlloc) / float64(n)
				s.stop()
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "prefixes/s")
			b.ReportMetric(heap, "heap-B/prefix")
		})
	}
}

// BenchmarkApply measures one binding change from Sink until GoBGP's
// table has it (no neighbour), as Run applies it: the latency a single
// change adds before the UPDATE is written.
func BenchmarkApply(b *testing.B) {
	s, err := New(testConfig(), nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	waitFor(b, 5*time.Second, func() bool { return s.cur.Load() != nil }, func() string { return "not started" })
	b.ResetTimer()
	for i := range b.N {
		op := binding.Added
		if i&1 == 1 {
			op = binding.Removed
		}
		s.Sink([]binding.Change{{Op: op, Binding: binding.Binding{Key: binding.Key{Prefix: benchPrefix(i / 2)}}}})
		for s.stats.announces.Load()+s.stats.withdraws.Load() != uint64(i+1) {
			runtime.Gosched() // until GoBGP's table has it
		}
	}
}
