//go:build linux

package relay

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/internal/testutil"
)

// TestConnSendErrorMidBatch: of three servers, the middle one has no
// route. Each turn's Relay-Forwards go out in one sendmmsg per socket;
// the kernel refuses every datagram to the middle server, each is counted
// as a send error, and the datagrams after it in the batch still reach
// the other two servers: every Solicit, sent in bursts, is relayed to
// both, once.
func TestConnSendErrorMidBatch(t *testing.T) {
	tp := newRRTopo(t)
	srv := tp.startServers(t)
	ca := tp.client(t, "ca")
	logs := &testutil.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	defer func() {
		if t.Failed() {
			t.Logf("relay log:\n%s", logs)
		}
	}()
	unreachable := netip.MustParseAddr("fd00:99::1") // no route in the relay's namespace
	servers := []netip.Addr{rrServer1, unreachable, rrServer2}
	eng := runTestConn(t, tp, servers, log)
	waitRelaying(t, ca, srv)
	base := eng.Counters.Drops(DropSendError)

	// Bursts of 16, so that a turn holds several and no burst outruns
	// the socket's buffer.
	const n, burst = 192, 16
	seen := map[netip.Addr]map[uint32]int{rrServer1: {}, rrServer2: {}}
	for first := uint32(1); first <= n; first += burst {
		for xid := first; xid < first+burst; xid++ {
			if err := ca.send(xid); err != nil {
				t.Fatalf("send %d: %v", xid, err)
			}
		}
		timeout := time.After(10 * time.Second)
		for got := 0; got < 2*burst; {
			select {
			case f := <-srv.got:
				if f.xid >= 0x700000 {
					continue
				}
				seen[f.server][f.xid]++
				got++
			case <-timeout:
				t.Fatalf("Solicits %d-%d: within 10 s, the servers got %d of %d forwards", first, first+burst-1, got, 2*burst)
			}
		}
	}
	for s, xids := range seen {
		for xid := uint32(1); xid <= n; xid++ {
			if xids[xid] != 1 {
				t.Errorf("server %s got Solicit %d %d times, want once", s, xid, xids[xid])
			}
		}
	}
	if d := eng.Counters.Drops(DropSendError) - base; d != n {
		t.Errorf("%d send errors counted, want %d (one per Solicit, to the unreachable server)", d, n)
	}
}

// TestConnBurstQueued: a burst of Solicits within the port's
// max_client_burst is relayed in full, though it arrives faster than
// the engine relays: the packet socket's buffer holds the burst, where a
// queue of 32 once dropped most of it.
func TestConnBurstQueued(t *testing.T) {
	tp := newRRTopo(t)
	srv := tp.startServers(t)
	ca := tp.client(t, "ca")
	log := slog.New(slog.NewTextHandler(&testutil.SyncBuffer{}, nil))
	servers := []netip.Addr{rrServer1}
	const burst = 200
	eng := runTestConn(t, tp, servers, log, Rate{Rate: 100, Burst: burst})
	waitRelaying(t, ca, srv)
	time.Sleep(2 * time.Second) // the bucket refills after the probes (100 a second, 200 at most)
	// The burst, as fast as the client socket sends: the engine relays
	// each in tens of microseconds, the client sends in a few.
	const n = 150 // well over the old 32, within the socket's buffer
	for xid := uint32(1); xid <= n; xid++ {
		if err := ca.send(xid); err != nil {
			t.Fatalf("send %d: %v", xid, err)
		}
	}
	got := map[uint32]bool{}
	timeout := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case f := <-srv.got:
			if f.xid < 0x700000 {
				got[f.xid] = true
			}
		case <-timeout:
			t.Fatalf("%d of %d Solicits relayed; drops: socket_overflow %d, rate_limited %d", len(got), n,
				eng.Counters.Drops(DropSocketOverflow), eng.Counters.Drops(DropRateLimited))
		}
	}
	if d := eng.Counters.Drops(DropSocketOverflow); d != 0 {
		t.Errorf("%d socket_overflow drops", d)
	}
}

// runTestConn runs a relay on port dla of tp, to servers, with the
// downlink's rate limit rates (none: no limit), until the test ends.
func runTestConn(t *testing.T, tp *rrTopo, servers []netip.Addr, log *slog.Logger, rates ...Rate) *Engine {
	t.Helper()
	eng, conn := listenTestConn(t, tp, nil, servers, log, rates...)
	runUntilCleanup(t, tp, conn)
	return eng
}

// testRelayID is the relays' DUID in these tests.
var testRelayID = []byte{0, 3, 0, 1, 2, 0, 0x5e, 0, 0x53, 0xaa}

// listenTestConn opens a relay's sockets in tp's relay namespace for
// ports (none: dla alone, Interface-ID "port-a"), to servers.
func listenTestConn(t *testing.T, tp *rrTopo, ports []Port, servers []netip.Addr, log *slog.Logger, rates ...Rate) (*Engine, *Conn) {
	t.Helper()
	if ports == nil {
		ports = []Port{{Name: "dla", InterfaceID: []byte("port-a")}}
	}
	eng, err := NewEngine(Config{Ports: ports, Servers: servers, RelayID: testRelayID})
	if err != nil {
		t.Fatal(err)
	}
	var conn *Conn
	if err := inNS(tp.relay, func() (err error) {
		conn, err = Listen(eng, ConnConfig{Uplink: "up0", Servers: servers, Rates: rates}, log)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return eng, conn
}

// runUntilCleanup runs conn until the test ends, and checks that Run
// returned nil.
func runUntilCleanup(t *testing.T, tp *rrTopo, conn *Conn) {
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- inNS(tp.relay, func() error { return conn.Run(ctx, &recorder{}) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// waitRelaying sends probes (transaction ids from 0x700000) from c until
// the servers got one (the links are ready), for up to 10 s, then lets
// the last forwards arrive and empties srv.got.
func waitRelaying(t *testing.T, c *rrClient, srv *rrServers) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for probe := uint32(0x700000); ; probe++ {
		if err := c.send(probe); err != nil {
			t.Logf("probe: %v", err)
		}
		relayed := false
		select {
		case f := <-srv.got:
			relayed = f.xid >= 0x700000
		case <-time.After(50 * time.Millisecond):
		}
		if relayed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no probe relayed within 10 s")
		}
	}
	time.Sleep(100 * time.Millisecond) // the probes' forwards still arriving
	for len(srv.got) > 0 {
		<-srv.got
	}
}
