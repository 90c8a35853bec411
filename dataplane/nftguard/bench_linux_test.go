package nftguard

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/internal/nstest"
)

// Benchmarks of the kernel side, root only, each in a namespace of its
// own:
//
//	go test -run '^$' -bench Fill1M -benchtime 1x ./dataplane/nftguard/
//	go test -run '^$' -bench Batch ./dataplane/nftguard/

// benchGuard returns a Guard in a new namespace, on two ports.
func benchGuard(b *testing.B) *Guard {
	b.Helper()
	nstest.RequireRoot(b)
	ns := nstest.NewNS(b, nsPrefix, "bench")
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	g, err := New(Config{NetNS: int(f.Fd()), Check: -1, Ports: []Port{{Name: "dl0"}, {Name: "dl1"}}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { g.Close() })
	return g
}

// prefix56 is the i-th /56 of 2001:db8::/32 (i < 2^24).
func prefix56(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 16), byte(i >> 8), byte(i)}), 56)
}

// slabKB is the kernel's slab memory (/proc/meminfo Slab), where set
// elements live.
func slabKB(b *testing.B) int {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Slab:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	b.Fatal("no Slab in /proc/meminfo")
	return 0
}

// BenchmarkFill1M: a restart's fill, 1M /56 bindings on two ports (one
// set each), from Restore until every source is in the kernel. Reports
// the kernel's slab growth and the Guard's heap per source.
func BenchmarkFill1M(b *testing.B) {
	const n = 1_000_000
	for range b.N {
		b.StopTimer()
		g := benchGuard(b)
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		slab0 := slabKB(b)
		b.StartTimer()
		start := time.Now()
		g.Restore(func(yield func(string, netip.Prefix) bool) {
			for i := range n {
				if !yield([]string{"dl0", "dl1"}[i&1], prefix56(i)) {
					return
				}
			}
		})
		steps := 0
		for !g.Filled() {
			if _, err := g.step(); err != nil {
				b.Fatal(err)
			}
			steps++
		}
		took := time.Since(start)
		b.StopTimer()
		if g.broken || g.Len() != n {
			b.Fatalf("fill: broken %v, %d sources", g.broken, g.Len())
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		b.ReportMetric(took.Seconds(), "s/fill")
		b.ReportMetric(float64(slabKB(b)-slab0)/1024, "kernel-MiB")
		b.ReportMetric(float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc))/n, "heap-B/source")
		b.ReportMetric(float64(steps), "transactions")
		g.Close()
		b.StartTimer()
	}
}

// BenchmarkBatch: one Flush of 1,000 binding changes (new /56s on
// alternate ports), and of their removal the next time, into an empty
// table and into one holding 1M sources; and of one change, the cost of
// a transaction itself.
func BenchmarkBatch(b *testing.B) {
	for _, c := range []struct{ size, changes int }{{0, 1}, {0, 1000}, {1_000_000, 1}, {1_000_000, 1000}} {
		size, changes := c.size, c.changes
		b.Run(fmt.Sprintf("table=%d/changes=%d", size, changes), func(b *testing.B) {
			g := benchGuard(b)
			if size > 0 {
				g.Restore(func(yield func(string, netip.Prefix) bool) {
					for i := range size {
						if !yield([]string{"dl0", "dl1"}[i&1], prefix56(i)) {
							return
						}
					}
				})
				for !g.Filled() {
					if _, err := g.step(); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ResetTimer()
			for i := range b.N {
				add := i%2 == 0
				for j := range changes {
					port, p := []string{"dl0", "dl1"}[j&1], prefix56(size+j)
					if add {
						g.Add(port, p)
					} else {
						g.Delete(port, p)
					}
				}
				if err := g.Flush(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if g.broken {
				b.Fatal("broken")
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(changes), "ns/change")
		})
	}
}
