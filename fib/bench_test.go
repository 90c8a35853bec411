package fib

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gaissmai/bart"
)

// A delegation plan like an ISP's: pools of /56, /60, /48 and /64 prefixes.
var benchPools = []struct {
	base   uint64 // top 64 bits of the pool
	pool   int    // pool length
	bits   int    // delegated length
	weight int    // percent of the prefixes
}{
	{0x20010db8_10000000, 36, 56, 70},
	{0x20010db8_20000000, 36, 60, 20},
	{0x20010dba_00000000, 31, 48, 8},
	{0x20010db8_30000000, 36, 64, 2},
}

// benchPrefix draws a random delegated prefix from the plan.
func benchPrefix(r *rand.Rand) netip.Prefix {
	w := r.IntN(100)
	for _, p := range benchPools {
		if w -= p.weight; w < 0 {
			n := r.Uint64N(1 << (p.bits - p.pool))
			return netip.PrefixFrom(join128(p.base|n<<(64-p.bits), 0), p.bits)
		}
	}
	panic("weights")
}

// benchMiss draws an address inside the pools that no prefix covers.
func benchMiss(r *rand.Rand, bt *bart.Table[*Route]) netip.Addr {
	for {
		p := benchPools[r.IntN(len(benchPools))]
		a := join128(p.base|r.Uint64()>>p.pool, r.Uint64())
		if _, ok := bt.Lookup(a); !ok {
			return a
		}
	}
}

type fixture struct {
	tb                            *Table
	snap                          *Snapshot
	bt                            *bart.Table[*Route]
	prefixes                      []netip.Prefix
	hits                          []netip.Addr // 64k addresses inside random routes
	misses                        []netip.Addr // 64k addresses inside the pools, outside all routes
	ports                         []PortID     // port of each hit
	r                             *rand.Rand
	fibBytes, srcBytes, bartBytes uint64
}

var (
	fixtureMu sync.Mutex
	fixtures  = map[int]*fixture{}
)

func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// getFixture builds (once per size) a table of n routes and sources, the
// same routes in a plain bart table, and addresses to look up.
func getFixture(b *testing.B, n int) *fixture {
	fixtureMu.Lock()
	defer fixtureMu.Unlock()
	if f := fixtures[n]; f != nil {
		return f
	}
	start := time.Now()
	f := &fixture{r: rand.New(rand.NewPCG(uint64(n), 7)), tb: NewTable(), bt: new(bart.Table[*Route])}
	seen := make(map[netip.Prefix]bool, n)
	for len(f.prefixes) < n {
		p := benchPrefix(f.r)
		if !seen[p] {
			seen[p] = true
			f.prefixes = append(f.prefixes, p)
		}
	}
	seen = nil
	h0 := heap()
	for i, p := range f.prefixes {
		r := Route{Prefix: p, Port: PortID(i % 64), NextHop: join128(0xfe80<<48, uint64(i))}
		if err := f.tb.AddRoute(r); err != nil {
			b.Fatal(err)
		}
	}
	f.snap = f.tb.Publish()
	h1 := heap()
	for i, p := range f.prefixes {
		f.tb.AddSource(PortID(i%64), p)
	}
	f.snap = f.tb.Publish()
	h2 := heap()
	for r := range f.snap.Routes() {
		f.bt.Insert(r.Prefix, r)
	}
	h3 := heap()
	f.fibBytes, f.srcBytes, f.bartBytes = h1-h0, h2-h1, h3-h2
	for range 1 << 16 {
		i := f.r.IntN(n)
		f.hits = append(f.hits, f.near(f.prefixes[i]))
		f.ports = append(f.ports, PortID(i%64))
		f.misses = append(f.misses, benchMiss(f.r, f.bt))
	}
	b.Logf("fixture %d: built in %v", n, time.Since(start).Round(time.Millisecond))
	fixtures[n] = f
	return f
}

// near returns a random address inside p.
func (f *fixture) near(p netip.Prefix) netip.Addr {
	hi, lo := split128(p.Addr())
	mhi, mlo := masks(p.Bits())
	return join128(hi|f.r.Uint64()&^mhi, lo|f.r.Uint64()&^mlo)
}

var benchSizes = []struct {
	name string
	n    int
}{{"1k", 1_000}, {"100k", 100_000}, {"1M", 1_000_000}}

var sinkRoute *Route

// BenchmarkLookup compares Snapshot.Lookup with a plain bart.Table lookup
// on the same prefixes and addresses (64k distinct addresses per case).
func BenchmarkLookup(b *testing.B) {
	for _, kind := range []string{"hit", "miss"} {
		for _, sz := range benchSizes {
			b.Run(kind+"/"+sz.name, func(b *testing.B) {
				f := getFixture(b, sz.n)
				addrs := f.hits
				if kind == "miss" {
					addrs = f.misses
				}
				bytes := make([][16]byte, len(addrs))
				for i, a := range addrs {
					bytes[i] = a.As16()
				}
				s := f.snap
				b.Run("fib", func(b *testing.B) {
					b.ReportAllocs()
					var r *Route
					for i := 0; b.Loop(); i++ {
						r, _ = s.Lookup(addrs[i&0xffff])
					}
					sinkRoute = r
				})
				b.Run("fib-bytes", func(b *testing.B) {
					b.ReportAllocs()
					var r *Route
					for i := 0; b.Loop(); i++ {
						r, _ = s.LookupBytes(&bytes[i&0xffff])
					}
					sinkRoute = r
				})
				b.Run("bart", func(b *testing.B) {
					b.ReportAllocs()
					var r *Route
					for i := 0; b.Loop(); i++ {
						r, _ = f.bt.Lookup(addrs[i&0xffff])
					}
					sinkRoute = r
				})
			})
		}
	}
}

var sinkBool bool

func BenchmarkSourceAllowed(b *testing.B) {
	for _, kind := range []string{"hit", "miss"} {
		for _, sz := range benchSizes {
			b.Run(kind+"/"+sz.name, func(b *testing.B) {
				f := getFixture(b, sz.n)
				addrs := f.hits
				ports := f.ports
				if kind == "miss" { // the right port, a spoofed address
					addrs = f.misses
				}
				s := f.snap
				b.ReportAllocs()
				var ok bool
				for i := 0; b.Loop(); i++ {
					ok = s.SourceAllowed(ports[i&0xffff], addrs[i&0xffff])
				}
				sinkBool = ok
			})
		}
	}
}

// BenchmarkPublish measures binding changes per second: each operation
// ends batch/2 bindings and starts batch/2 new ones, each change being a
// route and a source-filter update, and then publishes.
func BenchmarkPublish(b *testing.B) {
	for _, sz := range benchSizes {
		for _, batch := range []int{10, 1000} {
			b.Run(fmt.Sprintf("%s/batch=%d", sz.name, batch), func(b *testing.B) {
				f := getFixture(b, sz.n)
				tb, r := f.tb, f.r
				b.ReportAllocs()
				start := time.Now()
				for b.Loop() {
					for range batch / 2 {
						i := r.IntN(len(f.prefixes))
						old, port := f.prefixes[i], PortID(i%64)
						tb.DeleteRoute(old)
						tb.DeleteSource(port, old)
						p := benchPrefix(r)
						if _, ok := tb.Route(p); ok {
							p = old // taken: keep the old one
						}
						tb.AddRoute(Route{Prefix: p, Port: port})
						tb.AddSource(port, p)
						f.prefixes[i] = p
					}
					tb.Publish()
				}
				b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "changes/s")
			})
		}
	}
}

// BenchmarkMemory reports heap bytes per route for the fib routes, the
// source filters, and a plain bart table of the same routes (measured while
// building the fixture).
func BenchmarkMemory(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			f := getFixture(b, sz.n)
			for b.Loop() {
			}
			n := float64(sz.n)
			b.ReportMetric(float64(f.fibBytes)/n, "fib-B/route")
			b.ReportMetric(float64(f.srcBytes)/n, "src-B/entry")
			b.ReportMetric(float64(f.bartBytes)/n, "bart-B/route")
		})
	}
}
