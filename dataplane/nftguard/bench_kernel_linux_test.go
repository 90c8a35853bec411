package nftguard

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/net/ipv6"

	"github.com/pdrelay/pdrelay/fib"
	"github.com/pdrelay/pdrelay/internal/nstest"
)

// Benchmarks of kernel mode, root only, each in a namespace of its own:
//
//	go test -run '^$' -bench KernelFill -benchtime 1x ./dataplane/nftguard/
//	go test -run '^$' -bench KernelBatch ./dataplane/nftguard/
//	go test -run '^$' -bench SetKind -benchtime 1x ./dataplane/nftguard/

// benchNS returns a new namespace as an open file.
func benchNS(b *testing.B) *os.File {
	b.Helper()
	nstest.RequireRoot(b)
	ns := nstest.NewNS(b, kernelNSPrefix, "bench")
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// benchKernelConfig is kernel mode on two ports: dl0 point-to-point, dl1
// multi-access (its destinations keyed by MAC too).
func benchKernelConfig(f *os.File) Config {
	return Config{Kernel: true, NetNS: int(f.Fd()), Check: -1, Keep: true, Uplink: "up0", ICMPRate: 100,
		Ports: []Port{{Name: "dl0", LoopICMP: true}, {Name: "dl1", MultiAccess: true}}}
}

// delegations yields n /56 bindings, alternately on dl0 and dl1, each
// with a MAC, one in 64 with a client loop policy of its own.
func delegations(n int) func(func(Delegation) bool) {
	return func(yield func(Delegation) bool) {
		for i := range n {
			d := Delegation{Port: []string{"dl0", "dl1"}[i&1], Prefix: prefix56(i), MAC: [6]byte{2, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}}
			if i%64 == 0 {
				d.Loop = fib.LoopForward
			}
			if !yield(d) {
				return
			}
		}
	}
}

// fill restores n bindings into a new Guard on cfg and steps it until
// its sets are live; it returns the Guard and the time from New on.
func fill(b *testing.B, cfg Config, n int) (*Guard, time.Duration, time.Duration) {
	b.Helper()
	start := time.Now()
	g, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	g.BeginRestore()
	g.RestoreDelegations(delegations(n))
	var sw time.Duration
	for !g.Filled() {
		s := time.Now()
		due := g.switchDue()
		if _, err := g.step(); err != nil {
			b.Fatal(err)
		}
		if due {
			sw = time.Since(s)
		}
	}
	took := time.Since(start)
	if g.broken || g.Len() != n || g.Delegations() != n {
		b.Fatalf("fill: broken %v, %d sources, %d delegations", g.broken, g.Len(), g.Delegations())
	}
	return g, took, sw
}

// BenchmarkKernelFill: a kernel-mode relay's start with n restored
// bindings, each a source and a destination element (2n elements), from
// New until the table is whole: into no table (fresh: the first start,
// fail closed meanwhile) and beside the table of a relay that stopped
// with the same bindings (adopt: the restart, no gap), which ends with
// the switch that deletes the old generation (switch-ms).
func BenchmarkKernelFill(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		for _, mode := range []string{"fresh", "adopt"} {
			b.Run(fmt.Sprintf("bindings=%d/%s", n, mode), func(b *testing.B) {
				for range b.N {
					b.StopTimer()
					f := benchNS(b)
					cfg := benchKernelConfig(f)
					if mode == "adopt" {
						old, _, _ := fill(b, cfg, n)
						old.Close()
					}
					runtime.GC()
					var m0, m1 runtime.MemStats
					runtime.ReadMemStats(&m0)
					slab0 := slabKB(b)
					b.StartTimer()
					g, took, sw := fill(b, cfg, n)
					b.StopTimer()
					runtime.GC()
					runtime.ReadMemStats(&m1)
					b.ReportMetric(took.Seconds(), "s/fill")
					b.ReportMetric(float64(2*n)/took.Seconds(), "elements/s")
					b.ReportMetric(float64(sw.Microseconds())/1000, "switch-ms")
					b.ReportMetric(float64(slabKB(b)-slab0)/1024, "kernel-MiB")
					b.ReportMetric(float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc))/float64(n), "heap-B/binding")
					g.keep = false
					g.Close()
					b.StartTimer()
				}
			})
		}
	}
}

// BenchmarkKernelBatch: one Flush of a batch of binding changes in kernel
// mode (Add and Delegate, then Delete and Undelegate the next time: two
// element changes each), into an empty table and one of 1M bindings.
func BenchmarkKernelBatch(b *testing.B) {
	for _, c := range []struct{ size, changes int }{{0, 1}, {0, 1000}, {1_000_000, 1}, {1_000_000, 1000}} {
		b.Run(fmt.Sprintf("table=%d/changes=%d", c.size, c.changes), func(b *testing.B) {
			f := benchNS(b)
			cfg := benchKernelConfig(f)
			cfg.Keep = false
			g, _, _ := fill(b, cfg, c.size)
			b.Cleanup(func() { g.Close() })
			var ds []Delegation
			for d := range delegations(c.size + c.changes) {
				ds = append(ds, d)
			}
			ds = ds[c.size:]
			b.ResetTimer()
			for i := range b.N {
				for _, d := range ds {
					if i%2 == 0 {
						g.Add(d.Port, d.Prefix)
						g.Delegate(d)
					} else {
						g.Delete(d.Port, d.Prefix)
						g.Undelegate(d.Port, d.Prefix)
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
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(c.changes), "ns/binding")
		})
	}
}

// BenchmarkSetKind measures the choice the guard's sets rest on, with
// google/nftables as the guard writes: 100k /56 prefixes as masked
// addresses in a hash set (the guard's), and as ranges in one interval
// set (what `nft add element ... { 2001:db8::/56 }` makes: a start and an
// end element each), in transactions of 8,192 prefixes.
func BenchmarkSetKind(b *testing.B) {
	const n = 100_000
	for _, kind := range []string{"hash", "interval"} {
		b.Run(kind, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				f := benchNS(b)
				c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())), nftables.AsLasting(), nftables.WithSockOptions(bigBuffers))
				if err != nil {
					b.Fatal(err)
				}
				tab := c.AddTable(&nftables.Table{Name: "kind", Family: nftables.TableFamilyIPv6})
				s := &nftables.Set{Table: tab, Name: "s", KeyType: nftables.TypeIP6Addr, Interval: kind == "interval"}
				if err := c.AddSet(s, nil); err != nil {
					b.Fatal(err)
				}
				if err := c.Flush(); err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				slab0 := slabKB(b)
				b.StartTimer()
				start := time.Now()
				for i := 0; i < n; i += 8192 {
					var es []nftables.SetElement
					if i == 0 && kind == "interval" {
						// As nft(8) writes it: the range below the
						// first prefix is out.
						es = append(es, nftables.SetElement{Key: make([]byte, 16), IntervalEnd: true})
					}
					for j := i; j < min(n, i+8192); j++ {
						// Every other /56: adjacent ranges would share
						// an end and a start, which an interval set
						// without auto-merge refuses.
						a := prefix56(2 * j).Addr().As16()
						if kind == "hash" {
							es = append(es, nftables.SetElement{Key: a[:]})
							continue
						}
						end := prefix56(2*j + 1).Addr().As16()
						es = append(es, nftables.SetElement{Key: a[:]}, nftables.SetElement{Key: end[:], IntervalEnd: true})
					}
					for len(es) > 0 {
						// An end element carries flags too: fewer fit
						// in one 64 KiB attribute.
						k := min(len(es), elemsPerMsg/2)
						if err := c.SetAddElements(s, es[:k]); err != nil {
							b.Fatal(err)
						}
						es = es[k:]
					}
					if err := c.Flush(); err != nil {
						b.Fatal(err)
					}
				}
				took := time.Since(start)
				b.StopTimer()
				b.ReportMetric(took.Seconds(), "s/100k")
				b.ReportMetric(n/took.Seconds(), "prefixes/s")
				b.ReportMetric(float64(slabKB(b)-slab0)/1024, "kernel-MiB")
				c.DelTable(tab)
				_ = c.Flush()
				_ = c.CloseLasting()
				b.StartTimer()
			}
		})
	}
}

// BenchmarkKernelPPS measures what the table costs a packet: UDP from a
// client's delegated address to the upstream host, forwarded by the
// kernel of a router namespace, with no table, with the xdp modes' table
// and with kernel mode's (each holding 100k bindings, the packet's among
// them), and with kernel mode's without its forwarded count (the base
// chain's "oifname vmap @outs" deleted: what the count costs). The tables
// stay installed; all but the one measured are
// dormant (NFT_TABLE_F_DORMANT: their hooks unregistered). The sender
// runs throughout and the mode changes every 300 ms, in rotation, so
// that the machine's drift (it is shared) hits the modes alike; each
// rotation gives one ratio to no table, and the medians of those are
// reported with each mode's median rate. The sender, the router and the
// receiver share the machine's cores: the rates are of this machine, the
// ratios are what to read.
//
//	go test -run '^$' -bench KernelPPS -benchtime 1x ./dataplane/nftguard/
func BenchmarkKernelPPS(b *testing.B) {
	const cycles, slice, n = 30, 300 * time.Millisecond, 100_000
	nstest.RequireRoot(b)
	cl := nstest.NewNS(b, kernelNSPrefix, "cl")
	rt := nstest.NewNS(b, kernelNSPrefix, "rt")
	up := nstest.NewNS(b, kernelNSPrefix, "up")
	nstest.Veth(b, cl, "eth0", cl0MAC.String(), rt, "dl0", rtDL0MAC.String())
	nstest.Veth(b, rt, "up0", routerUpMAC.String(), up, "eth0", upMAC.String())
	src := in(prefix56(n/2), 1) // a dl0 binding's (even index)
	for _, c := range [][]string{
		{"-n", cl, "addr", "add", src.String() + "/128", "dev", "eth0", "nodad"},
		{"-n", cl, "addr", "add", "fe80::2/64", "dev", "eth0", "nodad"},
		{"-n", rt, "addr", "add", "fe80::1/64", "dev", "dl0", "nodad"},
		{"-n", cl, "route", "add", "default", "via", "fe80::1", "dev", "eth0"},
		{"-n", cl, "neigh", "replace", "fe80::1", "lladdr", rtDL0MAC.String(), "dev", "eth0", "nud", "permanent"},
		{"-n", rt, "addr", "add", "fd00:0:0:ffff::2/64", "dev", "up0", "nodad"},
		{"-n", up, "addr", "add", upstreamAddr.String() + "/64", "dev", "eth0", "nodad"},
		{"-n", up, "route", "add", "default", "via", "fd00:0:0:ffff::2", "dev", "eth0"},
		{"-n", up, "neigh", "replace", "fd00:0:0:ffff::2", "lladdr", routerUpMAC.String(), "dev", "eth0", "nud", "permanent"},
		{"-n", rt, "neigh", "replace", upstreamAddr.String(), "lladdr", upMAC.String(), "dev", "up0", "nud", "permanent"},
		{"-n", rt, "neigh", "replace", "fe80::2", "lladdr", cl0MAC.String(), "dev", "dl0", "nud", "permanent"},
		{"-n", rt, "route", "add", netip.PrefixFrom(src, 56).Masked().String(), "via", "fe80::2", "dev", "dl0"},
	} {
		nstest.Run(b, "ip", c...)
	}
	nstest.MustInNS(b, rt, func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0)
	})
	f, err := os.Open("/run/netns/" + rt)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	gx, err := New(Config{Table: "gx", NetNS: int(f.Fd()), Check: -1, Ports: []Port{{Name: "dl0"}, {Name: "dl1"}}})
	if err != nil {
		b.Fatal(err)
	}
	defer gx.Close()
	gx.Restore(func(yield func(string, netip.Prefix) bool) {
		for d := range delegations(n) {
			if !yield(d.Port, d.Prefix) {
				return
			}
		}
	})
	for !gx.Filled() {
		gx.step()
	}
	kcfg := benchKernelConfig(f)
	kcfg.Table, kcfg.Keep = "gk", false
	gk, _, _ := fill(b, kcfg, n)
	defer gk.Close()
	// kernel mode without the forwarded count: the same table with the
	// base chain's second rule (oifname vmap @outs) deleted.
	kcfg.Table = "gn"
	gn, _, _ := fill(b, kcfg, n)
	defer gn.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		b.Fatal(err)
	}
	gnt := &nftables.Table{Name: "gn", Family: nftables.TableFamilyIPv6}
	rs, err := c.GetRules(gnt, &nftables.Chain{Name: baseChain, Table: gnt})
	if err != nil || len(rs) != 2 {
		b.Fatalf("gn's base chain: %d rules, %v", len(rs), err)
	}
	if err := c.DelRule(rs[1]); err != nil {
		b.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		b.Fatal(err)
	}
	modes := []string{"none", "xdp", "kernel", "nocount"}
	tables := map[string]string{"xdp": "gx", "kernel": "gk", "nocount": "gn"}
	only := func(m string) {
		for mode, t := range tables {
			if mode == m {
				// google/nftables sends flags 0 with every table:
				// awake.
				c.AddTable(&nftables.Table{Name: t, Family: nftables.TableFamilyIPv6})
				if err := c.Flush(); err != nil {
					b.Fatal(err)
				}
				continue
			}
			nstest.Run(b, "ip", "netns", "exec", rt, "nft", "add", "table", "ip6", t, "{ flags dormant; }")
		}
	}
	pps := map[string][]float64{}
	var ratios = map[string][]float64{}
	for range b.N {
		bl := startBlast(b, cl, up, src)
		for cy := range cycles {
			rate := map[string]float64{}
			for i := range modes {
				m := modes[(i+cy)%len(modes)]
				only(m)
				time.Sleep(50 * time.Millisecond) // the queues drain
				rate[m] = bl.rate(slice)
				pps[m] = append(pps[m], rate[m])
			}
			ratios["xdp/none"] = append(ratios["xdp/none"], rate["xdp"]/rate["none"])
			ratios["kernel/none"] = append(ratios["kernel/none"], rate["kernel"]/rate["none"])
			ratios["kernel/xdp"] = append(ratios["kernel/xdp"], rate["kernel"]/rate["xdp"])
			ratios["kernel/nocount"] = append(ratios["kernel/nocount"], rate["kernel"]/rate["nocount"])
		}
		bl.stop()
	}
	median := func(v []float64) float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		return s[len(s)/2]
	}
	for _, m := range modes {
		b.ReportMetric(median(pps[m]), m+"-pps")
	}
	for r, v := range ratios {
		b.ReportMetric(median(v), r)
	}
	if gk.Len() != n {
		b.Fatal("kernel guard lost its sources")
	}
	// The kernel table counts only while awake: its share of the packets.
	all := 0.0
	for _, r := range pps["none"] {
		all += float64(len(modes)) * r * slice.Seconds()
	}
	cnt := counters(b, gk)["up0"]["forwarded"]
	b.Logf("kernel mode counted %d forwarded on up0 (some %.0f sent in its slices, %.0f in all); ratios by rotation: %v", cnt, all/float64(len(modes)), all, ratios)
}

// blast is a sender that runs until stop, with a receiver counting.
type blast struct {
	got     atomic.Int64
	halt    chan struct{}
	wg      sync.WaitGroup
	sink    *net.UDPConn
	recvEnd chan struct{}
}

// rate returns the packets received a second over the next d.
func (bl *blast) rate(d time.Duration) float64 {
	n0, t0 := bl.got.Load(), time.Now()
	time.Sleep(d)
	return float64(bl.got.Load()-n0) / time.Since(t0).Seconds()
}

func (bl *blast) stop() {
	close(bl.halt)
	bl.wg.Wait()
	bl.sink.Close()
	<-bl.recvEnd
}

// startBlast sends 64-byte frames (2 bytes of UDP payload) from src in
// namespace cl to the upstream host in namespace up, from two
// goroutines, and counts what arrives.
func startBlast(b *testing.B, cl, up string, src netip.Addr) *blast {
	b.Helper()
	bl := &blast{halt: make(chan struct{}), recvEnd: make(chan struct{})}
	nstest.MustInNS(b, up, func() (err error) {
		bl.sink, err = net.ListenUDP("udp6", &net.UDPAddr{IP: upstreamAddr.AsSlice(), Port: 9})
		return err
	})
	bl.sink.SetReadBuffer(8 << 20)
	go func() {
		defer close(bl.recvEnd)
		pc := ipv6.NewPacketConn(bl.sink)
		ms := make([]ipv6.Message, 64)
		for i := range ms {
			ms[i].Buffers = [][]byte{make([]byte, 64)}
		}
		for {
			n, err := pc.ReadBatch(ms, 0)
			if err != nil {
				return
			}
			bl.got.Add(int64(n))
		}
	}()
	for range 2 {
		var conn *net.UDPConn
		nstest.MustInNS(b, cl, func() (err error) {
			conn, err = net.ListenUDP("udp6", &net.UDPAddr{IP: src.AsSlice()})
			return err
		})
		bl.wg.Add(1)
		go func() {
			defer bl.wg.Done()
			defer conn.Close()
			pc := ipv6.NewPacketConn(conn)
			dst := &net.UDPAddr{IP: upstreamAddr.AsSlice(), Port: 9}
			ms := make([]ipv6.Message, 64)
			for i := range ms {
				ms[i] = ipv6.Message{Buffers: [][]byte{{0, 0}}, Addr: dst}
			}
			for {
				select {
				case <-bl.halt:
					return
				default:
				}
				if _, err := pc.WriteBatch(ms, 0); err != nil {
					time.Sleep(time.Microsecond)
				}
			}
		}()
	}
	return bl
}
