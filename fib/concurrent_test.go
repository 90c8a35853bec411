package fib

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentReaders runs readers against a writer that publishes
// continuously (run it with -race). Generation g of the table routes every
// prefix to port g and allows every source on port g only, and holds an
// extra set of prefixes exactly when g is even; a reader that ever saw a
// mixture of two generations in one snapshot would find a port or a count
// that does not fit the snapshot's generation. The dense block thresholds
// are 1, so that the writer makes, copies and drops blocks all the time,
// and the readers check the batch lookups too.
func TestConcurrentReaders(t *testing.T) {
	defer setThresholds(1, 1)()
	var prefixes, extra []netip.Prefix
	// Seven lengths, so that bart serves some of them.
	for i := range 140 {
		l := []int{40, 48, 52, 56, 60, 64, 128}[i%7]
		a := join128(0x20010db8<<32|uint64(i)<<24, uint64(i))
		p := netip.PrefixFrom(a, l).Masked()
		if i%2 == 0 {
			prefixes = append(prefixes, p)
		} else {
			extra = append(extra, p)
		}
	}
	tb := NewTable()
	f := tb.FIB()
	var stop atomic.Bool
	var wg sync.WaitGroup
	var reads atomic.Int64
	var addrs []*[16]byte
	for _, p := range prefixes {
		a := p.Addr().As16()
		addrs = append(addrs, &a)
	}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var fb Batch
			routes, hops, ok := make([]*Route, len(addrs)), make([]Hop, len(addrs)), make([]bool, len(addrs))
			last := uint64(0)
			for !stop.Load() {
				s := f.Load()
				if s == nil {
					continue
				}
				g := s.Gen()
				if g < last {
					t.Errorf("generation went back from %d to %d", last, g)
					return
				}
				last = g
				want := len(prefixes)
				if g%2 == 0 {
					want += len(extra)
				}
				if s.Len() != want {
					t.Errorf("gen %d: Len = %d, want %d", g, s.Len(), want)
					return
				}
				for i, p := range prefixes {
					r, ok := s.Lookup(p.Addr())
					if !ok || r.Port != PortID(g) {
						t.Errorf("gen %d: %v routed to %v %v", g, p, r, ok)
						return
					}
					if !s.SourceAllowed(PortID(g), p.Addr()) || s.SourceAllowed(PortID(g+1), p.Addr()) {
						t.Errorf("gen %d: source check for %v on the wrong port", g, p)
						return
					}
					if _, ok := s.Lookup(extra[i].Addr()); ok != (g%2 == 0) {
						t.Errorf("gen %d: extra %v found = %v", g, extra[i], ok)
						return
					}
				}
				fb.LookupHops(s, addrs, routes, hops)
				for i, r := range routes {
					if r == nil || r.Port != PortID(g) || hops[i].Port != PortID(g) {
						t.Errorf("gen %d: batch: %v routed to %v, hop %+v", g, prefixes[i], r, hops[i])
						return
					}
				}
				for _, port := range []PortID{PortID(g), PortID(g + 1)} {
					fb.SourceAllowedBatch(s, port, addrs, ok)
					for i, y := range ok {
						if y != (port == PortID(g)) {
							t.Errorf("gen %d: batch source check for %v on port %d: %v", g, prefixes[i], port, y)
							return
						}
					}
					fb.SourcesAndHops(s, port, addrs, ok, addrs, routes, hops)
					for i, y := range ok {
						if y != (port == PortID(g)) || routes[i] == nil || hops[i].Port != PortID(g) {
							t.Errorf("gen %d: fused batch for %v on port %d: %v %v %+v", g, prefixes[i], port, y, routes[i], hops[i])
							return
						}
					}
				}
				reads.Add(1)
			}
		}()
	}
	deadline := time.Now().Add(500 * time.Millisecond)
	if testing.Short() {
		deadline = time.Now().Add(100 * time.Millisecond)
	}
	for g := uint64(1); time.Now().Before(deadline) || g < 20; g++ {
		// Build generation g from generation g-1.
		for _, p := range prefixes {
			mustAdd(t, tb, Route{Prefix: p, Port: PortID(g)})
			tb.DeleteSource(PortID(g-1), p)
			tb.AddSource(PortID(g), p)
		}
		for _, p := range extra {
			if g%2 == 0 {
				mustAdd(t, tb, Route{Prefix: p, Port: PortID(g)})
			} else {
				tb.DeleteRoute(p)
			}
		}
		if s := tb.Publish(); s.Gen() != g {
			t.Fatalf("published gen %d, want %d", s.Gen(), g)
		}
	}
	stop.Store(true)
	wg.Wait()
	if len(tb.routes.dense.dense) == 0 {
		t.Error("no dense blocks")
	}
	t.Logf("%d snapshot checks, %d route blocks", reads.Load(), len(tb.routes.dense.dense))
}
