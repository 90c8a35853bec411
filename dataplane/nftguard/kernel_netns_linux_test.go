package nftguard

import (
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/pdrelay/pdrelay/bench/lab"
	"github.com/pdrelay/pdrelay/fib"
	"github.com/pdrelay/pdrelay/internal/nstest"
	"github.com/pdrelay/pdrelay/internal/testutil"
)

// Root-only tests of kernel mode: the kernel forwards everything, the
// guard is its whole anti-spoofing and loop prevention. A router
// namespace with IPv6 forwarding on, routes to each client's delegated
// prefix via the client's link-local address (as pdrelay's kernel mode
// programs them), and a client namespace on each downlink:
//
//	cl0 ns  eth0 ──veth── dl0 (point-to-point)  router ns  up0 ──veth── eth0  upstream ns
//	cl1 ns  eth0 ──veth── dl1 (multi-access)
//
// Frames are sent from the clients by packet sockets (so a test can give
// any source MAC, and one client namespace stands for a whole segment)
// and captured by packet sockets in the clients and upstream.

const kernelNSPrefix = "nk-"

var (
	cl0MAC   = nstest.MustMAC("02:00:00:00:10:02")
	rtDL0MAC = nstest.MustMAC("02:00:00:00:10:01")
	cl1MAC   = nstest.MustMAC("02:00:00:00:11:02") // the client P1 is delegated to
	otherMAC = nstest.MustMAC("02:00:00:00:11:03") // another client on dl1's segment
	rtDL1MAC = nstest.MustMAC("02:00:00:00:11:01")
	cl0LL    = netip.MustParseAddr("fe80::10:2")
	cl1LL    = netip.MustParseAddr("fe80::11:2")
	p0       = netip.MustParsePrefix("2001:db8:10::/56") // delegated on dl0
	p1       = netip.MustParsePrefix("2001:db8:11::/56") // delegated on dl1, to cl1MAC
	p1Other  = netip.MustParsePrefix("2001:db8:12::/56") // delegated on dl1 to otherMAC
)

// ktopo is the kernel-mode topology.
type ktopo struct {
	router, cl0, cl1 string
	routerF          *os.File
	send0, send1     *lab.PacketConn
	cap0, cap1, capU *lab.PacketConn
	tag              uint32
	log              *testutil.SyncBuffer
}

func newKTopo(t *testing.T) *ktopo {
	t.Helper()
	nstest.RequireRoot(t)
	tp := &ktopo{log: &testutil.SyncBuffer{}}
	tp.cl0 = nstest.NewNS(t, kernelNSPrefix, "cl0")
	tp.cl1 = nstest.NewNS(t, kernelNSPrefix, "cl1")
	tp.router = nstest.NewNS(t, kernelNSPrefix, "rt")
	up := nstest.NewNS(t, kernelNSPrefix, "up")
	nstest.Veth(t, tp.cl0, "eth0", cl0MAC.String(), tp.router, "dl0", rtDL0MAC.String())
	nstest.Veth(t, tp.cl1, "eth0", cl1MAC.String(), tp.router, "dl1", rtDL1MAC.String())
	nstest.Veth(t, tp.router, "up0", routerUpMAC.String(), up, "eth0", upMAC.String())
	r := tp.router
	nstest.Run(t, "ip", "-n", r, "addr", "add", "fd00:0:0:ffff::2/64", "dev", "up0", "nodad")
	nstest.Run(t, "ip", "-n", up, "addr", "add", upstreamAddr.String()+"/64", "dev", "eth0", "nodad")
	nstest.Run(t, "ip", "-n", r, "neigh", "replace", upstreamAddr.String(), "lladdr", upMAC.String(), "dev", "up0", "nud", "permanent")
	// The delegated routes, as kernel mode programs them: via the
	// client's link-local address, whose MAC is known.
	for _, x := range []struct {
		p   netip.Prefix
		ll  netip.Addr
		mac net.HardwareAddr
		dev string
	}{{p0, cl0LL, cl0MAC, "dl0"}, {p1, cl1LL, cl1MAC, "dl1"}, {p1Other, netip.MustParseAddr("fe80::11:3"), otherMAC, "dl1"}} {
		nstest.Run(t, "ip", "-n", r, "neigh", "replace", x.ll.String(), "lladdr", x.mac.String(), "dev", x.dev, "nud", "permanent")
		nstest.Run(t, "ip", "-n", r, "route", "add", x.p.String(), "via", x.ll.String(), "dev", x.dev)
	}
	nstest.MustInNS(t, r, func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0)
	})
	f, err := os.Open("/run/netns/" + r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	tp.routerF = f
	open := func(ns string, c **lab.PacketConn) {
		nstest.MustInNS(t, ns, func() (err error) {
			*c, err = lab.ListenPacket("eth0")
			return err
		})
		t.Cleanup(func() { (*c).Close() })
	}
	open(tp.cl0, &tp.send0)
	open(tp.cl1, &tp.send1)
	open(tp.cl0, &tp.cap0)
	open(tp.cl1, &tp.cap1)
	open(up, &tp.capU)
	return tp
}

// kports are the topology's downlinks: dl0 point-to-point, dl1
// multi-access, both with loop policy drop and no ICMPv6.
func kports() []Port {
	return []Port{{Name: "dl0"}, {Name: "dl1", MultiAccess: true}}
}

// kconfig is a kernel-mode config for the router.
func (tp *ktopo) kconfig(ports []Port) Config {
	return Config{
		Kernel: true, Table: "nktest", NetNS: int(tp.routerF.Fd()), Check: -1, Uplink: "up0", ICMPRate: 100,
		Ports: ports, Log: slog.New(slog.NewTextHandler(tp.log, nil)),
	}
}

// guard installs a kernel-mode guard with the topology's delegations.
func (tp *ktopo) guard(t *testing.T, ports []Port) *Guard {
	t.Helper()
	g, err := New(tp.kconfig(ports))
	if err != nil {
		t.Fatalf("install guard: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	for _, d := range []Delegation{
		{Port: "dl0", Prefix: p0},
		{Port: "dl1", Prefix: p1, MAC: [6]byte(cl1MAC)},
		{Port: "dl1", Prefix: p1Other, MAC: [6]byte(otherMAC)},
	} {
		if !g.Add(d.Port, d.Prefix) || !g.Delegate(d) {
			t.Fatalf("delegation %+v refused", d)
		}
	}
	if err := g.Flush(); err != nil {
		t.Fatal(err)
	}
	return g
}

// in returns an address inside p.
func in(p netip.Prefix, host byte) netip.Addr {
	a := p.Addr().As16()
	a[15] = host
	return netip.AddrFrom16(a)
}

// udp returns a UDP probe from src to dst with a new tag.
func (tp *ktopo) udp(src, dst netip.Addr) lab.Probe {
	tp.tag++
	return lab.Probe{Src: src, Dst: dst, SrcPort: 7000, DstPort: 40000, Tag: tp.tag}
}

// seen is what the captures saw of a round of probes: the probes by
// where they arrived, and the ICMPv6 errors the clients got, by the tag
// of the probe they quote.
type seen struct {
	up, cl0, cl1 map[uint32]lab.Probe
	dstMAC       map[uint32]net.HardwareAddr // of the probes cl1 got back
	icmp         map[uint32][2]uint8         // type, code
}

// frame is one probe to send and the source MAC to send it with.
type frame struct {
	p      lab.Probe
	srcMAC net.HardwareAddr
	dl1    bool // from cl1's namespace (dl1), else cl0's (dl0)
}

// round sends the frames and collects for 300 ms everywhere.
func (tp *ktopo) round(t *testing.T, fs ...frame) seen {
	t.Helper()
	s := seen{up: map[uint32]lab.Probe{}, cl0: map[uint32]lab.Probe{}, cl1: map[uint32]lab.Probe{},
		dstMAC: map[uint32]net.HardwareAddr{}, icmp: map[uint32][2]uint8{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	collect := func(c *lab.PacketConn, into map[uint32]lab.Probe, macs bool) {
		defer wg.Done()
		err := c.Collect(300*time.Millisecond, func(f []byte) {
			mu.Lock()
			defer mu.Unlock()
			if p, ok := lab.ParseProbe(f); ok {
				into[p.Tag] = p
				if macs {
					s.dstMAC[p.Tag] = append(net.HardwareAddr(nil), f[:6]...)
				}
				return
			}
			if tag, typ, code, ok := parseICMPError(f); ok {
				s.icmp[tag] = [2]uint8{typ, code}
			}
		})
		if err != nil {
			t.Error(err)
		}
	}
	wg.Add(3)
	go collect(tp.capU, s.up, false)
	go collect(tp.cap0, s.cl0, false)
	go collect(tp.cap1, s.cl1, true)
	time.Sleep(20 * time.Millisecond) // the captures are listening
	for _, f := range fs {
		c, dst := tp.send0, rtDL0MAC
		if f.dl1 {
			c, dst = tp.send1, rtDL1MAC
		}
		if err := c.Send(f.p.Frame(f.srcMAC, dst)); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	return s
}

// parseICMPError recognises an ICMPv6 error whose quote is a probe and
// returns the probe's tag with the error's type and code.
func parseICMPError(f []byte) (tag uint32, typ, code uint8, ok bool) {
	if len(f) < 14+40+8 || f[12] != 0x86 || f[13] != 0xdd || f[14+6] != 58 {
		return 0, 0, 0, false
	}
	icmp := f[14+40:]
	if icmp[0] >= 128 {
		return 0, 0, 0, false // not an error
	}
	quote := append([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x86, 0xdd}, icmp[8:]...)
	p, ok := lab.ParseProbe(quote)
	if !ok {
		return 0, 0, 0, false
	}
	return p.Tag, icmp[0], icmp[1], true
}

func counters(t testing.TB, g *Guard) map[string]map[string]uint64 {
	t.Helper()
	c, err := g.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestKernelLoopPointToPoint: on a point-to-point port a packet from the
// client to its own delegated prefix, which the kernel would send back to
// it, is dropped and counted as a loop; traffic upstream flows and is
// counted as forwarded on the uplink; a spoofed source is dropped as
// before. With loop_policy forward the loop comes back to the client.
func TestKernelLoopPointToPoint(t *testing.T) {
	tp := newKTopo(t)
	src := in(p0, 1)
	loop := tp.udp(src, in(p0, 2))
	// Without the guard the kernel sends the packet back: the loop the
	// guard must stop, and proof that the check below can fail.
	if s := tp.round(t, frame{p: loop, srcMAC: cl0MAC}); len(s.cl0) != 1 {
		t.Fatalf("without the guard the looping packet did not come back (%d): the topology does not loop", len(s.cl0))
	}
	g := tp.guard(t, kports())
	loop, up, spoof := tp.udp(src, in(p0, 2)), tp.udp(src, upstreamAddr), tp.udp(spoofedSrc, upstreamAddr)
	s := tp.round(t, frame{p: loop, srcMAC: cl0MAC}, frame{p: up, srcMAC: cl0MAC}, frame{p: spoof, srcMAC: cl0MAC})
	if _, back := s.cl0[loop.Tag]; back {
		t.Error("the looping packet came back to the client")
	}
	if _, ok := s.up[up.Tag]; !ok {
		t.Error("traffic upstream did not arrive")
	}
	if _, ok := s.up[spoof.Tag]; ok {
		t.Error("a spoofed source arrived upstream")
	}
	if len(s.icmp) != 0 {
		t.Errorf("ICMPv6 errors without loop_icmp: %v", s.icmp)
	}
	c := counters(t, g)
	if c["dl0"]["loop"] != 1 || c["dl0"]["spoofed"] != 1 || c["up0"]["forwarded"] != 1 || c["dl0"]["forwarded"] != 0 || c["dl0"]["icmp_sent"] != 0 {
		t.Errorf("counters %v, want dl0 loop 1, spoofed 1, up0 forwarded 1", c)
	}

	// loop_policy forward: the same loop goes back to the client, and
	// is counted as forwarded on the port it leaves by.
	ports := kports()
	ports[0].Loop = fib.LoopForward
	if err := g.Reconfigure(tp.kconfig(ports)); err != nil {
		t.Fatal(err)
	}
	loop = tp.udp(src, in(p0, 2))
	if s := tp.round(t, frame{p: loop, srcMAC: cl0MAC}); len(s.cl0) != 1 {
		t.Error("with loop_policy forward the loop did not come back")
	}
	if c := counters(t, g); c["dl0"]["loop"] != 1 || c["dl0"]["forwarded"] != 1 {
		t.Errorf("counters %v, want dl0 loop still 1, forwarded 1", c["dl0"])
	}
}

// TestKernelLoopOverrides: the longest per-destination override wins
// over the client's policy, which wins over the port's.
func TestKernelLoopOverrides(t *testing.T) {
	tp := newKTopo(t)
	ports := kports()
	ports[0].Loop = fib.LoopForward
	ports[0].LoopOverrides = []LoopOverride{
		{Prefix: netip.MustParsePrefix("2001:db8:10::/60"), Policy: fib.LoopDrop},    // within p0
		{Prefix: netip.MustParsePrefix("2001:db8:10::/64"), Policy: fib.LoopForward}, // longer, within that
	}
	g := tp.guard(t, ports)
	src := in(p0, 1)
	back := func(dst netip.Addr) bool {
		t.Helper()
		p := tp.udp(src, dst)
		_, ok := tp.round(t, frame{p: p, srcMAC: cl0MAC}).cl0[p.Tag]
		return ok
	}
	for _, c := range []struct {
		dst  string
		back bool
		why  string
	}{
		{"2001:db8:10:0::9", true, "the /64 override (forward) is the longest"},
		{"2001:db8:10:1::9", false, "the /60 override (drop)"},
		{"2001:db8:10:10::9", true, "no override: the port's forward"},
	} {
		if got := back(netip.MustParseAddr(c.dst)); got != c.back {
			t.Errorf("loop to %s: came back %v, want %v (%s)", c.dst, got, c.back, c.why)
		}
	}
	// The client's own policy: drop, over the port's forward; the
	// overrides still win.
	g.Delegate(Delegation{Port: "dl0", Prefix: p0, Loop: fib.LoopDrop})
	if err := g.Flush(); err != nil {
		t.Fatal(err)
	}
	if back(netip.MustParseAddr("2001:db8:10:10::9")) {
		t.Error("the client's policy drop did not win over the port's forward")
	}
	if !back(netip.MustParseAddr("2001:db8:10:0::9")) {
		t.Error("the /64 override forward did not win over the client's drop")
	}
	if c := counters(t, g); c["dl0"]["loop"] != 2 {
		t.Errorf("dl0 loops counted %d, want 2", c["dl0"]["loop"])
	}
}

// TestKernelLoopICMP: with loop_icmp a dropped loop is answered with an
// ICMPv6 Destination Unreachable, code 6 (reject route), counted; past
// the port's rate the errors are held back and counted as such.
func TestKernelLoopICMP(t *testing.T) {
	tp := newKTopo(t)
	ports := kports()
	ports[0].LoopICMP = true
	cfg := tp.kconfig(ports)
	cfg.ICMPRate, cfg.ICMPBurst = 1, 1
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	g.Add("dl0", p0)
	g.Delegate(Delegation{Port: "dl0", Prefix: p0})
	if err := g.Flush(); err != nil {
		t.Fatal(err)
	}
	src := in(p0, 1)
	first := tp.udp(src, in(p0, 2))
	s := tp.round(t, frame{p: first, srcMAC: cl0MAC})
	if got, ok := s.icmp[first.Tag]; !ok || got != [2]uint8{1, 6} {
		t.Fatalf("ICMPv6 error for the loop: %v (found %v), want type 1 code 6", got, ok)
	}
	if len(s.cl0) != 0 {
		t.Error("the looping packet came back besides the error")
	}
	// Ten more at once: the rate (1/s, burst 1) holds most back.
	var fs []frame
	for range 10 {
		fs = append(fs, frame{p: tp.udp(src, in(p0, 2)), srcMAC: cl0MAC})
	}
	s = tp.round(t, fs...)
	c := counters(t, g)["dl0"]
	if c["loop"] != 11 || c["icmp_sent"]+c["icmp_rate_limited"] != 11 || c["icmp_rate_limited"] < 8 {
		t.Errorf("counters %v: want 11 loops, each sent or rate limited, 8 or more of the last 10 rate limited", c)
	}
	if len(s.icmp) > int(c["icmp_sent"])-1 {
		t.Errorf("%d errors arrived for the 10, more than the %d sent", len(s.icmp), c["icmp_sent"]-1)
	}
}

// TestKernelMultiAccess: on a multi-access port a client may send to
// another client on the segment (the packet goes back out of the port,
// to that client's MAC); a packet from the very client a prefix is
// delegated to, for that prefix, is a loop. Until the client's MAC is
// known its loops are forwarded.
func TestKernelMultiAccess(t *testing.T) {
	tp := newKTopo(t)
	g := tp.guard(t, kports())
	fromOther := tp.udp(in(p1Other, 1), in(p1, 9)) // otherMAC's client to cl1's prefix
	fromOwner := tp.udp(in(p1, 1), in(p1, 9))      // cl1 to its own prefix
	s := tp.round(t, frame{p: fromOther, srcMAC: otherMAC, dl1: true}, frame{p: fromOwner, srcMAC: cl1MAC, dl1: true})
	if _, ok := s.cl1[fromOther.Tag]; !ok {
		t.Error("client-to-client traffic on the segment was not forwarded")
	} else if !sameMAC(s.dstMAC[fromOther.Tag], cl1MAC) {
		t.Errorf("client-to-client packet went to %v, want %v", s.dstMAC[fromOther.Tag], cl1MAC)
	}
	if _, ok := s.cl1[fromOwner.Tag]; ok {
		t.Error("the owner's loop came back")
	}
	c := counters(t, g)["dl1"]
	if c["loop"] != 1 || c["forwarded"] != 1 {
		t.Errorf("dl1 counters %v, want loop 1, forwarded 1", c)
	}
	// The same prefix sent to by the owner under another MAC is not its
	// loop: the key is the MAC the binding has.
	g.Delegate(Delegation{Port: "dl1", Prefix: p1}) // MAC not known (yet)
	if err := g.Flush(); err != nil {
		t.Fatal(err)
	}
	fromOwner = tp.udp(in(p1, 1), in(p1, 9))
	if s := tp.round(t, frame{p: fromOwner, srcMAC: cl1MAC, dl1: true}); len(s.cl1) != 1 {
		t.Error("with the client's MAC not known its loop was not forwarded")
	}
	g.Delegate(Delegation{Port: "dl1", Prefix: p1, MAC: [6]byte(cl1MAC)}) // learned
	if err := g.Flush(); err != nil {
		t.Fatal(err)
	}
	fromOwner = tp.udp(in(p1, 1), in(p1, 9))
	if s := tp.round(t, frame{p: fromOwner, srcMAC: cl1MAC, dl1: true}); len(s.cl1) != 0 {
		t.Error("once the MAC is known the owner's loop still came back")
	}
}

func sameMAC(a, b net.HardwareAddr) bool { return len(a) == 6 && string(a) == string(b) }

// stream sends a probe from src (the client on dl0) to the upstream host
// every millisecond until stop is closed, and returns the tags sent; the
// upstream capture runs meanwhile and its result is returned by wait.
type stream struct {
	stop chan struct{}
	once sync.Once
	done chan struct{}
	sent []uint32
	got  map[uint32]lab.Probe
}

func (tp *ktopo) stream(t *testing.T, src netip.Addr, base uint32) *stream {
	st := &stream{stop: make(chan struct{}), done: make(chan struct{}), got: map[uint32]lab.Probe{}}
	// Stopped before the sockets close even if the test fails first: a
	// goroutine left reading a closed descriptor would read whatever
	// socket the next test opens under its number.
	t.Cleanup(func() { st.end() })
	capDone := make(chan struct{})
	capStop := make(chan struct{})
	go func() {
		defer close(capDone)
		for {
			select {
			case <-capStop:
				return
			default:
			}
			_ = tp.capU.Collect(50*time.Millisecond, func(f []byte) {
				if p, ok := lab.ParseProbe(f); ok {
					st.got[p.Tag] = p
				}
			})
		}
	}()
	go func() {
		defer close(st.done)
		tag := base
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-st.stop:
				time.Sleep(200 * time.Millisecond)
				close(capStop)
				<-capDone
				return
			case <-tick.C:
			}
			tag++
			p := lab.Probe{Src: src, Dst: upstreamAddr, SrcPort: 7001, DstPort: 40001, Tag: tag}
			if err := tp.send0.Send(p.Frame(cl0MAC, rtDL0MAC)); err == nil {
				st.sent = append(st.sent, tag)
			}
		}
	}()
	return st
}

// end stops the stream and returns how many probes were sent and the
// tags of those lost.
func (st *stream) end() (int, []uint32) {
	st.once.Do(func() { close(st.stop) })
	<-st.done
	var lost []uint32
	for _, tag := range st.sent {
		if _, ok := st.got[tag]; !ok {
			lost = append(lost, tag)
		}
	}
	return len(st.sent), lost
}

// restoredSet is n /56 delegations on dl0 besides p0.
func restoredSet(n int) []Delegation {
	ds := []Delegation{{Port: "dl0", Prefix: p0}}
	for i := range n {
		ds = append(ds, Delegation{Port: "dl0", Prefix: prefix56(0x200000 + i)})
	}
	return ds
}

// TestKernelAdoptNoGap is S-1/S-2 for kernel mode: a relay that stops
// with Keep leaves its table in force; the next one adopts it, writes the
// restored bindings into a new generation of sets beside it and switches
// in one transaction. A client's traffic through the kernel loses no
// packet across the restart; a binding that did not survive is dropped
// after the switch; the counters keep their counts. The control: a fresh
// install in the same place loses packets, so the check can fail.
func TestKernelAdoptNoGap(t *testing.T) {
	tp := newKTopo(t)
	const n = 20000
	stale := prefix56(0x300000)
	cfg := tp.kconfig(kports())
	cfg.Keep = true
	old, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	old.RestoreDelegations(func(yield func(Delegation) bool) {
		for _, d := range append(restoredSet(n), Delegation{Port: "dl0", Prefix: stale}) {
			if !yield(d) {
				return
			}
		}
	})
	for !old.Filled() {
		if _, err := old.step(); err != nil {
			t.Fatal(err)
		}
	}
	// A spoofed packet, counted by the old relay's table.
	if s := tp.round(t, frame{p: tp.udp(spoofedSrc, upstreamAddr), srcMAC: cl0MAC}); len(s.up) != 0 {
		t.Fatal("spoofed source arrived")
	}
	if !tp.flows(t, in(stale, 1)) {
		t.Fatal("the stale binding's traffic does not flow before the restart")
	}

	st := tp.stream(t, in(p0, 1), 1<<20)
	time.Sleep(50 * time.Millisecond)
	if err := old.Close(); err != nil { // a clean stop; a crash leaves the same table
		t.Fatal(err)
	}
	g := tp.adopt(t, cfg, restoredSet(n))
	time.Sleep(50 * time.Millisecond)
	sent, lost := st.end()
	if len(lost) > 0 || sent < 50 {
		t.Fatalf("%d of %d packets lost across the restart (first %v)", len(lost), sent, lost[:min(len(lost), 5)])
	}
	if tp.flows(t, in(stale, 1)) {
		t.Error("a binding that did not survive the restart still flows after the switch")
	}
	if !tp.flows(t, in(prefix56(0x200000+n-1), 1)) {
		t.Error("the last restored binding does not flow")
	}
	c := counters(t, g)
	if c["dl0"]["spoofed"] != 2 || c["up0"]["forwarded"] < uint64(sent) {
		t.Errorf("counters after the restart %v: want 2 spoofed (one before the restart, the stale binding's after), forwarded at least %d", c, sent)
	}
	names := tp.setNames(t)
	for _, n := range strings.Fields(names) {
		if gen, ok := setGen(n); ok && gen != 2 {
			t.Errorf("set %s of generation %d after the switch to 2 (sets: %s)", n, gen, names)
		}
	}
	if !strings.Contains(names, "src_dl0_56_g2") {
		t.Errorf("sets after the switch: %s; want src_dl0_56_g2", names)
	}
	if !strings.Contains(tp.log.String(), "adopted") || !strings.Contains(tp.log.String(), "switched to its new sets") {
		t.Errorf("adoption not logged:\n%s", tp.log)
	}

	// The control: the same restart with a fresh table (as the xdp
	// modes do) drops the client's traffic until the fill.
	g.Close()
	st = tp.stream(t, in(p0, 1), 1<<21)
	time.Sleep(50 * time.Millisecond)
	c0, err := nftables.New(nftables.WithNetNSFd(int(tp.routerF.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	c0.DelTable(&nftables.Table{Name: "nktest", Family: nftables.TableFamilyIPv6})
	if err := c0.Flush(); err != nil {
		t.Fatal(err)
	}
	restored := restoredSet(n)
	reverse(restored) // p0 last: written at the end of the fill
	tp.adopt(t, cfg, restored)
	time.Sleep(50 * time.Millisecond)
	if _, lost := st.end(); len(lost) == 0 {
		t.Error("a fresh install lost no packet either: the test cannot tell a gap")
	}
}

func reverse(ds []Delegation) {
	for i, j := 0, len(ds)-1; i < j; i, j = i+1, j-1 {
		ds[i], ds[j] = ds[j], ds[i]
	}
}

// adopt starts a guard on cfg as a restarting relay does: New, the
// restore, Run until the new sets are live.
func (tp *ktopo) adopt(t *testing.T, cfg Config, restored []Delegation) *Guard {
	t.Helper()
	cfg.Batch = 1000 // a longer fill, so that a gap would show
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	g.BeginRestore()
	g.RestoreDelegations(func(yield func(Delegation) bool) {
		for _, d := range restored {
			if !yield(d) {
				return
			}
		}
	})
	for !g.Filled() {
		if _, err := g.step(); err != nil {
			t.Fatal(err)
		}
	}
	return g
}

// flows reports whether a packet from src on dl0 reaches the upstream
// host.
func (tp *ktopo) flows(t *testing.T, src netip.Addr) bool {
	t.Helper()
	p := tp.udp(src, upstreamAddr)
	_, ok := tp.round(t, frame{p: p, srcMAC: cl0MAC}).up[p.Tag]
	return ok
}

// setNames returns the names of the sets in the router's table.
func (tp *ktopo) setNames(t *testing.T) string {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(tp.routerF.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	sets, err := c.GetSets(&nftables.Table{Name: "nktest", Family: nftables.TableFamilyIPv6})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range sets {
		names = append(names, s.Name)
	}
	return strings.Join(names, " ")
}

// TestKernelReload: a reload that adds a port, removes one and changes
// another's allowed_sources loses no packet of the traffic on a port
// that stays; the added port is guarded from then on, the removed one no
// longer is.
func TestKernelReload(t *testing.T) {
	tp := newKTopo(t)
	g := tp.guard(t, kports())
	extra := netip.MustParsePrefix("2001:db8:99::/48")
	if tp.flows(t, in(extra, 1)) {
		t.Fatal("a source outside the port's prefixes flows")
	}
	st := tp.stream(t, in(p0, 1), 1<<22)
	time.Sleep(30 * time.Millisecond)
	ports := []Port{{Name: "dl0", AllowedSources: []netip.Prefix{extra}, LoopICMP: true}, {Name: "dl2"}} // dl1 goes
	for range 5 {
		if err := g.Reconfigure(tp.kconfig(ports)); err != nil {
			t.Fatal(err)
		}
		if err := g.Reconfigure(tp.kconfig(append(ports[:1:1], kports()[1]))); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Reconfigure(tp.kconfig(ports)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	if sent, lost := st.end(); len(lost) > 0 {
		t.Fatalf("%d of %d packets lost during 11 reloads", len(lost), sent)
	}
	if !tp.flows(t, in(extra, 1)) {
		t.Error("the new allowed_sources entry does not flow")
	}
	if !tp.flows(t, in(p0, 1)) {
		t.Error("the port's delegated prefix stopped flowing")
	}
	// dl1 is no longer a downlink: nothing checks its sources.
	p := tp.udp(spoofedSrc, upstreamAddr)
	if _, ok := tp.round(t, frame{p: p, srcMAC: cl1MAC, dl1: true}).up[p.Tag]; !ok {
		t.Error("traffic of a removed port is still checked")
	}
	c := counters(t, g)
	if _, ok := c["dl1"]; ok || c["dl2"] == nil {
		t.Errorf("counters after the reload name %v", c)
	}
	// The new setting (loop_icmp) is in force.
	loop := tp.udp(in(p0, 1), in(p0, 2))
	if s := tp.round(t, frame{p: loop, srcMAC: cl0MAC}); s.icmp[loop.Tag] != [2]uint8{1, 6} {
		t.Errorf("after the reload a loop got %v, want ICMPv6 1/6", s.icmp)
	}
}

// TestKernelRepair: in kernel mode a failed transaction is repaired
// without a gap (a new generation of sets, then a switch), a chain
// flushed from outside is rewritten in place at the next check, and a
// deleted table is installed afresh.
func TestKernelRepair(t *testing.T) {
	tp := newKTopo(t)
	cfg := tp.kconfig(kports())
	cfg.Batch = 1000
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	g.RestoreDelegations(func(yield func(Delegation) bool) {
		for _, d := range restoredSet(20000) {
			if !yield(d) {
				return
			}
		}
	})
	for !g.Filled() {
		g.step()
	}
	gone := prefix56(0x200000)
	c, err := nftables.New(nftables.WithNetNSFd(int(tp.routerF.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	tab := &nftables.Table{Name: "nktest", Family: nftables.TableFamilyIPv6}
	a := gone.Addr().As16()
	if err := c.SetDeleteElements(&nftables.Set{Table: tab, Name: setName("dl0", 56, kindSrc, 0, 1), KeyType: nftables.TypeIP6Addr},
		[]nftables.SetElement{{Key: a[:]}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	st := tp.stream(t, in(p0, 1), 1<<23)
	time.Sleep(30 * time.Millisecond)
	g.Delete("dl0", gone)
	g.Undelegate("dl0", gone)
	if err := g.Flush(); err == nil {
		t.Fatal("deleting an element the kernel no longer has did not fail: the test does not test the repair")
	}
	for !g.Filled() {
		if _, err := g.step(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(30 * time.Millisecond)
	if sent, lost := st.end(); len(lost) > 0 {
		t.Fatalf("%d of %d packets lost during the repair", len(lost), sent)
	}
	if !strings.Contains(tp.log.String(), "new generation") || !strings.Contains(tp.log.String(), "switched") {
		t.Errorf("repair not logged:\n%s", tp.log)
	}

	// A chain flushed by hand: the next check rewrites it at once.
	c.FlushChain(&nftables.Chain{Name: portChain("dl0"), Table: tab})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if !tp.flows(t, spoofedSrc) {
		t.Fatal("with the port chain flushed a spoofed source does not flow: the check below proves nothing")
	}
	g.mu.Lock()
	g.check = true
	g.mu.Unlock()
	g.step()
	if tp.flows(t, spoofedSrc) || !tp.flows(t, in(p0, 1)) {
		t.Error("the flushed chain was not rewritten at once")
	}
	for !g.Filled() {
		g.step()
	}

	// The table deleted: installed afresh and filled again.
	c.DelTable(tab)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	g.check = true
	g.mu.Unlock()
	for g.step(); !g.Filled(); g.step() {
	}
	if tp.flows(t, spoofedSrc) || !tp.flows(t, in(p0, 1)) || !tp.flows(t, in(prefix56(0x200000+19999), 1)) {
		t.Error("the reinstalled table does not match the desired state")
	}
	if !strings.Contains(tp.log.String(), "deleted from outside") {
		t.Errorf("not logged:\n%s", tp.log)
	}
}
