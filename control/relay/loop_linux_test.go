//go:build linux

package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pdrelay/pdrelay/control/dhcp6"
	"github.com/pdrelay/pdrelay/internal/testutil"
)

// appendCmsg appends one control message to b, padded as the kernel pads it.
func appendCmsg(b []byte, level, typ int32, data []byte) []byte {
	m := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&m[0]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(len(data)))
	copy(m[unix.CmsgLen(0):], data)
	return append(b, m...)
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// TestControlMessages: the uplink's interface and overflow count, and a
// packet socket's checksum status, are read from their control messages
// in any order; what is missing, short or cut off reads as absent.
func TestControlMessages(t *testing.T) {
	pi := make([]byte, unix.SizeofInet6Pktinfo)
	binary.NativeEndian.PutUint32(pi[16:], 7)
	both := appendCmsg(appendCmsg(nil, unix.SOL_SOCKET, unix.SO_RXQ_OVFL, u32(42)), unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, pi)
	if ifi, drops, ok := uplinkAux(both); ifi != 7 || drops != 42 || !ok {
		t.Errorf("uplinkAux = %d, %d, %v; want 7, 42, true", ifi, drops, ok)
	}
	onlyPI := appendCmsg(nil, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, pi)
	if ifi, _, ok := uplinkAux(onlyPI); ifi != 7 || ok {
		t.Errorf("uplinkAux without SO_RXQ_OVFL = %d, %v", ifi, ok)
	}
	for _, bad := range [][]byte{nil, both[:10], both[:len(both)-1], appendCmsg(nil, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, pi[:8])} {
		if ifi, _, _ := uplinkAux(bad); ifi == 7 && len(bad) < len(onlyPI) {
			t.Errorf("uplinkAux(% x) read an interface", bad)
		}
	}

	aux := func(status uint32) []byte {
		return appendCmsg(nil, unix.SOL_PACKET, unix.PACKET_AUXDATA, append(u32(status), make([]byte, auxdataLen-4)...))
	}
	for _, c := range []struct {
		oob  []byte
		want Checksum
	}{
		{aux(unix.TP_STATUS_CSUMNOTREADY), ChecksumPartial},
		{aux(unix.TP_STATUS_CSUM_VALID), ChecksumValid},
		{aux(0), ChecksumUnknown},
		{append(appendCmsg(nil, unix.SOL_SOCKET, unix.SO_RXQ_OVFL, u32(1)), aux(unix.TP_STATUS_CSUM_VALID)...), ChecksumValid},
		{aux(unix.TP_STATUS_CSUM_VALID)[:unix.SizeofCmsghdr+2], ChecksumUnknown},
		{nil, ChecksumUnknown},
	} {
		if got := auxChecksum(c.oob); got != c.want {
			t.Errorf("auxChecksum(% x) = %v, want %v", c.oob, got, c.want)
		}
	}
}

// auxdataLen is sizeof(struct tpacket_auxdata).
const auxdataLen = 20

// FuzzControlMessages: no control message block makes the readers fail.
func FuzzControlMessages(f *testing.F) {
	pi := make([]byte, unix.SizeofInet6Pktinfo)
	f.Add(appendCmsg(appendCmsg(nil, unix.SOL_SOCKET, unix.SO_RXQ_OVFL, u32(3)), unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, pi))
	f.Add(appendCmsg(nil, unix.SOL_PACKET, unix.PACKET_AUXDATA, make([]byte, auxdataLen)))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, oob []byte) {
		uplinkAux(oob)
		auxChecksum(oob)
	})
}

// TestRxRingFromKernel reads datagrams that overflowed a small socket
// through the ring the uplink uses: each keeps its bytes and source, the
// kernel's control messages give the interface they came in on and how
// many it dropped, and a handed-over buffer keeps its datagram while the
// ring reads the next ones into new buffers.
func TestRxRingFromKernel(t *testing.T) {
	rx, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rx)
	for _, o := range [][3]int{
		{unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1},
		{unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1},
		{unix.SOL_SOCKET, unix.SO_RCVBUF, 4096}, // a few datagrams
	} {
		if err := unix.SetsockoptInt(rx, o[0], o[1], o[2]); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Bind(rx, &unix.SockaddrInet6{Addr: netip.IPv6Loopback().As16()}); err != nil {
		t.Skipf("skipping: no IPv6 loopback: %v", err)
	}
	sa, err := unix.Getsockname(rx)
	if err != nil {
		t.Fatal(err)
	}
	to := &net.UDPAddr{IP: net.IPv6loopback, Port: sa.(*unix.SockaddrInet6).Port}
	tx, err := net.DialUDP("udp6", nil, to)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	send := func(from, to int) {
		for i := from; i < to; i++ {
			if _, err := tx.Write([]byte{byte(i), 1, 2, 3}); err != nil {
				t.Fatal(err)
			}
		}
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	r := newRxRing(4, 0, true)
	defer r.release()
	var got []byte
	var kept []*[]byte
	var drops uint32
	readAll := func() {
		for {
			n, err := r.recv(rx, true)
			if errors.Is(err, unix.EAGAIN) {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				// A datagram queued after drops carries their count.
				ifi, d, ok := uplinkAux(r.oobOf(i))
				if ifi != lo.Index {
					t.Fatalf("datagram %d: interface %d, want %d", len(got), ifi, lo.Index)
				}
				if ok {
					drops = d
				}
				if src := netip.AddrFrom16(r.names[i].Addr); src != netip.IPv6Loopback() {
					t.Fatalf("source %v", src)
				}
				data := r.data(i)
				if len(data) != 4 || data[1] != 1 {
					t.Fatalf("datagram % x", data)
				}
				got = append(got, data[0])
				bp := r.handOver(i)
				if &(*bp)[0] != &data[0] {
					t.Fatal("handOver gave away another buffer")
				}
				kept = append(kept, bp)
			}
		}
	}
	const sent = 200 // far more than the buffer holds
	send(0, sent)
	readAll()
	if len(got) == 0 || len(got) == sent {
		t.Fatalf("read %d of %d datagrams: the buffer did not overflow, or nothing came", len(got), sent)
	}
	first := len(got)
	send(sent, sent+1)
	readAll()
	if len(got) != first+1 {
		t.Fatalf("read %d datagrams after one more", len(got)-first)
	}
	if int(drops) != sent-first {
		t.Errorf("overflow count %d, want %d (%d of %d read)", drops, sent-first, first, sent)
	}
	for i, bp := range kept {
		if (*bp)[0] != got[i] {
			t.Fatalf("handed-over datagram %d overwritten: %d, want %d", i, (*bp)[0], got[i])
		}
		serverBufs.Put(bp)
	}
}

// TestConnCloseWhileRunning: Close from another goroutine stops Run,
// which closes the sockets (the port can be bound again) and returns nil;
// a Reconfigure afterwards fails with ErrClosed and changes nothing.
func TestConnCloseWhileRunning(t *testing.T) {
	tp := newRRTopo(t)
	_, conn := listenTestConn(t, tp, nil, []netip.Addr{rrServer1}, slog.New(slog.NewTextHandler(&testutil.SyncBuffer{}, nil)))
	runErr := make(chan error, 1)
	go func() { runErr <- conn.Run(context.Background(), &recorder{}) }()
	srv := tp.startServers(t)
	ca := tp.client(t, "ca")
	waitRelaying(t, ca, srv)

	if err := conn.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case <-conn.runDone:
	default:
		t.Fatal("Close returned before Run")
	}
	if err := <-runErr; err != nil {
		t.Errorf("Run: %v", err)
	}
	if err := inNS(tp.relay, func() error {
		fd, err := udpSocket("up0", dhcp6.ServerPort, false)
		if err == nil {
			unix.Close(fd)
		}
		return err
	}); err != nil {
		t.Errorf("the uplink's port is still held after Close: %v", err)
	}
	err := conn.Reconfigure(context.Background(), Config{Ports: []Port{{Name: "dla"}, {Name: "dlb"}}, Servers: []netip.Addr{rrServer1},
		RelayID: testRelayID}, ConnConfig{}, nil)
	if !errors.Is(err, ErrClosed) {
		t.Errorf("Reconfigure after Close: %v, want ErrClosed", err)
	}
	if err := conn.Run(context.Background(), &recorder{}); err == nil {
		t.Error("Run after Close returned nil")
	}
	select {
	case f := <-srv.got:
		t.Errorf("a forward (transaction %#x) after Close", f.xid)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestConnDownlinkDeleted: a downlink deleted under the running relay
// (a VLAN removed before the reload that drops it) leaves the relay
// serving the other port, without spinning on the dead socket's error.
func TestConnDownlinkDeleted(t *testing.T) {
	tp := newRRTopo(t)
	srv := tp.startServers(t)
	cb := tp.client(t, "cb")
	logs := &testutil.SyncBuffer{}
	ports := []Port{{Name: "dla", InterfaceID: []byte("port-a")}, {Name: "dlb", InterfaceID: []byte("port-b")}}
	_, conn := listenTestConn(t, tp, ports, []netip.Addr{rrServer1}, slog.New(slog.NewTextHandler(logs, nil)))
	runUntilCleanup(t, tp, conn)
	waitRelaying(t, cb, srv)

	rrRun(t, "ip", "-n", tp.relay, "link", "del", "dla")
	cpu := func() time.Duration {
		var ru unix.Rusage
		if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	time.Sleep(200 * time.Millisecond)
	before := cpu()
	time.Sleep(time.Second)
	// A relay spinning on the socket's error would burn the whole second.
	if used := cpu() - before; used > 300*time.Millisecond {
		t.Errorf("the test process used %v of CPU in the second after dla went", used)
	}
	if err := cb.send(0x900001); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-srv.got:
		if f.xid != 0x900001 || f.ifid != "port-b" {
			t.Errorf("relayed %#x from %q, want 0x900001 from port-b", f.xid, f.ifid)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("port b's message not relayed after dla went; log:\n%s", logs)
	}
	t.Logf("relay log:\n%s", logs)
}
