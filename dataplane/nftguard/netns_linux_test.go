package nftguard

import (
	"github.com/pdrelay/pdrelay/internal/testutil"

	"context"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/pdrelay/pdrelay/bench/lab"
	"github.com/pdrelay/pdrelay/internal/nstest"
)

// Root-only tests: a router namespace with IPv6 forwarding ON between a
// client and an upstream host, the guard in the router.
//
//	client ns  eth0 ──veth── dl0  router ns  up0 ──veth── eth0  upstream ns
//	(frames sent by a packet socket)         (forwarding on)  (captured by a packet socket)

const nsPrefix = "kg-"

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		nstest.SweepStale(nsPrefix)
		nstest.SweepStale(kernelNSPrefix)
	}
	os.Exit(m.Run())
}

var (
	clientMAC   = nstest.MustMAC("02:00:00:00:01:02")
	routerDLMAC = nstest.MustMAC("02:00:00:00:01:01")
	routerUpMAC = nstest.MustMAC("02:00:00:00:ff:02")
	upMAC       = nstest.MustMAC("02:00:00:00:ff:01")

	upstreamAddr = netip.MustParseAddr("fd00:0:0:ffff::1")
	allowedNet   = netip.MustParsePrefix("2001:db8:1:100::/56")
	allowedSrc   = netip.MustParseAddr("2001:db8:1:100::1")
	spoofedSrc   = netip.MustParseAddr("2001:db8:ffff::1") // delegated to nobody
)

// topo is the three namespaces, a packet socket in the client (to send)
// and one in the upstream host (to capture), and the router's namespace
// as a file for the guard.
type topo struct {
	router  string
	routerF *os.File
	send    *lab.PacketConn
	capture *lab.PacketConn
	tag     uint32
	log     *testutil.SyncBuffer
}

func newTopo(t *testing.T) *topo {
	t.Helper()
	nstest.RequireRoot(t)
	client := nstest.NewNS(t, nsPrefix, "cl")
	router := nstest.NewNS(t, nsPrefix, "rt")
	up := nstest.NewNS(t, nsPrefix, "up")
	nstest.Veth(t, client, "eth0", clientMAC.String(), router, "dl0", routerDLMAC.String())
	nstest.Veth(t, router, "up0", routerUpMAC.String(), up, "eth0", upMAC.String())
	nstest.Run(t, "ip", "-n", router, "addr", "add", "fd00:0:0:ffff::2/64", "dev", "up0", "nodad")
	nstest.Run(t, "ip", "-n", up, "addr", "add", upstreamAddr.String()+"/64", "dev", "eth0", "nodad")
	// The way back to the client's prefix, and the upstream host's MAC
	// without waiting for neighbour discovery.
	nstest.Run(t, "ip", "-n", router, "route", "add", allowedNet.String(), "dev", "dl0")
	nstest.Run(t, "ip", "-n", router, "neigh", "replace", upstreamAddr.String(), "lladdr", upMAC.String(), "dev", "up0", "nud", "permanent")
	nstest.MustInNS(t, router, func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0)
	})
	tp := &topo{router: router, log: &testutil.SyncBuffer{}}
	f, err := os.Open("/run/netns/" + router)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	tp.routerF = f
	nstest.MustInNS(t, client, func() (err error) {
		tp.send, err = lab.ListenPacket("eth0")
		return err
	})
	nstest.MustInNS(t, up, func() (err error) {
		tp.capture, err = lab.ListenPacket("eth0")
		return err
	})
	t.Cleanup(func() { tp.send.Close(); tp.capture.Close() })
	return tp
}

// guard installs a guard in the router for port dl0.
func (tp *topo) guard(t *testing.T, allowed ...netip.Prefix) *Guard {
	t.Helper()
	g, err := New(Config{
		Table: "kgtest", NetNS: int(tp.routerF.Fd()), Check: -1,
		Ports: []Port{{Name: "dl0", AllowedSources: allowed}, {Name: "dl1"}},
		Log:   slog.New(slog.NewTextHandler(tp.log, nil)),
	})
	if err != nil {
		t.Fatalf("install guard: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// class is one kind of frame the relay's XDP program passes to the
// kernel, or (ordinary UDP) one the kernel gets when a queue has no
// AF_XDP socket, as here where there is no XDP at all.
type class struct {
	name string
	p    lab.Probe // Src, Dst and Tag are set per send
	// forwarded: the kernel forwards it from an allowed source. A hop
	// limit of 1 never is (Time Exceeded instead) and never reaches
	// the forward hook, so the guard does not count it either.
	forwarded bool
}

var classes = []class{
	{"hop-by-hop header", lab.Probe{HopByHop: true, SrcPort: 7000, DstPort: 40001}, true},
	{"udp source port 546", lab.Probe{SrcPort: 546, DstPort: 40002}, true},
	{"udp source port 547", lab.Probe{SrcPort: 547, DstPort: 40003}, true},
	{"udp destination port 547", lab.Probe{SrcPort: 7000, DstPort: 547}, true},
	{"udp destination port 546", lab.Probe{SrcPort: 7000, DstPort: 546}, true},
	{"hop limit 1", lab.Probe{HopLimit: 1, SrcPort: 7000, DstPort: 40004}, false},
	{"icmpv6 135 (NS) to a global address", lab.Probe{ICMPType: 135, HopLimit: 255}, true},
	{"icmpv6 136 (NA) to a global address", lab.Probe{ICMPType: 136, HopLimit: 255}, true},
	{"ordinary udp", lab.Probe{SrcPort: 7000, DstPort: 40006}, true},
}

// send sends p from src through the router and reports whether the
// upstream host received it.
func (tp *topo) sendAll(t *testing.T, ps []lab.Probe) map[uint32]lab.Probe {
	t.Helper()
	for _, p := range ps {
		if err := tp.send.Send(p.Frame(clientMAC, routerDLMAC)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := tp.capture.Probes(300 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// probe returns c's probe from src with a new tag.
func (tp *topo) probe(c class, src netip.Addr) lab.Probe {
	tp.tag++
	p := c.p
	p.Src, p.Dst, p.Tag = src, upstreamAddr, tp.tag
	return p
}

func drops(t *testing.T, g *Guard) uint64 {
	t.Helper()
	d, err := g.Drops()
	if err != nil {
		t.Fatal(err)
	}
	return d["dl0"]
}

// TestGuardForwarding is the case: with kernel forwarding on,
// every class of frame the XDP program hands the kernel arrives upstream
// from an allowed source and never from a spoofed one, and the spoofed
// ones are counted.
func TestGuardForwarding(t *testing.T) {
	tp := newTopo(t)

	// Without the guard the kernel forwards a spoofed source: the
	// problem, and proof that the probes can arrive.
	before := tp.probe(classes[1], spoofedSrc)
	if got := tp.sendAll(t, []lab.Probe{before}); len(got) != 1 {
		t.Fatalf("without the guard a spoofed source from port 546 did not arrive (%d): the topology does not forward", len(got))
	}

	g := tp.guard(t, allowedNet)
	var ps []lab.Probe
	for _, c := range classes {
		ps = append(ps, tp.probe(c, allowedSrc), tp.probe(c, spoofedSrc))
	}
	got := tp.sendAll(t, ps)
	wantDrops := uint64(0)
	for i, c := range classes {
		ok, spoof := ps[2*i], ps[2*i+1]
		if _, arrived := got[ok.Tag]; arrived != c.forwarded {
			t.Errorf("%s from the allowed source: arrived %v, want %v", c.name, arrived, c.forwarded)
		}
		if _, arrived := got[spoof.Tag]; arrived {
			t.Errorf("%s from a spoofed source reached the upstream host", c.name)
		}
		if c.forwarded {
			wantDrops++
		}
	}
	if n := drops(t, g); n != wantDrops {
		t.Errorf("dl0 drop counter %d, want %d (one per spoofed frame the kernel would forward)", n, wantDrops)
	}
	if n := mustDrops(t, g)["dl1"]; n != 0 {
		t.Errorf("dl1 drop counter %d, want 0", n)
	}
}

func mustDrops(t *testing.T, g *Guard) map[string]uint64 {
	t.Helper()
	d, err := g.Drops()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestGuardFollowsChanges: traffic from a prefix stops once it is
// deleted, and flows once a prefix (of a length not seen before on the
// port: a new set) is added; a prefix two holders hold stays until both
// let go.
func TestGuardFollowsChanges(t *testing.T) {
	tp := newTopo(t)
	g := tp.guard(t)
	ordinary := classes[len(classes)-1]
	arrives := func(src netip.Addr) bool {
		t.Helper()
		p := tp.probe(ordinary, src)
		_, ok := tp.sendAll(t, []lab.Probe{p})[p.Tag]
		return ok
	}
	flush := func() {
		t.Helper()
		if err := g.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if arrives(allowedSrc) {
		t.Fatal("an empty guard let a source through")
	}
	g.Add("dl0", allowedNet)
	flush()
	if !arrives(allowedSrc) {
		t.Fatal("after Add the prefix's traffic does not flow")
	}
	g.Add("dl0", allowedNet) // a second holder
	g.Delete("dl0", allowedNet)
	flush()
	if !arrives(allowedSrc) {
		t.Fatal("a prefix still held by one holder stopped")
	}
	g.Delete("dl0", allowedNet)
	flush()
	if arrives(allowedSrc) {
		t.Fatal("after Delete the prefix's traffic still flows")
	}
	host := netip.MustParsePrefix("2001:db8:2::7/128")
	g.Add("dl0", netip.MustParsePrefix("2001:db8:1:200::/60"))
	g.Add("dl0", host)
	flush()
	if !arrives(netip.MustParseAddr("2001:db8:1:20f::1")) || !arrives(host.Addr()) {
		t.Fatal("prefixes of new lengths (/60, /128) do not flow")
	}
	if arrives(netip.MustParseAddr("2001:db8:1:210::1")) || arrives(host.Addr().Next()) {
		t.Fatal("sources next to the allowed /60 and /128 flow")
	}
	// The same prefix on the other port allows nothing on this one.
	g.Add("dl1", allowedNet)
	flush()
	if arrives(allowedSrc) {
		t.Fatal("a prefix allowed on dl1 flows from dl0")
	}
}

// TestGuardRebuild: a transaction the kernel refuses (here: deleting an
// element someone removed by hand) leaves the table rebuilt from the
// desired state, and a table deleted from outside is reinstalled.
func TestGuardRebuild(t *testing.T) {
	tp := newTopo(t)
	g, err := New(Config{
		Table: "kgtest", NetNS: int(tp.routerF.Fd()), Check: 50 * time.Millisecond,
		Ports: []Port{{Name: "dl0"}},
		Log:   slog.New(slog.NewTextHandler(tp.log, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	ordinary := classes[len(classes)-1]
	arrives := func(src netip.Addr) bool {
		t.Helper()
		p := tp.probe(ordinary, src)
		_, ok := tp.sendAll(t, []lab.Probe{p})[p.Tag]
		return ok
	}
	other := netip.MustParsePrefix("2001:db8:1:300::/56")
	g.Add("dl0", allowedNet)
	g.Add("dl0", other)
	if err := g.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- g.Run(ctx) }()
	defer func() { cancel(); <-done }()
	// pause stops Run, so that the table can be seen broken before Run
	// repairs it (it checks every 50 ms); resume starts it again.
	pause := func() { cancel(); <-done }
	resume := func() {
		ctx, cancel = context.WithCancel(context.Background())
		go func() { done <- g.Run(ctx) }()
	}

	// Someone deletes one element by hand; the guard then deletes it
	// too: the kernel refuses (ENOENT) and the whole batch with it.
	c, err := nftables.New(nftables.WithNetNSFd(int(tp.routerF.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	set := &nftables.Set{Table: &nftables.Table{Name: "kgtest", Family: nftables.TableFamilyIPv6}, Name: setName("dl0", 56, kindSrc, 0, 0), KeyType: nftables.TypeIP6Addr}
	a := other.Addr().As16()
	if err := c.SetDeleteElements(set, []nftables.SetElement{{Key: a[:]}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	g.Delete("dl0", other)
	if err := g.Flush(); err == nil {
		t.Fatal("deleting an element the kernel no longer has did not fail: the test does not test the rebuild")
	}
	waitFor(t, "rebuild after the failed batch", func() bool { return g.Filled() && strings.Contains(tp.log.String(), "kernel guard table rebuilt") })
	if !arrives(allowedSrc) || arrives(other.Addr().Next()) {
		t.Fatal("after the rebuild the table does not match the desired state")
	}

	// An operator's `nft flush ruleset` (here: delete table).
	pause()
	c.DelTable(set.Table)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if !arrives(spoofedSrc) {
		t.Fatal("with the table deleted a spoofed source does not flow: the check below proves nothing")
	}
	resume()
	waitFor(t, "reinstall after the table was deleted", func() bool {
		return strings.Contains(tp.log.String(), "deleted from outside") && g.Filled()
	})
	if arrives(spoofedSrc) || !arrives(allowedSrc) {
		t.Fatal("the reinstalled table does not match the desired state")
	}

	// A flushed chain (rules deleted by hand) is noticed as well.
	c.FlushChain(&nftables.Chain{Name: portChain("dl0"), Table: set.Table})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reinstall after a chain was flushed", func() bool {
		return strings.Contains(tp.log.String(), "changed from outside") && g.Filled()
	})
	if arrives(spoofedSrc) || !arrives(allowedSrc) {
		t.Fatal("the reinstalled table does not match the desired state")
	}
}

// TestGuardRestore: sources handed over by Restore are written by Run
// beside changes made meanwhile, and a crashed relay's table (same name)
// is replaced at New.
func TestGuardRestore(t *testing.T) {
	tp := newTopo(t)
	stale := tp.guard(t)
	stale.Add("dl0", netip.MustParsePrefix("2001:db8:ffff::/48")) // covers spoofedSrc
	if err := stale.Flush(); err != nil {
		t.Fatal(err)
	}
	// No Close: a crash. A new guard replaces the table.
	g, err := New(Config{Table: "kgtest", NetNS: int(tp.routerF.Fd()), Check: -1, Batch: 100,
		Ports: []Port{{Name: "dl0"}}, Log: slog.New(slog.NewTextHandler(tp.log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	var restored []netip.Prefix
	for i := range 1000 {
		restored = append(restored, netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x10, byte(i >> 8), byte(i)}), 56))
	}
	restored = append(restored, allowedNet)
	g.Restore(func(yield func(string, netip.Prefix) bool) {
		for _, p := range restored {
			if !yield("dl0", p) {
				return
			}
		}
	})
	// A binding removed before the fill wrote it.
	g.Delete("dl0", restored[0])
	if err := g.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- g.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "fill", g.Filled)
	ordinary := classes[len(classes)-1]
	srcIn := func(p netip.Prefix) netip.Addr { return p.Addr().Next() }
	ps := []lab.Probe{tp.probe(ordinary, spoofedSrc), tp.probe(ordinary, srcIn(restored[0])), tp.probe(ordinary, allowedSrc), tp.probe(ordinary, srcIn(restored[999]))}
	got := tp.sendAll(t, ps)
	for i, want := range []bool{false, false, true, true} {
		if _, ok := got[ps[i].Tag]; ok != want {
			t.Errorf("probe from %s: arrived %v, want %v", ps[i].Src, ok, want)
		}
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(tp.routerF.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	elems, err := c.GetSetElements(&nftables.Set{Table: &nftables.Table{Name: "kgtest", Family: nftables.TableFamilyIPv6}, Name: setName("dl0", 56, kindSrc, 0, 0), KeyType: nftables.TypeIP6Addr})
	if err != nil {
		t.Fatal(err)
	}
	if len(elems) != 1000 || g.Len() != 1000 {
		t.Fatalf("set holds %d elements, guard wants %d; want 1000 (1001 restored, one deleted)", len(elems), g.Len())
	}
	if !strings.Contains(tp.log.String(), "kernel guard filled") {
		t.Errorf("no fill logged:\n%s", tp.log)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
