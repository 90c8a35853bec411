package xsk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/net/ipv6"

	"github.com/pdrelay/pdrelay/dataplane"
)

// ringCfg is a socket config for queue 0 with all rings of size n.
func ringCfg(ifindex, n int) SocketConfig {
	return SocketConfig{Ifindex: ifindex, Queue: 0, RxSize: n, TxSize: n, FillSize: n, CompletionSize: n}
}

// port is R's side of one link: its program and socket.
type port struct {
	prog *Program
	sock *Socket
	mode Mode
}

// openPort attaches a program to ifindex in R (mode), opens a socket on
// u for queue 0 and registers it.
func openPort(t testing.TB, ns string, ifindex int, mode Mode, u *UMEM, cfg SocketConfig) *port {
	t.Helper()
	p := &port{}
	var err error
	if p.prog, err = NewProgram(ProgramConfig{Queues: 1}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.prog.Close() })
	mustInNS(t, ns, func() error {
		if p.mode, err = p.prog.Attach(ifindex, mode); err != nil {
			return err
		}
		p.sock, err = NewSocket(u, cfg)
		return err
	})
	t.Cleanup(func() { p.sock.Close() })
	if err := p.prog.Register(0, p.sock); err != nil {
		t.Fatal(err)
	}
	return p
}

// udpIn opens a UDP socket in ns bound to laddr.
func udpIn(t testing.TB, ns, laddr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	mustInNS(t, ns, func() (err error) {
		c, err = net.ListenUDP("udp6", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(laddr)))
		return err
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// forwarder is the test's stand-in for the dataplane: what arrives on
// in goes out on out with the MACs rewritten, the hop limit decremented
// and a partial checksum completed (dataplane.CompleteChecksum: the
// hosts keep their default offloads, so their UDP leaves partial, and
// AF_XDP does not say so). With a shared UMEM the descriptor itself is
// transmitted (zero-copy between ports); otherwise the frame is copied
// into a frame of out's UMEM.
type forwarder struct {
	in, out        *Socket
	srcMAC, dstMAC net.HardwareAddr

	rx   []Desc
	tx   []Desc
	addr []uint64

	received, forwarded, txFull int
	completed                   int // checksums completed
	first, last                 time.Time
}

func newForwarder(in, out *Socket, srcMAC, dstMAC net.HardwareAddr) *forwarder {
	return &forwarder{
		in: in, out: out, srcMAC: srcMAC, dstMAC: dstMAC,
		rx: make([]Desc, 64), tx: make([]Desc, 64), addr: make([]uint64, 64),
	}
}

// step does one batch and returns how many frames it received. Frames
// go back to their UMEM's free list when done with (completed, copied,
// not forwarded), and in's fill ring is topped up from its UMEM.
func (f *forwarder) step() int {
	same := f.in.SameUMEM(f.out)
	if n := f.out.Complete(f.addr); n > 0 {
		f.out.UMEM().Free(f.addr[:n])
	}
	f.in.FillFromUMEM(math.MaxInt)
	n := f.in.Receive(f.rx)
	if n == 0 {
		f.out.Transmit(nil) // push out what an earlier call left queued
		return 0
	}
	if f.received == 0 {
		f.first = time.Now()
	}
	f.received += n
	inU, outU := f.in.UMEM(), f.out.UMEM()
	k := 0
	for i, d := range f.rx[:n] {
		fr := f.in.Frame(d)
		if len(fr) < 54 || fr[12] != 0x86 || fr[13] != 0xdd {
			inU.FreeDescs(f.rx[i : i+1])
			continue
		}
		copy(fr[0:6], f.dstMAC)
		copy(fr[6:12], f.srcMAC)
		fr[21]--
		if dataplane.CompleteChecksum(fr) {
			f.completed++
		}
		if same {
			f.tx[k] = d
		} else {
			// Separate UMEMs: copy into a frame of out's.
			if outU.Alloc(f.addr[:1]) == 0 {
				inU.FreeDescs(f.rx[i : i+1])
				continue
			}
			copy(outU.Buffer(f.addr[0]), fr)
			f.tx[k] = Desc{Addr: f.addr[0], Len: d.Len}
			inU.FreeDescs(f.rx[i : i+1])
		}
		k++
	}
	sent := f.out.Transmit(f.tx[:k])
	f.txFull += k - sent // TX ring full: drop
	outU.FreeDescs(f.tx[sent:k])
	f.forwarded += sent
	f.last = time.Now()
	return n
}

// runUntil steps the forwarder until done returns true or timeout.
func (f *forwarder) runUntil(timeout time.Duration, done func() bool) {
	deadline := time.Now().Add(timeout)
	for !done() && time.Now().Before(deadline) {
		if f.step() == 0 {
			_, _ = f.in.Poll(time.Millisecond)
		}
	}
}

// setup2 builds the topology with programs on rA and rB (mode) and
// sockets on queue 0 of each; shared says whether they share one UMEM.
func setup2(t testing.TB, mode Mode, shared bool) (*topo, *port, *port) {
	return setup2Sized(t, mode, shared, 4096, 1024)
}

// setup2Sized is setup2 with UMEMs of frames frames and rings of ring.
func setup2Sized(t testing.TB, mode Mode, shared bool, frames, ring int) (*topo, *port, *port) {
	t.Helper()
	requireRoot(t)
	tp := newTopo(t)
	u1, err := NewUMEM(UMEMConfig{Frames: frames})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u1.Close() })
	u2 := u1
	if !shared {
		if u2, err = NewUMEM(UMEMConfig{Frames: frames}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { u2.Close() })
	}
	pa := openPort(t, tp.r, tp.rA, mode, u1, ringCfg(tp.rA, ring))
	pb := openPort(t, tp.r, tp.rB, mode, u2, ringCfg(tp.rB, ring))
	if shared && !pb.sock.Info().SharedUMEM {
		t.Fatalf("second socket did not share the UMEM: %v", pb.sock.Info().ShareErr)
	}
	if got := pa.sock.FillFromUMEM(ring); got != ring {
		t.Fatalf("FillFromUMEM = %d, want %d", got, ring)
	}
	return tp, pa, pb
}

func TestForward(t *testing.T) {
	for _, c := range []struct {
		name   string
		mode   Mode
		shared bool
	}{
		{"native/shared-umem", ModeNative, true},
		{"generic/shared-umem", ModeGeneric, true},
		{"native/separate-umems", ModeNative, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			tp, pa, pb := setup2(t, c.mode, c.shared)
			t.Logf("rA: %s, %+v", pa.mode, pa.sock.Info())
			t.Logf("rB: %s, %+v", pb.mode, pb.sock.Info())
			if pa.mode != c.mode {
				t.Fatalf("attached in %s, want %s", pa.mode, c.mode)
			}
			dst := udpIn(t, tp.b, "[2001:db8:b::2]:9000")
			src := udpIn(t, tp.a, "[2001:db8:a::2]:0")
			f := newForwarder(pa.sock, pb.sock, tp.macRB, tp.macVB)
			got := make(chan string, 1)
			go func() {
				buf := make([]byte, 2000)
				_ = dst.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, from, err := dst.ReadFromUDP(buf)
				if err != nil {
					got <- "error: " + err.Error()
					return
				}
				got <- fmt.Sprintf("%s from %s", buf[:n], from.AddrPort().Addr())
			}()
			to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[2001:db8:b::2]:9000"))
			var res string
			deadline := time.Now().Add(5 * time.Second)
			for res == "" && time.Now().Before(deadline) {
				if _, err := src.WriteToUDP([]byte("hello"), to); err != nil {
					t.Fatal(err)
				}
				f.runUntil(100*time.Millisecond, func() bool { return len(got) > 0 })
				select {
				case res = <-got:
				default:
				}
			}
			if res != "hello from 2001:db8:a::2" {
				st, _ := pb.sock.Stats()
				t.Log(run(t, "ip", "netns", "exec", tp.b, "sh", "-c", "grep -E 'Udp6|Ip6In' /proc/net/snmp6; ip -s link show vB"))
				t.Fatalf("B got %q; forwarder received %d forwarded %d; rA stats %+v", res, f.received, f.forwarded, st)
			}
			// A's stack, at its default offloads, left the UDP checksum
			// for the hardware; the forwarder completed it.
			if f.completed == 0 {
				t.Errorf("forwarded %d frames and completed no checksum: A's UDP arrived complete", f.forwarded)
			}
		})
	}
}

// TestKernelKeeps checks that with the program attached and a socket
// registered, the kernel still gets what the program passes: A resolves
// R's addresses (NS/NA), pings R's link-local and R's global address (a
// local address), and DHCPv6 to a global address never reaches the
// socket, while ordinary UDP to the same address does.
func TestKernelKeeps(t *testing.T) {
	tp, pa, _ := setup2(t, ModeNative, true)
	if err := pa.prog.Locals().Add(netip.MustParseAddr(tp.addrRA)); err != nil {
		t.Fatal(err)
	}
	// Everything the socket sees in this test, checked at the end. The
	// reader stops before the socket closes, even if the test fails.
	var seen []string
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var once sync.Once
	halt := func() { once.Do(func() { close(stop); wg.Wait() }) }
	t.Cleanup(halt)
	wg.Add(1)
	go func() {
		defer wg.Done()
		rx := make([]Desc, 64)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n := pa.sock.Receive(rx)
			for _, d := range rx[:n] {
				mu.Lock()
				seen = append(seen, describe(pa.sock.Frame(d)))
				mu.Unlock()
				pa.sock.Fill([]uint64{d.Addr})
			}
			if n == 0 {
				_, _ = pa.sock.Poll(10 * time.Millisecond)
			}
		}
	}()

	// The neighbour cache of A is empty: these pings need NS/NA through
	// the program.
	llR := netip.MustParseAddr(tp.llRA).WithZone("vA")
	if err := ping(tp.a, llR, 3*time.Second); err != nil {
		t.Errorf("ping R's link-local: %v", err)
	}
	if err := ping(tp.a, netip.MustParseAddr(tp.addrRA), 3*time.Second); err != nil {
		t.Errorf("ping R's global (local) address: %v", err)
	}
	dhcp := udpIn(t, tp.a, "[2001:db8:a::2]:546")
	other := udpIn(t, tp.a, "[2001:db8:a::2]:40000")
	for _, c := range []struct {
		src  *net.UDPConn
		port int
	}{{dhcp, 547}, {other, 547}, {other, 546}, {other, 53}} {
		to := &net.UDPAddr{IP: net.ParseIP(tp.addrVB), Port: c.port}
		for range 3 {
			if _, err := c.src.WriteToUDP([]byte("dhcp?"), to); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(200 * time.Millisecond)
	halt()

	var udp53 int
	for _, s := range seen {
		switch {
		case strings.HasPrefix(s, "icmp6 13"), strings.Contains(s, ":547"), strings.Contains(s, ":546"):
			t.Errorf("socket got a frame the kernel should keep: %s", s)
		case strings.HasPrefix(s, "udp") && strings.HasSuffix(s, ":53"):
			udp53++
		case strings.HasPrefix(s, "icmp6 128"):
			t.Errorf("socket got an echo request to R: %s", s)
		}
	}
	if udp53 != 3 {
		t.Errorf("socket got %d of 3 UDP frames to port 53; saw %q", udp53, seen)
	}
}

// describe summarizes an Ethernet/IPv6 frame: "icmp6 TYPE dst", "udp
// dst:port", or "other".
func describe(fr []byte) string {
	if len(fr) < 58 || fr[12] != 0x86 || fr[13] != 0xdd {
		return "other"
	}
	dst, _ := netip.AddrFromSlice(fr[38:54])
	switch fr[20] {
	case 58:
		return fmt.Sprintf("icmp6 %d %s", fr[54], dst)
	case 17:
		return fmt.Sprintf("udp %s:%d", dst, binary.BigEndian.Uint16(fr[56:]))
	}
	return fmt.Sprintf("proto %d %s", fr[20], dst)
}

// ping sends ICMPv6 echo requests from ns to dst until one is answered.
func ping(ns string, dst netip.Addr, timeout time.Duration) error {
	var c *net.IPConn
	var to *net.IPAddr
	err := inNS(ns, func() (err error) {
		zone := dst.Zone()
		if zone != "" {
			ifi, err := net.InterfaceByName(zone)
			if err != nil {
				return err
			}
			zone = fmt.Sprint(ifi.Index)
		}
		to = &net.IPAddr{IP: dst.AsSlice(), Zone: zone}
		c, err = net.ListenIP("ip6:ipv6-icmp", nil)
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	id := uint16(os.Getpid())
	buf := make([]byte, 1500)
	deadline := time.Now().Add(timeout)
	for seq := uint16(1); time.Now().Before(deadline); seq++ {
		req := []byte{128, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq)}
		if _, err := c.WriteTo(req, to); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				break
			}
			if n >= 8 && buf[0] == 129 && binary.BigEndian.Uint16(buf[4:]) == id {
				return nil
			}
		}
	}
	return fmt.Errorf("no echo reply from %s within %v", dst, timeout)
}

// TestBurst forwards bursts of N UDP frames from A to B through R's two
// ports on one shared UMEM (the received descriptor is transmitted on the
// other port as is, no copy) and reports two rates:
//
//   - stream: A sends while R forwards. A's stack is usually the
//     bottleneck, so this is a floor.
//   - drain: A sends the whole burst while R is not forwarding, so it
//     waits on R's RX ring; then R forwards it. The time from R's first
//     Receive to its last Transmit is the forwarding path's own rate
//     (in copy mode on veth it includes the kernel's copy into an skb
//     and the delivery into B, done inside the sendto).
func TestBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("burst: skipped in -short")
	}
	for _, mode := range []Mode{ModeNative, ModeGeneric} {
		t.Run(mode.String(), func(t *testing.T) { burst(t, mode, 10000) })
	}
}

func burst(t *testing.T, mode Mode, N int) {
	// Rings and UMEM deep enough to hold a whole burst.
	tp, pa, pb := setup2Sized(t, mode, true, 16384, 16384)
	dst := udpIn(t, tp.b, "[2001:db8:b::2]:9000")
	if err := dst.SetReadBuffer(64 << 20); err != nil {
		t.Fatal(err)
	}
	src := udpIn(t, tp.a, "[2001:db8:a::2]:0")
	to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[2001:db8:b::2]:9000"))
	// One frame first, so A's neighbour entry for R exists and the burst
	// is not queued behind resolution.
	f := newForwarder(pa.sock, pb.sock, tp.macRB, tp.macVB)
	_, _ = src.WriteToUDP([]byte("warm"), to)
	f.runUntil(2*time.Second, func() bool { return f.forwarded > 0 })
	buf := make([]byte, 2000)
	_ = dst.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, _, err := dst.ReadFromUDP(buf); err != nil {
		t.Fatalf("warm-up frame did not arrive: %v", err)
	}

	var arrived atomic.Int64
	go func() {
		b := make([]byte, 2000)
		for {
			_ = dst.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, _, err := dst.ReadFromUDP(b); err != nil {
				return
			}
			arrived.Add(1)
		}
	}()

	// A sends with sendmmsg, 64 frames a call, 64 bytes of payload (a
	// 126-byte frame).
	pc := ipv6.NewPacketConn(src)
	msgs := make([]ipv6.Message, 64)
	payload := bytes.Repeat([]byte{'x'}, 64)
	for i := range msgs {
		msgs[i] = ipv6.Message{Buffers: [][]byte{payload}, Addr: to}
	}
	send := func() time.Duration {
		start := time.Now()
		for sent := 0; sent < N; {
			k, err := pc.WriteBatch(msgs[:min(64, N-sent)], 0)
			if err != nil {
				t.Errorf("send: %v", err)
				break
			}
			sent += k
		}
		return time.Since(start)
	}
	waitArrived := func(want int64) {
		deadline := time.Now().Add(3 * time.Second)
		for arrived.Load() < want && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	check := func(phase string, f *forwarder, want int64) {
		t.Helper()
		if f.forwarded != N || arrived.Load() != want {
			sa, _ := pa.sock.Stats()
			t.Errorf("%s: forwarded %d of %d, B has %d of %d; rA kernel stats %+v", phase, f.forwarded, N, arrived.Load(), want, sa)
		}
	}

	// Stream.
	f = newForwarder(pa.sock, pb.sock, tp.macRB, tp.macVB)
	sendDone := make(chan time.Duration, 1)
	go func() { sendDone <- send() }()
	f.runUntil(10*time.Second, func() bool {
		return f.forwarded >= N || (len(sendDone) > 0 && time.Since(f.last) > 300*time.Millisecond)
	})
	sendTime := <-sendDone
	waitArrived(int64(N))
	el := f.last.Sub(f.first)
	t.Logf("%s stream: A sent %d in %v (%.0f pps); R forwarded %d in %v: %.0f pps; B got %d",
		mode, N, sendTime.Round(time.Microsecond), float64(N)/sendTime.Seconds(),
		f.forwarded, el.Round(time.Microsecond), float64(f.forwarded)/el.Seconds(), arrived.Load())
	check("stream", f, int64(N))

	// Drain.
	f = newForwarder(pa.sock, pb.sock, tp.macRB, tp.macVB)
	f.in.FillFromUMEM(math.MaxInt)
	sendTime = send()
	time.Sleep(50 * time.Millisecond) // the last frames through A's and R's softirqs
	f.runUntil(10*time.Second, func() bool { return f.forwarded >= N })
	waitArrived(int64(2 * N))
	el = f.last.Sub(f.first)
	sb, _ := pb.sock.Stats()
	t.Logf("%s drain: %d frames waiting on R's RX ring forwarded in %v: %.0f pps; B got %d; rB's socket made %d sendto calls in all",
		mode, f.forwarded, el.Round(time.Microsecond), float64(f.forwarded)/el.Seconds(), arrived.Load()-int64(N), sb.Kicks)
	check("drain", f, int64(2*N))
	if u := pa.sock.UMEM(); u.BadFrees() != 0 {
		t.Errorf("%d bad frees", u.BadFrees())
	}
}

func TestAttachDetach(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, "att")
	veth(t, ns, "d0", "02:00:00:00:02:01", ns, "d1", "02:00:00:00:02:02")
	idx := ifindex(t, ns, "d0")
	p, err := NewProgram(ProgramConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, mode := range []Mode{ModeNative, ModeGeneric, ModeAuto} {
		for round := 0; round < 2; round++ {
			var got Mode
			mustInNS(t, ns, func() (err error) {
				got, err = p.Attach(idx, mode)
				return err
			})
			want := mode
			if mode == ModeAuto {
				want = ModeNative // veth has native XDP
			}
			if got != want || p.Mode() != want {
				t.Errorf("Attach(%s) = %s, Mode() %s; want %s", mode, got, p.Mode(), want)
			}
			shown := xdpShown(t, ns, "d0")
			if shown == "" || (want == ModeGeneric) != strings.Contains(shown, "xdpgeneric") {
				t.Errorf("%s attached: ip link shows %q", mode, shown)
			}
			// A second attachment on the same program, and a second
			// program on the same interface, are refused with the cause.
			mustInNS(t, ns, func() error {
				if _, err := p.Attach(idx, mode); err == nil {
					t.Errorf("second Attach of one program succeeded")
				}
				q, err := NewProgram(ProgramConfig{})
				if err != nil {
					return err
				}
				defer q.Close()
				_, err = q.Attach(idx, want)
				if err == nil || !strings.Contains(err.Error(), "already attached") {
					t.Errorf("second program on d0: %v; want 'already attached'", err)
				}
				return nil
			})
			done := make(chan error, 1)
			go func() { done <- p.Detach() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("Detach in %s mode hangs", mode)
			}
			if err := p.Detach(); err != nil {
				t.Errorf("second Detach: %v", err)
			}
			if s := xdpShown(t, ns, "d0"); s != "" {
				t.Errorf("after Detach (%s): ip link shows %q", mode, s)
			}
		}
	}
	// Causes are named.
	mustInNS(t, ns, func() error {
		_, err := p.Attach(9999, ModeAuto)
		if err == nil || !strings.Contains(err.Error(), "no such interface") {
			t.Errorf("attach to missing ifindex: %v", err)
		}
		return nil
	})
}

// txOnlySocket opens, in R, a socket with no RX ring on rB over a UMEM
// of its own (64 frames); both are closed when the test ends.
func txOnlySocket(t *testing.T, tp *topo) (*UMEM, *Socket) {
	t.Helper()
	u, err := NewUMEM(UMEMConfig{Frames: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	cfg := ringCfg(tp.rB, 64)
	cfg.NoRx = true
	var s *Socket
	mustInNS(t, tp.r, func() (err error) {
		s, err = NewSocket(u, cfg)
		return err
	})
	t.Cleanup(func() { s.Close() })
	return u, s
}

// TestTxOnlySocket transmits a hand-built frame on a socket with no RX
// ring (v0.3.3 of the old library dereferenced nil here).
func TestTxOnlySocket(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t)
	u, s := txOnlySocket(t, tp)
	if n := s.Receive(make([]Desc, 4)); n != 0 {
		t.Errorf("Receive on TX-only socket = %d", n)
	}
	if ok, err := s.Poll(10 * time.Millisecond); err != nil || !ok {
		t.Errorf("Poll on TX-only socket = %v, %v; want ready (room on the TX ring)", ok, err)
	}
	dst := udpIn(t, tp.b, "[2001:db8:b::2]:9001")
	fr := udpFrameFrom(t, tp.macRB, tp.macVB, net.ParseIP(tp.addrRB), net.ParseIP(tp.addrVB), 9001, "tx-only")
	var a [1]uint64
	if u.Alloc(a[:]) != 1 {
		t.Fatal("Alloc")
	}
	copy(u.Buffer(a[0]), fr)
	if n := s.Transmit([]Desc{{Addr: a[0], Len: uint32(len(fr))}}); n != 1 {
		t.Fatalf("Transmit = %d", n)
	}
	// A kick that finds the device busy (EAGAIN without progress, under
	// load) leaves the frame on the ring; the plane kicks again on its
	// next pass (Transmit(nil)), and so does this test while it waits.
	buf := make([]byte, 100)
	var n int
	var err error
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		s.Transmit(nil)
		_ = dst.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, _, err = dst.ReadFromUDP(buf); err == nil {
			break
		}
	}
	if err != nil || string(buf[:n]) != "tx-only" {
		t.Fatalf("B read %q, %v", buf[:n], err)
	}
	var c [4]uint64
	deadline := time.Now().Add(time.Second)
	got := 0
	for got == 0 && time.Now().Before(deadline) {
		got = s.Complete(c[:])
	}
	if got != 1 || c[0] != a[0] {
		t.Errorf("Complete = %d %x, want 1 %x", got, c[0], a[0])
	}
}

func udpFrameFrom(t testing.TB, srcMAC, dstMAC net.HardwareAddr, src, dst net.IP, port uint16, payload string) []byte {
	eth := eth6()
	eth.SrcMAC, eth.DstMAC = srcMAC, dstMAC
	ip := ip6(17, dst, 64)
	ip.SrcIP = src
	return frame(t, eth, ip, &layers.UDP{SrcPort: 40000, DstPort: layers.UDPPort(port)}, gopacket.Payload(payload))
}

// TestCloseAndLeaks opens and closes the whole forwarding shape twice and
// checks that file descriptors and goroutines come back to where they
// were, that Close is idempotent and that a closed socket's batch
// methods return 0.
func TestCloseAndLeaks(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t) // namespaces and their fds are made before counting
	cycle := func() {
		u, err := NewUMEM(UMEMConfig{Frames: 256})
		if err != nil {
			t.Fatal(err)
		}
		var ports []*Program
		var socks []*Socket
		for i, idx := range []int{tp.rA, tp.rB} {
			p, err := NewProgram(ProgramConfig{Queues: 1})
			if err != nil {
				t.Fatal(err)
			}
			mode := []Mode{ModeNative, ModeGeneric}[i]
			var s *Socket
			mustInNS(t, tp.r, func() error {
				if _, err := p.Attach(idx, mode); err != nil {
					return err
				}
				s, err = NewSocket(u, SocketConfig{Ifindex: idx, RxSize: 64, TxSize: 64, FillSize: 64, CompletionSize: 64})
				return err
			})
			if err := p.Register(0, s); err != nil {
				t.Fatal(err)
			}
			s.FillFromUMEM(64)
			ports = append(ports, p)
			socks = append(socks, s)
		}
		if free := u.FreeFrames(); free != 256-128 {
			t.Errorf("free frames with two filled sockets = %d, want %d", free, 256-128)
		}
		for _, s := range socks {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			if s.FD() != -1 || s.Receive(make([]Desc, 1)) != 0 || s.Transmit([]Desc{{}}) != 0 ||
				s.Fill([]uint64{0}) != 0 || s.Complete(make([]uint64, 1)) != 0 {
				t.Errorf("closed socket still works")
			}
			if _, err := s.Poll(0); !errors.Is(err, ErrClosed) {
				t.Errorf("Poll after Close: %v", err)
			}
			if err := ports[0].Register(0, s); !errors.Is(err, ErrClosed) {
				t.Errorf("Register after Close: %v", err)
			}
		}
		// The frames on the closed sockets' fill rings are free again.
		if free := u.FreeFrames(); free != 256 {
			t.Errorf("free frames after Close = %d, want 256", free)
		}
		for _, p := range ports {
			if err := p.Close(); err != nil {
				t.Errorf("program Close: %v", err)
			}
			if err := p.Close(); err != nil {
				t.Errorf("second program Close: %v", err)
			}
		}
		if err := u.Close(); err != nil {
			t.Errorf("UMEM Close: %v", err)
		}
		if err := u.Close(); err != nil {
			t.Errorf("second UMEM Close: %v", err)
		}
	}
	// Goroutines of inNS end, closing their namespace's fd, just after
	// they answer: wait for them before counting, or a count can catch one
	// (the baseline once did, and the fds seemed to go 11 -> 10).
	settle := func(n int) {
		deadline := time.Now().Add(2 * time.Second)
		for runtime.NumGoroutine() > n && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	gPre := runtime.NumGoroutine()
	cycle() // warm up lazily created runtime and library state
	settle(gPre)
	fds0, g0 := countFDs(t), runtime.NumGoroutine()
	cycle()
	cycle()
	settle(g0)
	if fds1, g1 := countFDs(t), runtime.NumGoroutine(); fds1 != fds0 || g1 > g0 {
		t.Errorf("fds %d -> %d, goroutines %d -> %d", fds0, fds1, g0, g1)
	}
	for _, dev := range []string{"rA", "rB"} {
		if s := xdpShown(t, tp.r, dev); s != "" {
			t.Errorf("%s still shows %q", dev, s)
		}
	}
}

func countFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestUnboundSocket removes the interface under a socket: Poll must
// report the error instead of hanging or panicking.
func TestUnboundSocket(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, "unb")
	veth(t, ns, "u0", "02:00:00:00:03:01", ns, "u1", "02:00:00:00:03:02")
	idx := ifindex(t, ns, "u0")
	u, err := NewUMEM(UMEMConfig{Frames: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	var s *Socket
	mustInNS(t, ns, func() (err error) {
		s, err = NewSocket(u, SocketConfig{Ifindex: idx, RxSize: 64, TxSize: 64, FillSize: 64, CompletionSize: 64})
		return err
	})
	s.FillFromUMEM(32)
	run(t, "ip", "-n", ns, "link", "del", "u0")
	_, err = s.Poll(50 * time.Millisecond)
	if err == nil {
		t.Fatal("Poll on an unbound socket: no error")
	}
	t.Logf("Poll after the interface went away: %v", err)
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if u.FreeFrames() != 64 {
		t.Errorf("free frames after Close = %d, want 64", u.FreeFrames())
	}
}

// TestBatchAllocs checks that the batch methods allocate nothing, with
// frames flowing from A through R's two ports to B.
func TestBatchAllocs(t *testing.T) {
	tp, pa, pb := setup2(t, ModeNative, true)
	src := udpIn(t, tp.a, "[2001:db8:a::2]:0")
	_ = udpIn(t, tp.b, "[2001:db8:b::2]:9000")
	to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[2001:db8:b::2]:9000"))
	rx := make([]Desc, 64)
	addrs := make([]uint64, 64)
	var moved int
	step := func() {
		if n := pb.sock.Complete(addrs); n > 0 {
			pa.sock.Fill(addrs[:n])
		}
		n := pa.sock.Receive(rx)
		moved += pb.sock.Transmit(rx[:n])
		pa.sock.FillFromUMEM(0)
	}
	for i := 0; i < 50; i++ {
		_, _ = src.WriteToUDP([]byte("alloc"), to)
	}
	time.Sleep(50 * time.Millisecond)
	if a := testing.AllocsPerRun(200, step); a != 0 {
		t.Errorf("Receive/Transmit/Fill/Complete allocate %.1f per run", a)
	}
	if moved == 0 {
		t.Errorf("no frame moved during the measurement")
	}
	if a := testing.AllocsPerRun(100, func() { _, _ = pa.sock.Poll(0) }); a != 0 {
		t.Errorf("Poll allocates %.1f per run", a)
	}
}

// TestAttachCauses checks what veth refuses in native mode, that the
// error names it, and that ModeAuto then falls back to generic.
func TestAttachCauses(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, "cause")
	// Native XDP on veth needs the peer's MTU to fit a page.
	veth(t, ns, "j0", "02:00:00:00:04:01", ns, "j1", "02:00:00:00:04:02", "mtu", "9000")
	// And at least as many rx queues as the peer has tx queues.
	run(t, "ip", "-n", ns, "link", "add", "q0", "numrxqueues", "1", "numtxqueues", "1",
		"type", "veth", "peer", "name", "q1", "numrxqueues", "4", "numtxqueues", "4")
	run(t, "ip", "-n", ns, "link", "set", "q0", "up")
	p, err := NewProgram(ProgramConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, c := range []struct{ dev, want string }{{"j0", "MTU too large"}, {"q0", "fewer rx queues"}} {
		idx := ifindex(t, ns, c.dev)
		mustInNS(t, ns, func() error {
			if m, err := p.Attach(idx, ModeNative); err == nil || !strings.Contains(err.Error(), c.want) || m != ModeAuto {
				t.Errorf("%s native: %v, %v; want an error with %q", c.dev, m, err, c.want)
			}
			m, err := p.Attach(idx, ModeAuto)
			if err != nil || m != ModeGeneric {
				t.Errorf("%s auto: %v, %v; want generic", c.dev, m, err)
			}
			return p.Detach()
		})
	}
}

// TestPoller waits on both of R's sockets and finds the one with a frame.
func TestPoller(t *testing.T) {
	tp, pa, pb := setup2(t, ModeNative, true)
	pb.sock.FillFromUMEM(64)
	pl := NewPoller(pa.sock, pb.sock)
	if n, err := pl.Wait(10 * time.Millisecond); n != 0 || err != nil {
		t.Fatalf("idle Wait = %d, %v", n, err)
	}
	src := udpIn(t, tp.b, "[2001:db8:b::2]:0")
	to := &net.UDPAddr{IP: net.ParseIP(tp.addrVA), Port: 9000}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		_, _ = src.WriteToUDP([]byte("to A"), to)
		n, err := pl.Wait(100 * time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			if n != 1 || pl.Ready(0) || !pl.Ready(1) {
				t.Fatalf("Wait = %d, ready %v %v; want only rB's socket", n, pl.Ready(0), pl.Ready(1))
			}
			rx := make([]Desc, 4)
			if k := pb.sock.Receive(rx); k == 0 || !strings.HasPrefix(describe(pb.sock.Frame(rx[0])), "udp 2001:db8:a::2:9000") {
				t.Fatalf("rB received %d: %s", k, describe(pb.sock.Frame(rx[0])))
			}
			return
		}
	}
	t.Fatal("no frame from B on rB's socket")
}

// TestShareFallback makes the kernel refuse to share a UMEM (its only
// socket was unbound when its interface went away) and checks that the
// new socket gets a private UMEM, says so, and works.
func TestShareFallback(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t)
	veth(t, tp.r, "gone", "02:00:00:00:06:01", tp.r, "gone1", "02:00:00:00:06:02")
	gone := ifindex(t, tp.r, "gone")
	u, err := NewUMEM(UMEMConfig{Frames: 128})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	var first *Socket
	mustInNS(t, tp.r, func() (err error) {
		first, err = NewSocket(u, ringCfg(gone, 32))
		return err
	})
	run(t, "ip", "-n", tp.r, "link", "del", "gone")

	cfg := ringCfg(tp.rB, 32)
	cfg.NoShareFallback = true
	mustInNS(t, tp.r, func() error {
		if _, err := NewSocket(u, cfg); err == nil {
			t.Errorf("NoShareFallback: sharing with an unbound socket succeeded")
		}
		return nil
	})
	cfg.NoShareFallback = false
	var s *Socket
	mustInNS(t, tp.r, func() (err error) {
		s, err = NewSocket(u, cfg)
		return err
	})
	info := s.Info()
	t.Logf("fallback: %+v", info)
	if info.SharedUMEM || info.ShareErr == nil || s.UMEM() == u || s.SameUMEM(first) {
		t.Fatalf("no private UMEM: %+v", info)
	}
	// The private UMEM carries a frame to B.
	pu := s.UMEM()
	dst := udpIn(t, tp.b, "[2001:db8:b::2]:9002")
	fr := udpFrameFrom(t, tp.macRB, tp.macVB, net.ParseIP(tp.addrRB), net.ParseIP(tp.addrVB), 9002, "private")
	var a [1]uint64
	pu.Alloc(a[:])
	copy(pu.Buffer(a[0]), fr)
	if s.Transmit([]Desc{{Addr: a[0], Len: uint32(len(fr))}}) != 1 {
		t.Fatal("Transmit")
	}
	buf := make([]byte, 100)
	_ = dst.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, _, err := dst.ReadFromUDP(buf); err != nil || string(buf[:n]) != "private" {
		t.Fatalf("B read %q, %v", buf[:n], err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if pu.Frame(Desc{Addr: 0, Len: 1}) != nil {
		t.Error("the private UMEM outlived its socket")
	}
}

// TestFillRingKernelCache pins down two kernel behaviours of copy mode
// that the plane's loss counters and ring sizing depend on (see
// bench/results/issue15-xdp-profile.txt):
//
//  1. the kernel hands fill-ring slots back as it uses them (it publishes
//     its consumer index at each flush), so a plane that keeps the ring
//     full can top it up while traffic flows: an empty fill ring means
//     the worker did not run, not that the kernel kept slots hidden;
//  2. a frame lost to the empty fill ring is counted in both
//     RxFillRingEmpty and RxDropped (which is why pdrelay's rx_dropped
//     leaves those out).
func TestFillRingKernelCache(t *testing.T) {
	const ring = 64
	tp, pa, _ := setup2Sized(t, ModeAuto, true, 256, ring) // pa's fill ring: full, 64 frames
	if pa.sock.Info().ZeroCopy {
		t.Skip("zero-copy socket: the test is about copy mode")
	}
	src := udpIn(t, tp.a, "[2001:db8:a::2]:0")
	to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[2001:db8:b::2]:9000"))
	rx := make([]Desc, ring)
	received := 0
	// receive sends until n frames in all reached the socket, keeping
	// them (no refill).
	receive := func(n int) {
		t.Helper()
		for end := time.Now().Add(3 * time.Second); received < n && time.Now().Before(end); {
			_, _ = src.WriteToUDP([]byte("fill"), to)
			time.Sleep(time.Millisecond)
			received += pa.sock.Receive(rx)
		}
		if received < n {
			t.Fatalf("%d frames reached the socket, want %d", received, n)
		}
	}
	receive(10)
	if free := pa.sock.fill.freeSlots(ring); int(free) != received || received >= ring {
		t.Fatalf("after %d of %d fill-ring frames were used, %d slot(s) free; want as many as were used", received, ring, free)
	}
	// Use up the rest and go on sending: the ring runs dry.
	receive(ring)
	var st Stats
	for end := time.Now().Add(3 * time.Second); st.RxFillRingEmpty == 0 && time.Now().Before(end); {
		_, _ = src.WriteToUDP([]byte("dry"), to)
		time.Sleep(time.Millisecond)
		received += pa.sock.Receive(rx)
		var err error
		if st, err = pa.sock.Stats(); err != nil {
			t.Fatal(err)
		}
	}
	if received != ring || st.RxFillRingEmpty == 0 {
		t.Fatalf("received %d frames (want the ring's %d), fill ring empty %d (want > 0)", received, ring, st.RxFillRingEmpty)
	}
	if st.RxDropped != st.RxFillRingEmpty {
		t.Errorf("RxDropped %d, RxFillRingEmpty %d: want equal (copy mode counts the loss in both)", st.RxDropped, st.RxFillRingEmpty)
	}
	if free := pa.sock.fill.freeSlots(ring); free != ring {
		t.Errorf("dry fill ring shows %d free slots, want all %d", free, ring)
	}
	t.Logf("stats %+v", st)
}

// TestTxDropped: with B's end of the veth down, rB refuses every frame
// R's socket transmits. The kernel completes each one unsent and fails
// the sendto with EBUSY; Stats.TxDropped must count exactly the frames
// sent (the device's tx_dropped at least as many), every frame must come
// back through Complete, and once vB is up again a frame gets through
// and nothing more is counted.
func TestTxDropped(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t)
	u, s := txOnlySocket(t, tp)
	if s.Info().ZeroCopy {
		t.Skip("zero-copy socket: EBUSY means a drop only in copy mode")
	}
	txDropped := func() int {
		out, err := exec.Command("ip", "netns", "exec", tp.r, "cat", "/sys/class/net/rB/statistics/tx_dropped").Output()
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(out)))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	fr := udpFrameFrom(t, tp.macRB, tp.macVB, net.ParseIP(tp.addrRB), net.ParseIP(tp.addrVB), 9002, "dropped")
	send := func(n int) {
		descs := make([]Desc, n)
		addrs := make([]uint64, n)
		if u.Alloc(addrs) != n {
			t.Fatal("Alloc")
		}
		for i, a := range addrs {
			copy(u.Buffer(a), fr)
			descs[i] = Desc{Addr: a, Len: uint32(len(fr))}
		}
		if k := s.Transmit(descs); k != n {
			t.Fatalf("Transmit = %d, want %d", k, n)
		}
		for end := time.Now().Add(2 * time.Second); s.TxQueued() > 0 && time.Now().Before(end); {
			s.Transmit(nil)
		}
	}
	complete := func() int {
		var c [64]uint64
		got := 0
		for end := time.Now().Add(time.Second); time.Now().Before(end); {
			n := s.Complete(c[:])
			u.Free(c[:n])
			got += n
			if n == 0 && s.TxQueued() == 0 {
				break
			}
		}
		return got
	}

	run(t, "ip", "-n", tp.b, "link", "set", "vB", "down")
	dev0 := txDropped()
	const N = 5
	send(N)
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	dev := txDropped() - dev0
	// The device may count a frame of R's own stack too.
	if c := complete(); st.TxDropped != N || dev < N || c != N {
		t.Errorf("vB down: TxDropped %d, completed %d, rB tx_dropped +%d; want %d, %d and at least %d (stats %+v)",
			st.TxDropped, c, dev, N, N, N, st)
	}

	// Up again; the link going down took B's address with it.
	run(t, "ip", "-n", tp.b, "link", "set", "vB", "up")
	run(t, "ip", "-n", tp.b, "addr", "replace", tp.addrVB+"/64", "dev", "vB", "nodad")
	dst := udpIn(t, tp.b, "[2001:db8:b::2]:9002")
	buf := make([]byte, 100)
	var n int
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		send(1)
		complete()
		_ = dst.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, _, err = dst.ReadFromUDP(buf); err == nil {
			break
		}
	}
	if string(buf[:n]) != "dropped" {
		t.Fatalf("vB up: B read %q, %v", buf[:n], err)
	}
	if st2, _ := s.Stats(); st2.TxDropped != N {
		t.Errorf("vB up: TxDropped went from %d to %d", N, st2.TxDropped)
	}
}
