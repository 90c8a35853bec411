package fib

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
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
	foreign                       []netip.Addr // 64k addresses outside the pools (upstream traffic)
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
		f.foreign = append(f.foreign, join128(0x2a000000<<32|f.r.Uint64()>>8, f.r.Uint64()))
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

// benchBatch is the batch size of the batch benchmarks: the plane's.
const benchBatch = 64

var benchSizes = []struct {
	name string
	n    int
}{{"1k", 1_000}, {"100k", 100_000}, {"1M", 1_000_000}}

var (
	sinkPort PortID
	sinkBool bool
)

// lookupCases are the address sets of the lookup benchmarks.
func lookupCases(f *fixture) []struct {
	name  string
	addrs []netip.Addr
} {
	return []struct {
		name  string
		addrs []netip.Addr
	}{{"hit", f.hits}, {"miss", f.misses}, {"foreign", f.foreign}}
}

// BenchmarkLookup compares Snapshot.Lookup and LookupBytes with a plain
// bart.Table lookup on the same prefixes and addresses. Each case cycles
// through 64k random addresses, so at 1M routes most lookups miss the CPU
// caches (memory-bound); BenchmarkLookupHot is the cache-resident case.
// hit: inside a route; miss: inside the delegation pools but no route;
// foreign: outside the pools (an upstream packet to the Internet).
func BenchmarkLookup(b *testing.B) { benchLookup(b, 0xffff) }

// BenchmarkLookupHot is BenchmarkLookup cycling through 16 addresses, as
// bart's own benchmarks do: it measures the instructions, not the memory.
func BenchmarkLookupHot(b *testing.B) { benchLookup(b, 15) }

func benchLookup(b *testing.B, mask int) {
	for _, c := range []string{"hit", "miss", "foreign"} {
		for _, sz := range benchSizes {
			b.Run(c+"/"+sz.name, func(b *testing.B) {
				f := getFixture(b, sz.n)
				var addrs []netip.Addr
				for _, lc := range lookupCases(f) {
					if lc.name == c {
						addrs = lc.addrs
					}
				}
				bytes := make([][16]byte, len(addrs))
				for i, a := range addrs {
					bytes[i] = a.As16()
				}
				s := f.snap
				// Each lookup reads the port of the route it finds, as the
				// dataplane would: a route not yet in cache costs the same
				// to both tables.
				b.Run("fib", func(b *testing.B) {
					b.ReportAllocs()
					var port PortID
					for i := 0; b.Loop(); i++ {
						if r, ok := s.Lookup(addrs[i&mask]); ok {
							port += r.Port
						}
					}
					sinkPort = port
				})
				b.Run("fib-bytes", func(b *testing.B) { benchLookupBytes(b, s, bytes, mask) })
				// fib-batch: LookupBatch over batches of 64, as a worker
				// holds them; ns/op is per lookup.
				b.Run("fib-batch", func(b *testing.B) { benchBatchLookup(b, s, bytes, mask) })
				b.Run("fib-hops", func(b *testing.B) { benchHopsLookup(b, s, bytes, mask) })
				b.Run("bart", func(b *testing.B) { benchBart(b, f.bt, addrs, mask) })
			})
		}
	}
}

// BenchmarkSourceAllowed checks sources against the port's filter: hit is a
// source inside a prefix of the port, miss a spoofed source inside the pools.
func BenchmarkSourceAllowed(b *testing.B) {
	for _, kind := range []string{"hit", "miss"} {
		for _, sz := range benchSizes {
			b.Run(kind+"/"+sz.name, func(b *testing.B) {
				f := getFixture(b, sz.n)
				addrs := f.hits
				if kind == "miss" {
					addrs = f.misses
				}
				s := f.snap
				b.Run("single", func(b *testing.B) {
					b.ReportAllocs()
					var ok bool
					for i := 0; b.Loop(); i++ {
						ok = s.SourceAllowed(f.ports[i&0xffff], addrs[i&0xffff])
					}
					sinkBool = ok
				})
				// batch: SourceAllowedBatch over batches of 64 from one
				// port, as a worker holds them; ns/op is per check.
				b.Run("batch", func(b *testing.B) {
					var ports [64][]*[16]byte // the addresses by port
					for i, a := range addrs {
						b := a.As16()
						ports[f.ports[i]] = append(ports[f.ports[i]], &b)
					}
					var ok [benchBatch]bool
					bt := new(Batch)
					b.ReportAllocs()
					n := 0
					for i := 0; b.Loop(); i++ {
						if i%benchBatch != 0 {
							continue
						}
						port := (i / benchBatch) % 64
						ps := ports[port]
						k := (i / benchBatch / 64 * benchBatch) % (len(ps) - benchBatch)
						bt.SourceAllowedBatch(s, PortID(port), ps[k:k+benchBatch], ok[:])
						for _, y := range ok {
							if y {
								n++
							}
						}
					}
					sinkBool = n > 0
				})
			})
		}
	}
}

// BenchmarkPublish measures changes published per second at a steady
// table size: each operation makes batch changes and publishes once.
// route: a change is one DeleteRoute or AddRoute (half end an old route,
// half add a new one); binding: a change is a binding ending or starting,
// that is a route and a source-filter change together.
func BenchmarkPublish(b *testing.B) {
	for _, kind := range []string{"route", "binding"} {
		for _, sz := range benchSizes {
			for _, batch := range []int{10, 1000} {
				b.Run(fmt.Sprintf("%s/%s/batch=%d", kind, sz.name, batch), func(b *testing.B) {
					f := getFixture(b, sz.n)
					tb, r := f.tb, f.r
					b.ReportAllocs()
					start := time.Now()
					for b.Loop() {
						for range batch / 2 {
							i := r.IntN(len(f.prefixes))
							old, port := f.prefixes[i], PortID(i%64)
							p := benchPrefix(r)
							if _, ok := tb.Route(p); ok {
								p = old // taken: put the old one back
							}
							tb.DeleteRoute(old)
							tb.AddRoute(Route{Prefix: p, Port: port})
							if kind == "binding" {
								tb.DeleteSource(port, old)
								tb.AddSource(port, p)
							}
							f.prefixes[i] = p
						}
						tb.Publish()
					}
					b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "changes/s")
				})
			}
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

// BenchmarkLookupOneLength is the plan where every delegation is a /56 (1M
// of them in one /36, so dense blocks cover it): cold cycles through 64k
// random addresses, hot through 16, as in BenchmarkLookup and
// BenchmarkLookupHot; miss is inside the /36.
func BenchmarkLookupOneLength(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	tb, bt := NewTable(), new(bart.Table[*Route])
	var ps []netip.Prefix
	for len(ps) < 1_000_000 {
		p := netip.PrefixFrom(join128(0x20010db8_10000000|r.Uint64N(1<<20)<<8, 0), 56)
		if _, ok := tb.Route(p); !ok {
			tb.AddRoute(Route{Prefix: p, Port: 1})
			ps = append(ps, p)
		}
	}
	s := tb.Publish()
	for r := range s.Routes() {
		bt.Insert(r.Prefix, r)
	}
	const n = 1 << 16
	for _, kind := range []string{"hit", "miss"} {
		addrs := make([]netip.Addr, n)
		bytes := make([][16]byte, n)
		for i := range addrs {
			for {
				addrs[i] = join128(0x20010db8_10000000|r.Uint64()>>36, r.Uint64())
				if kind == "hit" {
					hi, _ := split128(ps[r.IntN(len(ps))].Addr())
					addrs[i] = join128(hi|r.Uint64()&0xff, r.Uint64())
				}
				if _, ok := s.Lookup(addrs[i]); ok == (kind == "hit") {
					break
				}
			}
			bytes[i] = addrs[i].As16()
		}
		for _, c := range []struct {
			name string
			mask int
		}{{"", n - 1}, {"-hot", 15}} {
			mask := c.mask
			b.Run(kind+c.name+"/1M/fib-bytes", func(b *testing.B) { benchLookupBytes(b, s, bytes, mask) })
			b.Run(kind+c.name+"/1M/fib-batch", func(b *testing.B) { benchBatchLookup(b, s, bytes, mask) })
			b.Run(kind+c.name+"/1M/fib-hops", func(b *testing.B) { benchHopsLookup(b, s, bytes, mask) })
			b.Run(kind+c.name+"/1M/bart", func(b *testing.B) { benchBart(b, bt, addrs, mask) })
		}
	}
}

// benchBart runs plain bart's Lookup over addrs[:mask+1] in turn, reading
// the port of each route found: the baseline of the fib benchmarks.
func benchBart(b *testing.B, bt *bart.Table[*Route], addrs []netip.Addr, mask int) {
	b.ReportAllocs()
	var port PortID
	for i := 0; b.Loop(); i++ {
		if r, ok := bt.Lookup(addrs[i&mask]); ok {
			port += r.Port
		}
	}
	sinkPort = port
}

// benchLookupBytes runs LookupBytes over addrs[:mask+1] in turn, reading
// the port of each route found.
func benchLookupBytes(b *testing.B, s *Snapshot, addrs [][16]byte, mask int) {
	b.ReportAllocs()
	var port PortID
	for i := 0; b.Loop(); i++ {
		if r, ok := s.LookupBytes(&addrs[i&mask]); ok {
			port += r.Port
		}
	}
	sinkPort = port
}

// benchBatchLookup runs Batch.LookupBatch over batches of 64 of the
// addresses (cycling through addrs[:mask+1]), as a worker holds them,
// reading the port of each route found; ns/op is per lookup.
func benchBatchLookup(b *testing.B, s *Snapshot, addrs [][16]byte, mask int) {
	benchBatches(b, addrs, mask, func(fb *Batch, dsts []*[16]byte, routes []*Route, _ []Hop) (port PortID) {
		fb.LookupBatch(s, dsts, routes)
		for _, r := range routes {
			if r != nil {
				port += r.Port
			}
		}
		return port
	})
}

// benchHopsLookup is benchBatchLookup with Batch.LookupHops, reading the
// port of each hop found (as forwarding does) instead of the route's.
func benchHopsLookup(b *testing.B, s *Snapshot, addrs [][16]byte, mask int) {
	benchBatches(b, addrs, mask, func(fb *Batch, dsts []*[16]byte, routes []*Route, hops []Hop) (port PortID) {
		fb.LookupHops(s, dsts, routes, hops)
		for _, h := range hops {
			port += h.Port
		}
		return port
	})
}

// benchBatches runs look over batches of 64 of the addresses (cycling
// through addrs[:mask+1]) with one Batch, as a dataplane worker keeps.
func benchBatches(b *testing.B, addrs [][16]byte, mask int, look func(fb *Batch, dsts []*[16]byte, routes []*Route, hops []Hop) PortID) {
	ptrs := make([]*[16]byte, len(addrs))
	for i := range ptrs {
		ptrs[i] = &addrs[i&mask]
	}
	var routes [benchBatch]*Route
	var hops [benchBatch]Hop
	fb := new(Batch)
	b.ReportAllocs()
	var port PortID
	for i := 0; b.Loop(); i++ {
		if i%benchBatch != 0 {
			continue
		}
		k := i & (len(ptrs) - 1)
		port += look(fb, ptrs[k:k+benchBatch], routes[:], hops[:])
	}
	sinkPort = port
}

// BenchmarkDRAM is the machine's memory as the cold lookups meet it, for
// reading the figures above: chase is one dependent load after another
// (each waits for the last: the latency of a miss), independent is loads
// whose addresses are known in advance (the CPU overlaps them: the
// throughput of misses), both over 256 MiB at random.
func BenchmarkDRAM(b *testing.B) {
	const n = 1 << 25 // uint64s: 256 MiB
	next := make([]uint64, n)
	perm := rand.New(rand.NewPCG(9, 9)).Perm(n)
	for i := range n {
		next[perm[i]] = uint64(perm[(i+1)%n]) // one cycle through all
	}
	b.ResetTimer()
	b.Run("chase", func(b *testing.B) {
		x := uint64(0)
		for b.Loop() {
			x = next[x]
		}
		sinkPort = PortID(x)
	})
	b.Run("independent", func(b *testing.B) {
		idx := perm[:1<<16]
		s := uint64(0)
		for i := 0; b.Loop(); i++ {
			s += next[idx[i&(1<<16-1)]]
		}
		sinkPort = PortID(s)
	})
}

// BenchmarkLookupByPool is BenchmarkLookup's cold fib-hops case at 1M
// routes with the hit addresses of some pools of the plan only: each pool
// alone, then mixes without some. A pool's cost alone and its cost in the
// mix differ: in a batch, the pools take different steps (the /64s, too
// sparse for blocks, are hashed), and a batch waits for its slowest.
func BenchmarkLookupByPool(b *testing.B) {
	f := getFixture(b, 1_000_000)
	type set struct {
		name string
		bits []int // the pools' delegated lengths
	}
	sets := []set{{"all", []int{56, 60, 48, 64}}, {"no-60", []int{56, 48, 64}}, {"56+48", []int{56, 48}}, {"56+64", []int{56, 64}}}
	for _, p := range benchPools {
		sets = append(sets, set{fmt.Sprintf("%d-only", p.bits), []int{p.bits}})
	}
	for _, s := range sets {
		var addrs [][16]byte
		for _, a := range f.hits {
			hi, _ := split128(a)
			for _, p := range benchPools {
				if hi>>(64-p.pool) == p.base>>(64-p.pool) && slices.Contains(s.bits, p.bits) {
					addrs = append(addrs, a.As16())
				}
			}
		}
		n := 1 << (bits.Len(uint(len(addrs))) - 1) // a power of two, for the mask
		b.Run(s.name, func(b *testing.B) { benchHopsLookup(b, f.snap, addrs[:n], n-1) })
	}
}
