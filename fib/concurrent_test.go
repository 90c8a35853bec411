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
// that does not fit the snapshot's generation.
func TestConcurrentReaders(t *testing.T) {
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
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
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
	t.Logf("%d snapshot checks", reads.Load())
}
