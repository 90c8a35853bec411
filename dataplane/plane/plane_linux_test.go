package plane

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pdrelay/pdrelay/dataplane"
	"github.com/pdrelay/pdrelay/dataplane/xsk"
	"github.com/pdrelay/pdrelay/fib"
	"github.com/pdrelay/pdrelay/internal/nstest"
)

// Test namespaces are named plane-<pid>-<random>-<role>. TestMain sweeps
// those of test binaries that died before their cleanup ran.
const nsPrefix = "plane-"

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		nstest.SweepStale(nsPrefix)
	}
	os.Exit(m.Run())
}

// topo is A —veth— R —veth— B (vethArgs: more `ip link add` arguments
// for every veth end). R holds rA (port 1) and rB (port 2) and
// does not forward in its kernel: only the plane can carry a frame from
// A to B.
//
//	A vA 2001:db8:a::2/64 ── rA 2001:db8:a::1/64  R  rB 2001:db8:b::1/64 ── vB 2001:db8:b::2/64 B
//	  default via 2001:db8:a::1 (static neighbour)
type topo struct {
	a, r, b      string
	rA, rB       int
	macRB, macVB net.HardwareAddr
}

const (
	addrVA = "2001:db8:a::2"
	addrRA = "2001:db8:a::1"
	addrRB = "2001:db8:b::1"
	addrVB = "2001:db8:b::2"
)

func newTopo(t testing.TB, vethArgs ...string) *topo {
	t.Helper()
	tp := &topo{
		a: nstest.NewNS(t, nsPrefix, "a"), r: nstest.NewNS(t, nsPrefix, "r"), b: nstest.NewNS(t, nsPrefix, "b"),
		macRB: nstest.MustMAC("02:00:00:00:0b:01"), macVB: nstest.MustMAC("02:00:00:00:0b:02"),
	}
	const macVA, macRA = "02:00:00:00:0a:02", "02:00:00:00:0a:01"
	nstest.Veth(t, tp.a, "vA", macVA, tp.r, "rA", macRA, vethArgs...)
	nstest.Veth(t, tp.r, "rB", tp.macRB.String(), tp.b, "vB", tp.macVB.String(), vethArgs...)
	nstest.Run(t, "ip", "-n", tp.a, "addr", "add", addrVA+"/64", "dev", "vA", "nodad")
	nstest.Run(t, "ip", "-n", tp.a, "-6", "route", "add", "default", "via", addrRA, "dev", "vA")
	nstest.Run(t, "ip", "-n", tp.a, "-6", "neigh", "replace", addrRA, "lladdr", macRA, "dev", "vA", "nud", "permanent")
	nstest.Run(t, "ip", "-n", tp.r, "addr", "add", addrRA+"/64", "dev", "rA", "nodad")
	nstest.Run(t, "ip", "-n", tp.r, "addr", "add", addrRB+"/64", "dev", "rB", "nodad")
	nstest.Run(t, "ip", "-n", tp.b, "addr", "add", addrVB+"/64", "dev", "vB", "nodad")
	nstest.Run(t, "ip", "-n", tp.b, "-6", "route", "add", "default", "via", addrRB, "dev", "vB")
	tp.rA = nstest.Ifindex(t, tp.r, "rA")
	tp.rB = nstest.Ifindex(t, tp.r, "rB")
	return tp
}

// udpIn opens a UDP socket in ns bound to laddr.
func udpIn(t testing.TB, ns, laddr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	nstest.MustInNS(t, ns, func() (err error) {
		c, err = net.ListenUDP("udp6", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(laddr)))
		return err
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// counts is what the test deciders of all workers report.
type counts struct {
	decide, forwarded, dropped atomic.Int64
	completed                  atomic.Int64 // checksums completed
	batches                    atomic.Int64 // Decide calls
	txFull, flush              atomic.Int64
	drop                       atomic.Bool // drop everything instead of forwarding

	// UMEM accounting, sampled in Flush on the worker goroutine (the
	// UMEM's owner): free-list length and bad frees.
	free, bad atomic.Int64
}

// testDecider forwards every IPv6 frame from port 1 to port 2 (dst MAC
// B's, src MAC R's port 2, hop limit decremented, a partial checksum
// completed as the dataplane does on a veth: A keeps its default
// offloads, so its UDP leaves partial), or drops everything while c.drop
// is set.
type testDecider struct {
	c              *counts
	umem           *xsk.UMEM
	srcMAC, dstMAC net.HardwareAddr
}

func (d *testDecider) Decide(_ *fib.Snapshot, in fib.PortID, frames [][]byte, _ int64, out []Decision) {
	d.c.batches.Add(1)
	for i, fr := range frames {
		port, n, send := d.decide(in, fr)
		out[i] = Decision{Port: port, Len: n, Send: send}
	}
}

func (d *testDecider) decide(in fib.PortID, fr []byte) (fib.PortID, int, bool) {
	d.c.decide.Add(1)
	if d.c.drop.Load() || in != 1 || len(fr) < 54 || fr[12] != 0x86 || fr[13] != 0xdd || fr[21] <= 1 {
		d.c.dropped.Add(1)
		return 0, 0, false
	}
	copy(fr[0:6], d.dstMAC)
	copy(fr[6:12], d.srcMAC)
	fr[21]--
	if dataplane.CompleteChecksum(fr) {
		d.c.completed.Add(1)
	}
	d.c.forwarded.Add(1)
	return 2, len(fr), true
}

func (d *testDecider) TxFull(_ fib.PortID, n int) { d.c.txFull.Add(int64(n)) }

func (d *testDecider) Flush() {
	d.c.flush.Add(1)
	d.c.free.Store(int64(d.umem.FreeFrames()))
	d.c.bad.Store(int64(d.umem.BadFrees()))
}

// receiver counts datagrams arriving at B by their first payload byte
// (the phase tag).
type receiver struct {
	got [256]atomic.Int64
}

func (r *receiver) run(c *net.UDPConn) {
	receive(c, func(b []byte) {
		if len(b) > 0 {
			r.got[b[0]].Add(1)
		}
	})
}

// receive hands got every datagram c reads, until c is closed.
func receive(c *net.UDPConn, got func([]byte)) {
	buf := make([]byte, 2048)
	for {
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			return // closed at cleanup
		}
		got(buf[:n])
	}
}

// waitFor polls cond every 200µs until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Microsecond)
	}
	return true
}

// sendPaced sends n datagrams tagged tag from src to B in bursts of 64,
// waiting after each burst until the plane has decided all but one burst
// of what was sent. A veth with a native XDP program on its peer queues at
// most 256 frames in its ptr_ring and drops the rest without pushing back
// on the sender, and R's RX ring holds ringSize frames: pacing on the plane's
// progress keeps both from overflowing, so no frame is lost on the way to
// R. Returns how many Decide calls the phase saw.
func sendPaced(t *testing.T, src *net.UDPConn, c *counts, tag byte, n int) int64 {
	t.Helper()
	to := &net.UDPAddr{IP: net.ParseIP(addrVB), Port: 9000}
	payload := make([]byte, 64)
	payload[0] = tag
	start := c.decide.Load()
	// A stalled plane (say, one that leaks frames) must fail the test,
	// not make it crawl: pacing gives up after a few seconds.
	deadline := time.Now().Add(3 * time.Second)
	for sent := 0; sent < n; {
		k := min(64, n-sent)
		for i := 0; i < k; i++ {
			payload[1], payload[2] = byte(sent>>8), byte(sent)
			if _, err := src.WriteToUDP(payload, to); err != nil {
				t.Fatalf("send %c #%d: %v", tag, sent, err)
			}
			sent++
		}
		target := start + int64(sent) - 64
		if time.Now().Before(deadline) {
			waitFor(200*time.Millisecond, func() bool { return c.decide.Load() >= target })
		}
	}
	want := start + int64(n)
	waitFor(max(time.Until(deadline), 100*time.Millisecond), func() bool { return c.decide.Load() >= want })
	return c.decide.Load() - start
}

// socketStats is the kernel's and the package's view of the plane's
// sockets, for failure messages.
func socketStats(p *Plane) string {
	var b strings.Builder
	for _, w := range p.workers {
		for i, s := range w.socks {
			st, err := s.Stats()
			fmt.Fprintf(&b, "port %d: %+v (err %v); ", w.ids[i], st, err)
		}
	}
	return b.String()
}

// TestForwardDropRecycle runs the plane in R between A and B:
//
//  1. forward: N UDP datagrams from A reach B through the plane (R's
//     kernel does not forward); Flush was called; no TX ring was full;
//  2. drop: with the decider dropping everything, 3× the UMEM's frames
//     are received and decided, B gets none, and once idle the UMEM's
//     free list is back to its size before (every dropped frame went
//     back, no bad frees);
//  3. forward again: the plane still forwards everything afterwards;
//  4. cancel: Run returns nil and no XDP program is left on rA or rB.
func TestForwardDropRecycle(t *testing.T) {
	nstest.RequireRoot(t)
	tp := newTopo(t)

	dst := udpIn(t, tp.b, "["+addrVB+"]:9000")
	// Room for a whole phase in B's socket even if B's reader lags.
	if rc, err := dst.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
		})
	}
	var rcv receiver
	go rcv.run(dst)
	src := udpIn(t, tp.a, "["+addrVA+"]:0")

	p, cfg, closed := startPlane(t, tp, 1)
	info := p.Info()
	t.Logf("attach mode %v; sockets %+v", p.Mode(), info)
	if len(info) != 2 {
		t.Fatalf("Info: %d sockets, want 2", len(info))
	}
	for _, in := range info {
		if !in.SharedUMEM {
			t.Fatalf("socket on ifindex %d does not share the worker's UMEM: %v", in.Ifindex, in.ShareErr)
		}
	}
	for _, dev := range []string{"rA", "rB"} {
		if nstest.XDPShown(t, tp.r, dev) == "" {
			t.Fatalf("no XDP program on %s after Start", dev)
		}
	}

	// The worker's UMEM, read here before Run (no race: the worker starts
	// after) and sampled by the decider in Flush on the worker goroutine.
	if len(p.workers) != 1 {
		t.Fatalf("%d workers, want 1", len(p.workers))
	}
	umem := p.workers[0].umem
	frames := umem.Frames()
	// Idle, every frame is on a fill ring (full: one default-sized ring
	// per port) or on the free list.
	wantFree := int64(frames - len(cfg.Ports)*ringSize)

	var c counts
	c.free.Store(-1)
	stop := runPlane(t, tp, p, closed, func() Decider {
		return &testDecider{c: &c, umem: umem, srcMAC: tp.macRB, dstMAC: tp.macVB}
	})
	start := time.Now()

	// Warm-up: one datagram through, so the path is known to work.
	to := &net.UDPAddr{IP: net.ParseIP(addrVB), Port: 9000}
	if !waitFor(3*time.Second, func() bool {
		if rcv.got['w'].Load() > 0 {
			return true
		}
		_, _ = src.WriteToUDP([]byte("warm"), to)
		time.Sleep(20 * time.Millisecond)
		return rcv.got['w'].Load() > 0
	}) {
		t.Fatalf("warm-up datagram did not reach B through the plane; decided %d, forwarded %d; %s",
			c.decide.Load(), c.forwarded.Load(), socketStats(p))
	}

	// 1. Forward N.
	const N = 2000
	fwd0 := c.forwarded.Load()
	decided := sendPaced(t, src, &c, 'f', N)
	waitFor(2*time.Second, func() bool { return rcv.got['f'].Load() >= N })
	got := rcv.got['f'].Load()
	t.Logf("forward: sent %d, decided %d, forwarded %d (%d checksums completed in all), B got %d in %v; TxFull %d, Flush %d",
		N, decided, c.forwarded.Load()-fwd0, c.completed.Load(), got, time.Since(start).Round(time.Millisecond), c.txFull.Load(), c.flush.Load())
	if got != N {
		t.Errorf("forward: B got %d of %d datagrams; decided %d; %s", got, N, decided, socketStats(p))
	}
	if c.txFull.Load() != 0 {
		t.Errorf("forward: TxFull counted %d frames", c.txFull.Load())
	}
	// SocketStats: one entry per port and queue, named; the sockets of
	// the port A sends on received what reached Decide.
	var rxA uint64
	ss := p.SocketStats()
	for _, st := range ss {
		if st.Port == p.cfg.Ports[0].Name {
			rxA += st.Received
		}
	}
	if len(ss) != len(p.cfg.Ports)*len(p.workers) || rxA < N {
		t.Errorf("SocketStats: %d entries (want %d), %s received %d (want >= %d): %+v",
			len(ss), len(p.cfg.Ports)*len(p.workers), p.cfg.Ports[0].Name, rxA, N, ss)
	}
	// ProgramStats: one entry per port, in port order; rA's program
	// redirected at least what its sockets received, and no frame fell
	// back for want of a socket or was aborted.
	ps := p.ProgramStats()
	if len(ps) != len(p.cfg.Ports) || ps[0].Port != "rA" || ps[0].Redirected < rxA || ps[0].NoSocket != 0 || ps[0].Aborted != 0 {
		t.Errorf("ProgramStats: %+v; want rA first with Redirected >= %d, no NoSocket, no Aborted", ps, rxA)
	}
	if !waitFor(time.Second, func() bool { return c.flush.Load() > 0 }) {
		t.Errorf("Flush was never called")
	}

	// 2. Drop everything: more frames than the UMEM has must go through
	// Decide, so dropped frames are recycled to the fill rings.
	c.drop.Store(true)
	dropN := 3 * frames
	dropped0 := c.dropped.Load()
	t0 := time.Now()
	decided = sendPaced(t, src, &c, 'd', dropN)
	t.Logf("drop: sent %d (3 × %d UMEM frames), decided %d, dropped %d in %v",
		dropN, frames, decided, c.dropped.Load()-dropped0, time.Since(t0).Round(time.Millisecond))
	if decided < int64(dropN) {
		t.Errorf("drop: only %d of %d frames reached Decide (frames leaked or lost before R); %s", decided, dropN, socketStats(p))
	}
	// Idle again: the free list is back to its size, nothing owned twice.
	if !waitFor(2*time.Second, func() bool { return c.free.Load() == wantFree && c.bad.Load() == 0 }) {
		t.Errorf("drop: idle UMEM free list %d frames (want %d of %d: the rest on %d full fill rings), bad frees %d",
			c.free.Load(), wantFree, frames, len(cfg.Ports), c.bad.Load())
	}
	time.Sleep(50 * time.Millisecond)
	if n := rcv.got['d'].Load(); n != 0 {
		t.Errorf("drop: B got %d datagrams the decider dropped", n)
	}

	// 3. Forward again: the plane still has frames to receive into.
	c.drop.Store(false)
	const N2 = 500
	sendPaced(t, src, &c, 'g', N2)
	waitFor(2*time.Second, func() bool { return rcv.got['g'].Load() >= N2 })
	if got := rcv.got['g'].Load(); got != N2 {
		t.Errorf("forward after drop: B got %d of %d; %s", got, N2, socketStats(p))
	}

	// 4. Cancel: Run returns nil, closes the plane and detaches.
	stop()
	// The counters outlive the plane, as they were at Close.
	if ss := p.SocketStats(); len(ss) != len(p.cfg.Ports) || ss[0].Received < uint64(N+dropN+N2) {
		t.Errorf("SocketStats after Run returned: %+v; want %d entries, rA received >= %d", ss, len(p.cfg.Ports), N+dropN+N2)
	}
	if ps := p.ProgramStats(); len(ps) != len(p.cfg.Ports) || ps[0].Redirected < uint64(N+dropN+N2) {
		t.Errorf("ProgramStats after Run returned: %+v; want %d entries, rA redirected >= %d", ps, len(p.cfg.Ports), N+dropN+N2)
	}
	if c.bad.Load() != 0 {
		t.Errorf("%d bad frees", c.bad.Load())
	}
	// The bursts queue frames faster than one at a time: the deciders
	// must have been given batches, not single frames.
	if c.decide.Load() <= c.batches.Load() {
		t.Errorf("%d frames in %d Decide calls: never a batch", c.decide.Load(), c.batches.Load())
	}
	t.Logf("total %v; %d frames in %d Decide calls, Flush %d", time.Since(start).Round(time.Millisecond),
		c.decide.Load(), c.batches.Load(), c.flush.Load())
}

// startPlane starts a plane in R over rA (port 1) and rB (port 2) with
// queues queues per port. It closes the plane at cleanup unless the test
// sets *closed.
func startPlane(t *testing.T, tp *topo, queues int) (*Plane, Config, *bool) {
	t.Helper()
	cfg := Config{
		Ports: []Port{
			{Name: "rA", Ifindex: tp.rA, ID: 1},
			{Name: "rB", Ifindex: tp.rB, ID: 2},
		},
		Queues: queues,
		Locals: []netip.Addr{netip.MustParseAddr(addrRA), netip.MustParseAddr(addrRB)},
	}
	var p *Plane
	nstest.MustInNS(t, tp.r, func() (err error) {
		p, err = Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		return err
	})
	closed := new(bool)
	t.Cleanup(func() {
		if !*closed {
			p.Close()
		}
	})
	return p, cfg, closed
}

// runPlane runs p (from startPlane) with an empty FIB and deciders from
// newDecider, on a goroutine of its own, until the test calls the stop
// it returns: stop cancels Run and checks, with stopped, that it returns
// and detaches. A test that fails before stop is cancelled at cleanup.
func runPlane(t *testing.T, tp *topo, p *Plane, closed *bool, newDecider func() Decider) (stop func()) {
	table := fib.NewTable()
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(ctx, table.FIB(), newDecider) }()
	t.Cleanup(func() {
		if *closed {
			return // Run returned: its value was taken by stop
		}
		cancel()
		select {
		case <-runErr:
		case <-time.After(5 * time.Second):
		}
	})
	return func() {
		cancel()
		*closed = stopped(t, tp, runErr)
	}
}

// stopped waits for Run to return after its context ended: it must
// return nil within 3 s and leave no XDP program on R's ports. It returns
// true once Run has returned.
func stopped(t *testing.T, tp *topo, runErr <-chan error) bool {
	t.Helper()
	select {
	case err := <-runErr:
		if err != nil {
			t.Errorf("Run returned %v after cancel, want nil", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("Run did not return within 3s of cancel")
	}
	for _, dev := range []string{"rA", "rB"} {
		if x := nstest.XDPShown(t, tp.r, dev); x != "" {
			t.Errorf("after Run returned, %s still has an XDP program: %s", dev, x)
		}
	}
	return true
}

// TestStartNoSuchInterface: Start with a port whose ifindex does not
// exist fails with an error naming that port, and leaves nothing attached
// to the ports before it.
func TestStartNoSuchInterface(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.NewNS(t, nsPrefix, "ghost")
	nstest.Veth(t, ns, "d0", "02:00:00:00:0c:01", ns, "d1", "02:00:00:00:0c:02")
	d0 := nstest.Ifindex(t, ns, "d0")
	cfg := Config{Ports: []Port{
		{Name: "d0", Ifindex: d0, ID: 1},
		{Name: "ghost0", Ifindex: 1 << 30, ID: 2},
	}}
	var p *Plane
	var err error
	nstest.MustInNS(t, ns, func() error {
		defer func() {
			// Keep a panic in Start from killing the test binary (and
			// leaving this thread in ns).
			if r := recover(); r != nil {
				err = fmt.Errorf("plane.Start panicked: %v\n%s", r, debug.Stack())
			}
		}()
		p, err = Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		return nil
	})
	if p != nil {
		p.Close()
	}
	switch {
	case strings.Contains(fmt.Sprint(err), "panicked"):
		t.Error(err)
	case err == nil:
		t.Fatalf("Start with ifindex %d succeeded", 1<<30)
	case p != nil:
		t.Errorf("Start returned a plane with error %v", err)
	case !strings.Contains(err.Error(), "ghost0"):
		t.Errorf("Start error %q does not name the port ghost0", err)
	}
	t.Logf("Start: %v", err)
	if x := nstest.XDPShown(t, ns, "d0"); x != "" {
		t.Errorf("after failed Start, d0 still has an XDP program: %s", x)
	}
}
