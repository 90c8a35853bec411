package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pdrelay/pdrelay/internal/nstest"
)

// Test topology, all in namespaces of the test's own (cx<pid>-<rand>-…):
//
//	G: ga ——— xa :X: xb ——— sb :S
//
// xskfwd forwards between xa and xb in X. G and S send and capture raw
// frames on packet sockets, so no IP stack is involved: the frames reach
// X exactly as built, and what S captures is exactly what xskfwd sent.
var (
	macGA = mustMAC("02:cc:00:00:00:01")
	macXA = mustMAC("02:cc:00:00:00:02")
	macXB = mustMAC("02:cc:00:00:00:03")
	macSB = mustMAC("02:cc:00:00:00:04")
	ipG   = [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 15: 1} // 2001:db8:1::1
	ipS   = [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 2, 15: 2} // 2001:db8:2::2
)

const testPort = 9000

func mustMAC(s string) [6]byte {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return [6]byte(m)
}

func macString(m [6]byte) string { return net.HardwareAddr(m[:]).String() }

type topo struct {
	g, x, s string
}

// newTopo builds G, X and S; extra (say "numrxqueues", "2") goes to both
// ends of both veth pairs.
func newTopo(t *testing.T, extra ...string) topo {
	t.Helper()
	tp := topo{g: nstest.NewNS(t, "cx", "g"), x: nstest.NewNS(t, "cx", "x"), s: nstest.NewNS(t, "cx", "s")}
	veth := func(nsA, a string, macA [6]byte, nsB, b string, macB [6]byte) {
		args := []string{"link", "add", a, "netns", nsA, "address", macString(macA)}
		args = append(args, extra...)
		args = append(args, "type", "veth", "peer", "name", b, "netns", nsB, "address", macString(macB))
		args = append(args, extra...)
		nstest.Run(t, "ip", args...)
		nstest.Run(t, "ip", "-n", nsA, "link", "set", a, "up")
		nstest.Run(t, "ip", "-n", nsB, "link", "set", b, "up")
	}
	veth(tp.g, "ga", macGA, tp.x, "xa", macXA)
	veth(tp.x, "xb", macXB, tp.s, "sb", macSB)
	return tp
}

// buildBinary builds xskfwd once per test binary.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "xskfwd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// fwd is a running xskfwd.
type fwd struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr *strings.Builder
}

// startFwd runs xskfwd in X with extra flags and waits for "ready".
func startFwd(t *testing.T, bin string, tp topo, extra ...string) *fwd {
	t.Helper()
	args := append([]string{"netns", "exec", tp.x, bin, "-a", "xa", "-b", "xb",
		"-mac-a", macString(macGA), "-mac-b", macString(macSB)}, extra...)
	f := &fwd{cmd: exec.Command("ip", args...), lines: make(chan string, 16), stderr: new(strings.Builder)}
	f.cmd.Stderr = f.stderr
	out, err := f.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if f.cmd.ProcessState == nil {
			_ = f.cmd.Process.Kill()
			_ = f.cmd.Wait()
		}
	})
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			f.lines <- sc.Text()
		}
		close(f.lines)
	}()
	select {
	case l := <-f.lines:
		if l != "ready" {
			t.Fatalf("first line %q, want ready; stderr:\n%s", l, f.stderr)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("no ready within 15s; stderr:\n%s", f.stderr)
	}
	return f
}

// stop sends SIGTERM and returns the one JSON line; the process must
// exit 0 and print nothing else.
func (f *fwd) stop(t *testing.T) Report {
	t.Helper()
	if err := f.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var lines []string
	timeout := time.After(10 * time.Second)
	for done := false; !done; {
		select {
		case l, ok := <-f.lines:
			if !ok {
				done = true
				break
			}
			lines = append(lines, l)
		case <-timeout:
			t.Fatalf("no exit within 10s of SIGTERM; stdout %q; stderr:\n%s", lines, f.stderr)
		}
	}
	if err := f.cmd.Wait(); err != nil {
		t.Fatalf("exit: %v; stderr:\n%s", err, f.stderr)
	}
	if len(lines) != 1 {
		t.Fatalf("after SIGTERM stdout has %d lines, want 1 JSON line: %q", len(lines), lines)
	}
	var r Report
	dec := json.NewDecoder(strings.NewReader(lines[0]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("JSON line %q: %v", lines[0], err)
	}
	t.Logf("report: %s", lines[0])
	return r
}

// udpFrame is an Ethernet + IPv6 + UDP frame to testPort with a correct
// checksum; its payload is "cx", the tag, and seq.
func udpFrame(dst, src [6]byte, ipSrc, ipDst [16]byte, tag byte, seq uint32) []byte {
	payload := []byte{'c', 'x', tag, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(payload[3:], seq)
	f := make([]byte, 14+40+8+len(payload))
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:], 0x86dd)
	ip := f[14:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(8+len(payload))) // payload length
	ip[6], ip[7] = 17, 64                                      // UDP, hop limit
	copy(ip[8:24], ipSrc[:])
	copy(ip[24:40], ipDst[:])
	u := ip[40:]
	binary.BigEndian.PutUint16(u[0:], 40000)
	binary.BigEndian.PutUint16(u[2:], testPort)
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	copy(u[8:], payload)
	// Checksum over the pseudo-header and the datagram.
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(ip[8:40])
	sum += uint32(len(u)) + 17
	add(u)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(u[6:], ^uint16(sum))
	return f
}

// packetSocket opens a packet socket on dev in ns: for sending (any
// protocol) or, with rx, receiving IPv6 (incoming only).
func packetSocket(t *testing.T, ns, dev string) int {
	t.Helper()
	var fd int
	err := nstest.InNS(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		proto := htons(unix.ETH_P_IPV6)
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return err
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000})
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatalf("packet socket on %s in %s: %v", dev, ns, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// sendPaced writes frames to fd in bursts of 32, with a pause between
// bursts so that no ring on the way overflows, retrying ENOBUFS.
func sendPaced(fd int, frames [][]byte) error {
	for i, f := range frames {
		for {
			_, err := unix.Write(fd, f)
			if err == nil {
				break
			}
			if !errors.Is(err, unix.ENOBUFS) && !errors.Is(err, unix.EAGAIN) {
				return fmt.Errorf("send frame %d: %w", i, err)
			}
			time.Sleep(time.Millisecond)
		}
		if i%32 == 31 {
			time.Sleep(500 * time.Microsecond)
		}
	}
	return nil
}

// capture counts the test frames with tag that arrive on fd with the
// given MACs, and those with other MACs, until want arrived or the
// socket is idle for idle.
func capture(fd int, tag byte, dst, src [6]byte, want int, idle time.Duration) (good, bad int) {
	buf := make([]byte, 2048)
	last := time.Now()
	for good+bad < want && time.Since(last) < idle {
		n, err := unix.Read(fd, buf)
		if err != nil || n < 14+40+8+7 {
			continue
		}
		f := buf[:n]
		if f[14+6] != 17 || binary.BigEndian.Uint16(f[14+40+2:]) != testPort || f[62] != 'c' || f[63] != 'x' || f[64] != tag {
			continue
		}
		last = time.Now()
		if [6]byte(f[0:6]) == dst && [6]byte(f[6:12]) == src {
			good++
		} else {
			bad++
		}
	}
	return good, bad
}

// TestForwardBothWays runs xskfwd between xa and xb, sends N frames from
// G to S and M from S to G, and checks that S and G got every frame with
// the MACs rewritten (destination: the -mac flag of the egress side;
// source: the egress port's own), and that the JSON line on SIGTERM
// counts them: rx and tx at least N+M (stray IPv6 frames may add to
// them), every drop counter zero, each port's XDP program redirected its
// side's frames.
func TestForwardBothWays(t *testing.T) {
	nstest.RequireRoot(t)
	bin := buildBinary(t)
	tp := newTopo(t)
	f := startFwd(t, bin, tp)

	gTx, gRx := packetSocket(t, tp.g, "ga"), packetSocket(t, tp.g, "ga")
	sTx, sRx := packetSocket(t, tp.s, "sb"), packetSocket(t, tp.s, "sb")
	const N, M = 3000, 1000
	var toS, toG [][]byte
	for i := range N {
		toS = append(toS, udpFrame(macXA, macGA, ipG, ipS, 'f', uint32(i)))
	}
	for i := range M {
		toG = append(toG, udpFrame(macXB, macSB, ipS, ipG, 'r', uint32(i)))
	}
	type result struct{ good, bad int }
	gotS, gotG := make(chan result, 1), make(chan result, 1)
	go func() { g, b := capture(sRx, 'f', macSB, macXB, N, 2*time.Second); gotS <- result{g, b} }()
	go func() { g, b := capture(gRx, 'r', macGA, macXA, M, 2*time.Second); gotG <- result{g, b} }()
	if err := sendPaced(gTx, toS); err != nil {
		t.Fatal(err)
	}
	if err := sendPaced(sTx, toG); err != nil {
		t.Fatal(err)
	}
	s, g := <-gotS, <-gotG
	r := f.stop(t)
	if s.good != N || s.bad != 0 {
		t.Errorf("S got %d of %d frames with dst %s src %s, %d with other MACs", s.good, N, macString(macSB), macString(macXB), s.bad)
	}
	if g.good != M || g.bad != 0 {
		t.Errorf("G got %d of %d frames with dst %s src %s, %d with other MACs", g.good, M, macString(macGA), macString(macXA), g.bad)
	}
	if r.Rx < N+M || r.Tx < N+M || r.TxCompleted != r.Tx {
		t.Errorf("rx %d, tx %d, tx_completed %d; want rx and tx >= %d, all completed", r.Rx, r.Tx, r.TxCompleted, N+M)
	}
	for reason, n := range r.Drops {
		if n != 0 {
			t.Errorf("drops[%s] = %d, want 0", reason, n)
		}
	}
	if len(r.Drops) != 10 {
		t.Errorf("drops has %d reasons, want 10: %v", len(r.Drops), r.Drops)
	}
	if r.Queues != 1 || len(r.Sockets) != 2 || r.Batch != 64 {
		t.Errorf("queues %d, %d sockets, batch %d; want 1 queue (a single-queue veth), 2 sockets, batch 64", r.Queues, len(r.Sockets), r.Batch)
	}
	want := map[string]uint64{"xa": N, "xb": M}
	for _, p := range r.Programs {
		if p.Redirect < want[p.Port] {
			t.Errorf("program on %s redirected %d, want >= %d", p.Port, p.Redirect, want[p.Port])
		}
		delete(want, p.Port)
	}
	if len(want) != 0 {
		t.Errorf("no program counters for %v", want)
	}
}

// TestNoSocketCounted: on veths with two queues, xskfwd -queues 1 has no
// socket on queue 1. Frames G sends from CPU 0 (XPS: tx queue 0, which X
// sees as rx queue 0) are forwarded; those sent from CPU 1 arrive on
// queue 1, go to X's kernel and are lost for the forwarder: the JSON line
// must count exactly them as xdp_no_socket. Then the same with the
// default -queues (both queues): everything is forwarded.
func TestNoSocketCounted(t *testing.T) {
	nstest.RequireRoot(t)
	if runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs to steer frames to two queues")
	}
	bin := buildBinary(t)
	tp := newTopo(t, "numtxqueues", "2", "numrxqueues", "2")
	for q := range 2 {
		nstest.Run(t, "ip", "netns", "exec", tp.g, "sh", "-c", fmt.Sprintf("echo %x > /sys/class/net/ga/queues/tx-%d/xps_cpus", 1<<q, q))
	}
	sRx := packetSocket(t, tp.s, "sb")
	// send sends n frames tagged tag from a thread pinned to cpu.
	send := func(cpu, n int, tag byte) {
		fd := packetSocket(t, tp.g, "ga")
		var frames [][]byte
		for i := range n {
			frames = append(frames, udpFrame(macXA, macGA, ipG, ipS, tag, uint32(i)))
		}
		done := make(chan error, 1)
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var set unix.CPUSet
			set.Set(cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				done <- err
				return
			}
			done <- sendPaced(fd, frames)
		}()
		if err := <-done; err != nil {
			t.Fatalf("send from CPU %d: %v", cpu, err)
		}
	}

	for _, c := range []struct {
		name   string
		flags  []string
		queues int
	}{
		{"one socket of two", []string{"-queues", "1"}, 1},
		{"every queue", nil, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := startFwd(t, bin, tp, c.flags...)
			const N0, N1 = 1000, 700
			tag := byte('a' + c.queues)
			got := make(chan int, 1)
			go func() { g, _ := capture(sRx, tag, macSB, macXB, N0+N1, time.Second); got <- g }()
			send(0, N0, tag)
			send(1, N1, tag)
			s := <-got
			r := f.stop(t)
			if r.Queues != c.queues || len(r.Sockets) != 2*c.queues {
				t.Fatalf("queues %d, %d sockets; want %d, %d", r.Queues, len(r.Sockets), c.queues, 2*c.queues)
			}
			if r.Mode != "native" {
				t.Skipf("XDP attached in %s mode: the receive queue is the sender's tx queue only in native mode", r.Mode)
			}
			wantS, wantLost := N0+N1, 0
			if c.queues == 1 {
				wantS, wantLost = N0, N1
			}
			if s != wantS || r.Drops["xdp_no_socket"] != uint64(wantLost) {
				t.Errorf("S got %d (want %d), xdp_no_socket %d (want %d)", s, wantS, r.Drops["xdp_no_socket"], wantLost)
			}
			// Every frame sent is either delivered or counted.
			if uint64(s)+r.Drops["xdp_no_socket"] != N0+N1 {
				t.Errorf("delivered %d + counted no_socket %d != sent %d", s, r.Drops["xdp_no_socket"], N0+N1)
			}
		})
	}
}
