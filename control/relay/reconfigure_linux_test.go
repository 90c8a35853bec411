//go:build linux

package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/dhcp6"
	"github.com/pdrelay/pdrelay/internal/testutil"
)

// rrTopo is three namespaces: the relay's (up0, dla, dlb), the servers'
// (srv0, holding two server addresses) and the clients' (ca behind dla,
// cb behind dlb).
//
//	clients ns  ca ──veth── dla ┐
//	            cb ──veth── dlb ┴ relay ns  up0 ──veth── srv0  servers ns
type rrTopo struct{ relay, servers, clients string }

var (
	rrRelayUp = netip.MustParseAddr("fd00:53::2")
	rrServer1 = netip.MustParseAddr("fd00:53::1")
	rrServer2 = netip.MustParseAddr("fd00:53::3")
)

func newRRTopo(t *testing.T) *rrTopo {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: the relay's sockets in network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: no ip(8) (iproute2)")
	}
	id := fmt.Sprintf("rr-%d-%06x", os.Getpid(), rand.Uint32()&0xffffff)
	tp := &rrTopo{relay: id + "-r", servers: id + "-s", clients: id + "-c"}
	for _, ns := range []string{tp.relay, tp.servers, tp.clients} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Skipf("skipping: cannot create a network namespace: %v: %s", err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", ns, err, out)
			}
		})
		// No DAD in these namespaces: link-local addresses are usable at once.
		rrRun(t, "ip", "netns", "exec", ns, "sh", "-c",
			"echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad && echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad")
		rrRun(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	rrRun(t, "ip", "link", "add", "up0", "netns", tp.relay, "type", "veth", "peer", "name", "srv0", "netns", tp.servers)
	rrRun(t, "ip", "link", "add", "dla", "netns", tp.relay, "type", "veth", "peer", "name", "ca", "netns", tp.clients)
	rrRun(t, "ip", "link", "add", "dlb", "netns", tp.relay, "type", "veth", "peer", "name", "cb", "netns", tp.clients)
	rrRun(t, "ip", "-n", tp.relay, "addr", "add", rrRelayUp.String()+"/64", "dev", "up0", "nodad")
	rrRun(t, "ip", "-n", tp.servers, "addr", "add", rrServer1.String()+"/64", "dev", "srv0", "nodad")
	rrRun(t, "ip", "-n", tp.servers, "addr", "add", rrServer2.String()+"/64", "dev", "srv0", "nodad")
	for ns, ifs := range map[string][]string{tp.relay: {"up0", "dla", "dlb"}, tp.servers: {"srv0"}, tp.clients: {"ca", "cb"}} {
		for _, ifn := range ifs {
			rrRun(t, "ip", "-n", ns, "link", "set", ifn, "up")
		}
	}
	return tp
}

func rrRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// inNS runs fn on a thread of its own in namespace ns, and returns when
// fn does. The thread is never unlocked: it ends with the goroutine.
func inNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.GetFromName(ns)
		if err != nil {
			errc <- fmt.Errorf("netns %s: %w", ns, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// rrClient is a DHCPv6 client socket on one interface of the clients'
// namespace.
type rrClient struct {
	pc  *ipv6.PacketConn
	ifx int
}

func (tp *rrTopo) client(t *testing.T, ifname string) *rrClient {
	t.Helper()
	c := &rrClient{}
	err := inNS(tp.clients, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		c.ifx = ifi.Index
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname)
			})
			return errors.Join(err, serr)
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp6", "[::]:546")
		if err != nil {
			return err
		}
		c.pc = ipv6.NewPacketConn(pc)
		return nil
	})
	if err != nil {
		t.Fatalf("client on %s: %v", ifname, err)
	}
	t.Cleanup(func() { c.pc.Close() })
	return c
}

// solicit is a Solicit with transaction id xid and a Client Identifier.
func solicit(xid uint32) []byte {
	return []byte{
		1,                                          // msg-type SOLICIT
		byte(xid >> 16), byte(xid >> 8), byte(xid), // transaction-id
		0, 1, 0, 4, 'c', 'l', 'i', 'd', // Client Identifier, 4 bytes
	}
}

// release is a Release with transaction id xid, a Client Identifier and
// an IA_PD whose IAID is xid too: relaying it, the engine removes the
// IA_PD (an update for the binding Manager that names the message).
func release(xid uint32) []byte {
	return []byte{
		8,                                          // msg-type RELEASE
		byte(xid >> 16), byte(xid >> 8), byte(xid), // transaction-id
		0, 1, 0, 4, 'c', 'l', 'i', 'd', // Client Identifier, 4 bytes
		0, 25, 0, 12, // IA_PD, 12 bytes
		byte(xid >> 24), byte(xid >> 16), byte(xid >> 8), byte(xid), // IAID
		0, 0, 0, 0, 0, 0, 0, 0, // T1, T2
	}
}

// send sends a Solicit with transaction id xid to ff02::1:2 through the
// client's interface (by index: no zone is looked up).
func (c *rrClient) send(xid uint32) error { return c.sendMsg(solicit(xid)) }

func (c *rrClient) sendMsg(m []byte) error {
	dst := &net.UDPAddr{IP: net.IP(dhcp6.AllRelayAgentsAndServers.AsSlice()), Port: 547}
	_, err := c.pc.WriteTo(m, &ipv6.ControlMessage{IfIndex: c.ifx}, dst)
	return err
}

// forward is a Relay-Forward as a server received it.
type forward struct {
	server netip.Addr
	port   int // the server's UDP port
	at     time.Time
	ifid   string
	peer   netip.Addr
	xid    uint32
	raw    []byte
}

// rrServers are UDP sockets on both server addresses, port 547, and on
// the second one's port 1547; every Relay-Forward they receive goes to got.
type rrServers struct {
	conns map[netip.AddrPort]*net.UDPConn
	got   chan forward
}

func (tp *rrTopo) startServers(t *testing.T) *rrServers {
	t.Helper()
	s := &rrServers{conns: map[netip.AddrPort]*net.UDPConn{}, got: make(chan forward, 100000)}
	for _, a := range []netip.AddrPort{netip.AddrPortFrom(rrServer1, 547), netip.AddrPortFrom(rrServer2, 547), netip.AddrPortFrom(rrServer2, 1547)} {
		err := inNS(tp.servers, func() error {
			c, err := net.ListenUDP("udp6", net.UDPAddrFromAddrPort(a))
			s.conns[a] = c
			return err
		})
		if err != nil {
			t.Fatalf("server %s: %v", a, err)
		}
	}
	var wg sync.WaitGroup
	for a, c := range s.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 65536)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				r, err := dhcp6.ParseRelay(buf[:n])
				if err != nil || len(r.Inner) < 4 {
					t.Errorf("server %s: not a Relay-Forward: %x", a, buf[:n])
					continue
				}
				id, _ := r.InterfaceID()
				s.got <- forward{at: time.Now(), server: a.Addr(), port: int(a.Port()), ifid: string(id), peer: r.PeerAddr, raw: append([]byte(nil), buf[:n]...),
					xid: uint32(r.Inner[1])<<16 | uint32(r.Inner[2])<<8 | uint32(r.Inner[3])}
			}
		}()
	}
	t.Cleanup(func() {
		for _, c := range s.conns {
			c.Close()
		}
		wg.Wait()
	})
	return s
}

// TestConnReconfigure runs a relay on real sockets and reconfigures it
// while a client on port A (dla) sends a Solicit every 2 ms: port B (dlb)
// is added (a message on it is relayed at once with B's Interface-ID, and
// the server's Relay-Reply reaches B's client), a reconfiguration naming
// a port that does not exist is refused and changes nothing, the server
// changes (the Relay-Forwards go to the new one from then on), B is
// removed (no longer relayed), A's rate limit changes. Every message A
// sent is relayed exactly once, in order, with A's Interface-ID.
func TestConnReconfigure(t *testing.T) {
	tp := newRRTopo(t)
	srv := tp.startServers(t)
	ca, cb := tp.client(t, "ca"), tp.client(t, "cb")
	logs := &testutil.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	defer func() {
		if t.Failed() {
			t.Logf("relay log:\n%s", logs)
		}
	}()

	portA := Port{Name: "dla", InterfaceID: []byte("port-a")}
	portB := Port{Name: "dlb", InterfaceID: []byte("port-b")}
	relayID := []byte{0, 3, 0, 1, 2, 0, 0x5e, 0, 0x53, 0xaa}
	engCfg := func(servers []netip.Addr, ports ...Port) Config {
		return Config{Ports: ports, Servers: servers, RelayID: relayID}
	}
	connCfg := func(servers []netip.Addr, rates ...Rate) ConnConfig {
		return ConnConfig{Uplink: "up0", Servers: servers, Rates: rates}
	}
	one, two := []netip.Addr{rrServer1}, []netip.Addr{rrServer2}
	eng, err := NewEngine(engCfg(one, portA))
	if err != nil {
		t.Fatal(err)
	}
	var conn *Conn
	if err := inNS(tp.relay, func() (err error) { conn, err = Listen(eng, connCfg(one), log); return err }); err != nil {
		t.Fatal(err)
	}
	reconfigure := func(e Config, c ConnConfig) error {
		return inNS(tp.relay, func() error { return conn.Reconfigure(context.Background(), e, c, nil) })
	}
	goroutines := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	rec := &recorder{}
	go func() {
		// In the relay's namespace: Run sends to clients by interface name.
		runErr <- inNS(tp.relay, func() error { return conn.Run(ctx, rec) })
	}()
	var runOnce sync.Once
	stopRun := func() {
		runOnce.Do(func() {
			cancel()
			if err := <-runErr; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	defer func() {
		stopRun()
		testutil.NoLeak(t, goroutines, "Run")
	}()

	var fromA []forward
	var other []forward
	// wait collects Relay-Forwards until one satisfies ok, or fails.
	wait := func(what string, ok func(forward) bool) forward {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case f := <-srv.got:
				if f.ifid == "port-a" && f.xid < 0x700000 {
					fromA = append(fromA, f)
				} else {
					other = append(other, f)
				}
				if ok(f) {
					return f
				}
			case <-deadline:
				t.Fatalf("%s: not relayed within 5 s", what)
			}
		}
	}
	// The relay is up once a probe on A is relayed: until the links are
	// ready, a send may fail (unreachable) or a frame be lost.
	start := time.Now()
	for i := uint32(0); ; i++ {
		err := ca.send(0x700000 + i)
		select {
		case f := <-srv.got:
			if f.ifid != "port-a" {
				t.Fatalf("probe relayed as %+v", f)
			}
		case <-time.After(50 * time.Millisecond):
			if time.Since(start) > 5*time.Second {
				t.Fatalf("the relay relays nothing within 5 s (last send: %v)", err)
			}
			continue
		}
		break
	}
	for len(srv.got) > 0 { // the other probes
		<-srv.got
	}
	t.Logf("relay up after %v", time.Since(start).Round(time.Millisecond))

	// A's stream: Releases with transaction ids 1, 2, ... every 2 ms until
	// stopped.
	var sentA atomic.Uint32
	stopA := make(chan struct{})
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopA:
				return
			case <-tick.C:
			}
			if err := ca.sendMsg(release(sentA.Load() + 1)); err != nil {
				t.Errorf("send on ca: %v", err)
				return
			}
			sentA.Add(1)
		}
	}()
	var stopOnce sync.Once
	stopStream := func() { stopOnce.Do(func() { close(stopA); <-streamDone }) }
	defer stopStream() // before Run stops, on every way out
	wait("A's first message", func(f forward) bool { return f.ifid == "port-a" })
	time.Sleep(100 * time.Millisecond)

	// Add B. A message on B right after is relayed with B's Interface-ID.
	if err := reconfigure(engCfg(one, portA, portB), connCfg(one)); err != nil {
		t.Fatal(err)
	}
	if err := cb.send(0x800001); err != nil {
		t.Fatal(err)
	}
	fb := wait("B's message after B was added", func(f forward) bool { return f.xid == 0x800001 })
	if fb.ifid != "port-b" || fb.server != rrServer1 {
		t.Errorf("B's message relayed to %s with Interface-ID %q, want %s and port-b", fb.server, fb.ifid, rrServer1)
	}
	// The server's answer reaches B's client, by B's socket.
	advertise := solicit(0x800001)
	advertise[0] = byte(dhcp6.MsgAdvertise)
	rr := dhcp6.AppendRelayHeader(nil, dhcp6.MsgRelayRepl, 0, netip.IPv6Unspecified(), fb.peer)
	rr = dhcp6.AppendOption(rr, dhcp6.OptInterfaceID, []byte("port-b"))
	rr = dhcp6.AppendOption(rr, dhcp6.OptRelayMsg, advertise)
	if _, err := srv.conns[netip.AddrPortFrom(rrServer1, 547)].WriteToUDPAddrPort(rr, netip.AddrPortFrom(rrRelayUp, 547)); err != nil {
		t.Fatal(err)
	}
	cb.pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, _, _, err := cb.pc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != string(advertise) {
		t.Errorf("B's client: read %x, %v; want the Advertise %x", buf[:n], err, advertise)
	}

	// A port that does not exist: refused, naming it; nothing changes.
	err = reconfigure(engCfg(two, portA, portB, Port{Name: "nosuch0"}), connCfg(two))
	if err == nil || !strings.Contains(err.Error(), "nosuch0") {
		t.Errorf("Reconfigure with a missing port: %v, want an error naming nosuch0", err)
	}
	if err := cb.send(0x800002); err != nil {
		t.Fatal(err)
	}
	if f := wait("B's message after a refused change", func(f forward) bool { return f.xid == 0x800002 }); f.server != rrServer1 {
		t.Errorf("after a refused change the message went to %s", f.server)
	}

	// The server changes: from now on A's messages go to server 2 only.
	// The switch is marked among the relay's binding updates.
	err = inNS(tp.relay, func() error {
		return conn.Reconfigure(context.Background(), engCfg(two, portA, portB), connCfg(two), func() { rec.mark() })
	})
	if err != nil {
		t.Fatal(err)
	}
	switched := sentA.Load() // sent before Reconfigure returned: either server
	wait("A's message to the new server", func(f forward) bool { return f.ifid == "port-a" && f.server == rrServer2 })

	// B goes: a message on it is no longer relayed (A's next are).
	if err := reconfigure(engCfg(two, portA), connCfg(two)); err != nil {
		t.Fatal(err)
	}
	if err := cb.send(0x800003); err != nil {
		t.Fatal(err)
	}
	after := sentA.Load() + 20
	wait("A's messages after B was removed", func(f forward) bool { return f.ifid == "port-a" && f.xid > after })

	// B again, and again: each time its old sockets must have closed, or
	// the new ones could not bind port 547 on dlb.
	for i := range 10 {
		if err := reconfigure(engCfg(two, portA, portB), connCfg(two)); err != nil {
			t.Fatalf("add B again (%d): %v", i, err)
		}
		if err := reconfigure(engCfg(two, portA), connCfg(two)); err != nil {
			t.Fatalf("remove B again (%d): %v", i, err)
		}
	}
	if err := reconfigure(engCfg(two, portA, portB), connCfg(two)); err != nil {
		t.Fatal(err)
	}
	if err := cb.send(0x800004); err != nil {
		t.Fatal(err)
	}
	if f := wait("B's message after B came back", func(f forward) bool { return f.xid == 0x800004 }); f.ifid != "port-b" {
		t.Errorf("B's message after B came back relayed with Interface-ID %q", f.ifid)
	}

	time.Sleep(100 * time.Millisecond)
	stopStream()
	wait("A's last message", func(f forward) bool { return f.ifid == "port-a" && f.xid == sentA.Load() })
	// Whatever else is in flight.
	for len(srv.got) > 0 {
		wait("", func(forward) bool { return true })
	}

	for _, f := range other {
		if f.xid == 0x800003 {
			t.Errorf("B's message after B was removed was relayed: %+v", f)
		}
	}
	// A: 1..sentA, each once, in order; server 1, then server 2, and only
	// server 2 after the switch.
	if uint32(len(fromA)) != sentA.Load() {
		t.Errorf("A sent %d messages, %d relayed", sentA.Load(), len(fromA))
		eng.Counters.EachDrop(func(r Drop, n uint64) {
			if n > 0 {
				t.Logf("dropped %s: %d", r, n)
			}
		})
		seen := map[uint32]string{}
		for _, f := range fromA {
			seen[f.xid] = f.server.String()
		}
		var missing []uint32
		for x := uint32(1); x <= sentA.Load(); x++ {
			if seen[x] == "" {
				missing = append(missing, x)
			}
		}
		t.Logf("missing %v", missing)
		for i, f := range fromA {
			if i > 0 && f.xid != fromA[i-1].xid+1 {
				t.Logf("gap before %d at %v (previous %d at %v)", f.xid, f.at.Format("15:04:05.000"), fromA[i-1].xid, fromA[i-1].at.Format("15:04:05.000"))
			}
		}
		t.Logf("first A at %v, last at %v", fromA[0].at.Format("15:04:05.000"), fromA[len(fromA)-1].at.Format("15:04:05.000"))
	}
	// Each server's socket keeps the order the relay sent in; between
	// the two, the test's readers may pass each other, so the switch is
	// checked by transaction id: every message to server 1 came before
	// every message to server 2.
	last := map[netip.Addr]uint32{}
	var lastOnOne, firstOnTwo uint32
	seenA := map[uint32]bool{}
	for _, f := range fromA {
		if seenA[f.xid] || f.xid == 0 || f.xid > sentA.Load() {
			t.Fatalf("A's message %d relayed twice, or never sent", f.xid)
		}
		seenA[f.xid] = true
		if f.xid <= last[f.server] {
			t.Fatalf("A's message %d reached %v after %d: reordered", f.xid, f.server, last[f.server])
		}
		last[f.server] = f.xid
		switch {
		case f.server == rrServer2:
			if firstOnTwo == 0 || f.xid < firstOnTwo {
				firstOnTwo = f.xid
			}
		case f.xid > switched:
			t.Errorf("A's message %d, sent after the server changed, went to server 1", f.xid)
		default:
			lastOnOne = max(lastOnOne, f.xid)
		}
	}
	if firstOnTwo != 0 && lastOnOne > firstOnTwo {
		t.Errorf("A's message %d went to server 1 after %d went to server 2", lastOnOne, firstOnTwo)
	}
	if n := eng.Counters.Drops(DropSocketOverflow) + eng.Counters.Drops(DropSendError); n != 0 {
		t.Errorf("%d messages dropped on the way", n)
	}
	t.Logf("A relayed %d messages across 25 reconfigurations (%d to server 1)", len(fromA), switched)

	// A's rate limit, changed at run time: 1 a second, burst 1.
	if err := reconfigure(engCfg(two, portA), connCfg(two, Rate{Rate: 1, Burst: 1})); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := ca.send(0x100000 + uint32(i)); err != nil {
			t.Fatal(err)
		}
	}
	wait("A's first message under the new rate", func(f forward) bool { return f.xid == 0x100000 })
	deadline := time.Now().Add(5 * time.Second)
	for eng.Counters.PortDrops(0, DropRateLimited) < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := eng.Counters.PortDrops(0, DropRateLimited); n != 4 {
		t.Errorf("%d of 5 messages rate limited at 1/s burst 1, want 4", n)
	}

	// The uplink cannot change; the servers' port can.
	if err := reconfigure(engCfg(two, portA), ConnConfig{Uplink: "dla", Servers: two}); err == nil || !strings.Contains(err.Error(), "uplink") {
		t.Errorf("Reconfigure of the uplink: %v, want refused", err)
	}
	if err := reconfigure(engCfg(two, portA), ConnConfig{Uplink: "up0", Servers: two, ServerPort: 1547}); err != nil {
		t.Fatal(err)
	}
	if err := ca.send(0x100010); err != nil {
		t.Fatal(err)
	}
	if f := wait("A's message to the new server port", func(f forward) bool { return f.xid == 0x100010 }); f.port != 1547 {
		t.Errorf("A's message after the server port changed went to port %d", f.port)
	}

	// The updates of A's Releases reached the Updater in order, and the
	// switch to server 2 (atSwitch) lies exactly between the last
	// relayed to server 1 and the first to server 2.
	stopRun()
	server := map[uint32]netip.Addr{}
	for _, f := range fromA {
		if f.xid < 0x100000 { // the stream's Releases
			server[f.xid] = f.server
		}
	}
	if len(rec.log) != len(server)+1 {
		t.Errorf("the Updater got %d updates and marks, want %d updates and one mark", len(rec.log), len(server))
	}
	marked := false
	for i, e := range rec.log {
		switch {
		case e == 0:
			marked = true
		case e != uint32(i+1) && !marked || marked && e != uint32(i):
			t.Fatalf("update %d is for message %d: out of order", i, e)
		case server[e] == rrServer1 && marked:
			t.Errorf("message %d, relayed to server 1, updated after the switch", e)
		case server[e] == rrServer2 && !marked:
			t.Errorf("message %d, relayed to server 2, updated before the switch", e)
		}
	}
	if !marked {
		t.Error("atSwitch did not run")
	}
}

// recorder is an Updater noting, for each update, the IAID of the IA_PD a
// Release on dla removed (A's Releases carry their transaction id there),
// and 0 for a mark. It runs on the engine's goroutine.
type recorder struct{ log []uint32 }

func (r *recorder) Apply(us ...binding.Update) {
	for _, u := range us {
		for _, ia := range u.RemoveIAs {
			if ia.Port == "dla" && ia.IAID < 0x700000 {
				r.log = append(r.log, ia.IAID)
			}
		}
	}
}

func (r *recorder) mark() { r.log = append(r.log, 0) }
