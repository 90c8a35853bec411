package kroute

import (
	"fmt"
	"iter"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/internal/nstest"
)

// Benchmarks of the kernel side, root only, each in a namespace of its
// own (two veth downlinks, up); the commands and figures are in doc.go.
// Program100k's pipelined and serial runs are best alternated, one of
// each at a time, on a shared machine.
//
// Every route has a next hop of its own with a known MAC (one client a
// prefix, as on a point-to-point access port), so each route comes with
// a neighbour entry: 100k routes are 200k changes.

// serialKernel writes one change at a time, each its own request and
// ack, as netlink.RouteReplace and netlink.NeighSet do: the baseline of
// the pipelined writes.
type serialKernel struct{ *nlKernel }

func (k serialKernel) write(ops []op) error {
	for i := range ops {
		if err := k.nlKernel.write(ops[i : i+1]); err != nil {
			return err
		}
	}
	return nil
}

// benchRouter returns a Router in a new namespace with ports dl0 and
// dl1, writing serially if asked.
func benchRouter(b testing.TB, serial bool) *Router {
	b.Helper()
	nstest.RequireRoot(b)
	ns := nstest.NewNS(b, nsPrefix, "bench")
	for i := range 2 {
		nstest.Run(b, "ip", "-n", ns, "link", "add", fmt.Sprintf("dl%d", i), "type", "veth", "peer", "name", fmt.Sprintf("cl%d", i))
		nstest.Run(b, "ip", "-n", ns, "link", "set", fmt.Sprintf("dl%d", i), "up")
		nstest.Run(b, "ip", "-n", ns, "link", "set", fmt.Sprintf("cl%d", i), "up")
	}
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	r, err := New(Config{NetNS: int(f.Fd()), Check: -1, Ports: []string{"dl0", "dl1"}})
	if err != nil {
		b.Fatal(err)
	}
	if serial {
		r.k = serialKernel{r.k.(*nlKernel)}
	}
	b.Cleanup(func() { r.Close() })
	return r
}

// benchRoute is the i-th route: a /56 of 2001:db8::/32 (i < 2^24) via
// a next hop and MAC of its own, on alternate ports.
func benchRoute(i int) Route {
	return Route{
		Prefix:  netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 16), byte(i >> 8), byte(i)}), 56),
		Port:    []string{"dl0", "dl1"}[i&1],
		NextHop: netip.AddrFrom16([16]byte{0xfe, 0x80, 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}),
		MAC:     [6]byte{0x02, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)},
	}
}

func benchRoutes(from, n int) iter.Seq[Route] {
	return func(yield func(Route) bool) {
		for i := from; i < from+n; i++ {
			if !yield(benchRoute(i)) {
				return
			}
		}
	}
}

// reconcile runs Run's steps until the reconcile is done.
func reconcile(b testing.TB, r *Router) {
	for !r.Reconciled() {
		if _, err := r.step(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProgram100k: a start with 100k restored routes and an empty
// kernel (the first start, or after a reboot), from Restore until the
// reconcile has written every route and neighbour entry; pipelined, and
// one request and ack per change as the baseline.
func BenchmarkProgram100k(b *testing.B) {
	const n = 100_000
	for _, serial := range []bool{false, true} {
		name := map[bool]string{false: "pipelined", true: "serial"}[serial]
		b.Run(name, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				r := benchRouter(b, serial)
				b.StartTimer()
				start := time.Now()
				r.Restore(benchRoutes(0, n))
				reconcile(b, r)
				took := time.Since(start)
				b.StopTimer()
				if s := r.Stats(); s.RoutesWritten != n || s.NeighsWritten != n || r.Waiting() != 0 {
					b.Fatalf("%+v, waiting %d", s, r.Waiting())
				}
				b.ReportMetric(took.Seconds(), "s/100k")
				b.ReportMetric(n/took.Seconds(), "routes/s")
				b.ReportMetric(2*n/took.Seconds(), "changes/s")
				r.Close()
				b.StartTimer()
			}
		})
	}
}

// BenchmarkReconcile100k: a restart, the kernel holding the 100k routes
// and entries the previous run wrote: the reconcile reads them back and
// writes nothing.
func BenchmarkReconcile100k(b *testing.B) {
	const n = 100_000
	r := benchRouter(b, false)
	r.Restore(benchRoutes(0, n))
	reconcile(b, r)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		again, err := newRouter(Config{Check: -1, Ports: []string{"dl0", "dl1"}})
		if err != nil {
			b.Fatal(err)
		}
		again.k = r.k
		again.lookupLinks()
		b.StartTimer()
		start := time.Now()
		again.Restore(benchRoutes(0, n))
		reconcile(b, again)
		took := time.Since(start)
		if s := again.Stats(); s.RoutesWritten+s.NeighsWritten+s.RoutesRemoved+s.NeighsRemoved != 0 {
			b.Fatalf("a restart wrote %+v", s)
		}
		b.ReportMetric(took.Seconds(), "s/100k")
	}
}

// BenchmarkBatch: one Flush of 1,000 binding changes (new routes, each
// with its entry; and their removal the next time), and of one, into an
// empty table and into one of 100k.
func BenchmarkBatch(b *testing.B) {
	for _, c := range []struct{ size, changes int }{{0, 1}, {0, 1000}, {100_000, 1}, {100_000, 1000}} {
		size, changes := c.size, c.changes
		b.Run(fmt.Sprintf("table=%d/changes=%d", size, changes), func(b *testing.B) {
			r := benchRouter(b, false)
			if size > 0 {
				r.Restore(benchRoutes(0, size))
			}
			reconcile(b, r)
			b.ResetTimer()
			for i := range b.N {
				for rt := range benchRoutes(size, changes) {
					if i%2 == 0 {
						r.Add(rt)
					} else {
						r.Delete(rt.Prefix, rt.Port)
					}
				}
				if err := r.Flush(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(changes), "ns/binding")
		})
	}
}

// BenchmarkCheck100k: one periodic check with 100k routes in place: read
// the downlinks and the routes back, compare, nothing to write.
func BenchmarkCheck100k(b *testing.B) {
	r := benchRouter(b, false)
	r.Restore(benchRoutes(0, 100_000))
	reconcile(b, r)
	b.ResetTimer()
	for range b.N {
		if err := r.checkKernel(false); err != nil {
			b.Fatal(err)
		}
		if busy, err := r.step(); busy || err != nil {
			b.Fatalf("a check of an unchanged kernel left work: %v", err)
		}
	}
}
