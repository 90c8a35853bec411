package leasequery_test

// The requestor against the server side: pdrelay's own lqserver over
// loopback TCP, reading a fake Kea control socket (keatest), the binding
// manager taking what the requestor learns. Each side's unit tests use
// a double of the other; these check the two agree on the wire.

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/dhcp6"
	"github.com/pdrelay/pdrelay/control/leasequery"
	"github.com/pdrelay/pdrelay/control/lqserver"
	"github.com/pdrelay/pdrelay/control/lqserver/keatest"
)

var (
	ioRelayID  = []byte{0, 2, 0, 0, 0, 9, 1, 2}
	ioServerID = []byte{0, 3, 0, 1, 2, 0, 0, 0, 0xfe, 1}
	ioPorts    = 4
)

func ioLink(port int) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, 0, byte(port + 1), 15: 1})
}

// ioLeases: n leases for n/2 clients, two IA_PDs each (IAIDs 10 and 11),
// client c on port c mod ioPorts, relayed by ioRelayID with its MAC.
func ioLeases(n int, cltt int64) func(int) keatest.Lease {
	return func(i int) keatest.Lease {
		c := i / 2
		var a [16]byte
		a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
		binary.BigEndian.PutUint32(a[4:8], uint32(i)<<8)
		mac := [6]byte{2, 0, 0, byte(c >> 16), byte(c >> 8), byte(c)}
		port := c % ioPorts
		opts := dhcp6.AppendOption(nil, dhcp6.OptInterfaceID, []byte(fmt.Sprintf("port-%d", port)))
		opts = dhcp6.AppendOption(opts, dhcp6.OptRelayID, ioRelayID)
		opts = dhcp6.AppendClientLinkLayer(opts, mac)
		return keatest.Lease{
			Prefix: netip.PrefixFrom(netip.AddrFrom16(a), 56), DUID: append([]byte{0, 3, 0, 1}, mac[:]...),
			IAID: uint32(10 + i%2), SubnetID: uint32(port + 1), CLTT: cltt, Valid: 3600, Preferred: 1800,
			Relays: []keatest.Relay{{Link: ioLink(port), Peer: ioPeer(c), Options: opts}},
		}
	}
}

func ioPeer(c int) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfe, 0x80, 12: byte(c >> 24), 13: byte(c >> 16), 14: byte(c >> 8), 15: byte(c)})
}

type interop struct {
	kea    *keatest.Kea
	addr   netip.AddrPort
	cancel context.CancelFunc
	served chan error
	mgr    *binding.Manager
	tab    *binding.Table
}

// startInterop runs lqserver over a fake Kea of n leases, and a binding
// manager for the requestor to fill.
func startInterop(t *testing.T, n int, so lqserver.Options) *interop {
	t.Helper()
	kea, err := keatest.Start(t.TempDir(), keatest.Options{N: n, Gen: ioLeases(n, time.Now().Unix()-60)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kea.Close() })
	so.Kea = &lqserver.Kea{Socket: kea.Socket, PageSize: 200, Timeout: 5 * time.Second}
	so.ServerID = ioServerID
	so.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	srv, err := lqserver.NewServer(so)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	io := &interop{kea: kea, addr: netip.MustParseAddrPort(ln.Addr().String()), cancel: cancel, served: make(chan error, 1)}
	go func() { io.served <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-io.served })

	io.tab = binding.NewTable(binding.PortLimits{}, nil)
	io.tab.SetPolicy(binding.Policy{MinLen: 32, MaxLen: 64})
	io.mgr = binding.NewManager(io.tab, nil, nil)
	mctx, mcancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { io.mgr.Run(mctx); close(done) }()
	t.Cleanup(func() { mcancel(); <-done })
	return io
}

func (io *interop) requestor(t *testing.T, queries []leasequery.Query, servers []netip.AddrPort, tune func(*leasequery.Config)) *leasequery.Requestor {
	var ports []leasequery.Port
	for p := range ioPorts {
		ports = append(ports, leasequery.Port{Name: fmt.Sprintf("dl%d", p), InterfaceID: []byte(fmt.Sprintf("port-%d", p)), LinkAddr: ioLink(p)})
	}
	cfg := leasequery.Config{
		Servers: servers, Queries: queries, ClientID: ioRelayID,
		Converter:   leasequery.Converter{Ports: ports, RelayID: ioRelayID},
		ConnTimeout: time.Second, DataTimeout: 2 * time.Second, MaxRetry: 100 * time.Millisecond,
		RetryBase: 10 * time.Millisecond, Attempts: 3,
	}
	if tune != nil {
		tune(&cfg)
	}
	return leasequery.New(cfg, io.mgr, nil)
}

func (io *interop) list(t *testing.T) []binding.Binding {
	t.Helper()
	bs, err := io.mgr.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

// stale is a binding the server does not hold: a complete answer of
// ioServerID removes it, an incomplete one must not.
func (io *interop) addStale(t *testing.T) binding.Key {
	k := binding.Key{Port: "dl0", DUID: "gone", IAID: 1, Prefix: netip.MustParsePrefix("2001:db9::/56")}
	if err := io.mgr.Do(context.Background(), func(tb *binding.Table) {
		tb.Restore(time.Now(), binding.Binding{Key: k, NextHop: ioPeer(0), Expires: time.Now().Add(time.Hour),
			ServerDUID: string(ioServerID), Updated: time.Now().Add(-time.Hour)})
	}); err != nil {
		t.Fatal(err)
	}
	return k
}

func (io *interop) has(t *testing.T, k binding.Key) bool {
	var ok bool
	if err := io.mgr.Do(context.Background(), func(tb *binding.Table) { _, ok = tb.Get(k) }); err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestInteropThousands: 6000 leases by Relay-ID; every binding as Kea
// holds it: port, IAID (lqserver's IA_PD wrapper), next hop, MAC, server.
func TestInteropThousands(t *testing.T) {
	const n = 6000
	io := startInterop(t, n, lqserver.Options{})
	stale := io.addStale(t)
	lq := io.requestor(t, []leasequery.Query{leasequery.RelayIDQuery(ioRelayID)}, []netip.AddrPort{io.addr}, nil)
	rep, err := lq.Recover(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Servers[0].Result != leasequery.ResultComplete || rep.Added != n || rep.Removed != 1 || rep.Refused != 0 {
		t.Fatalf("report %+v", rep.Servers[0])
	}
	if io.has(t, stale) {
		t.Error("a binding the server does not hold survived a complete answer")
	}
	gen := ioLeases(n, 0)
	byPrefix := map[netip.Prefix]binding.Binding{}
	for _, b := range io.list(t) {
		byPrefix[b.Prefix] = b
	}
	for i := range n {
		l := gen(i)
		b, ok := byPrefix[l.Prefix]
		c := i / 2
		switch {
		case !ok:
			t.Fatalf("lease %d (%v) not recovered", i, l.Prefix)
		case b.Port != fmt.Sprintf("dl%d", c%ioPorts) || b.IAID != l.IAID || b.DUID != string(l.DUID):
			t.Fatalf("lease %d: binding %s %x IAID %d, want dl%d %x %d", i, b.Port, b.DUID, b.IAID, c%ioPorts, l.DUID, l.IAID)
		case b.NextHop != ioPeer(c) || b.MAC != [6]byte{2, 0, 0, byte(c >> 16), byte(c >> 8), byte(c)}:
			t.Fatalf("lease %d: next hop %v %x", i, b.NextHop, b.MAC)
		case b.ServerDUID != string(ioServerID) || b.Source != binding.SourceLeasequery:
			t.Fatalf("lease %d: server %x source %v", i, b.ServerDUID, b.Source)
		case b.Expires.Sub(time.Now()) > 3600*time.Second-50*time.Second:
			t.Fatalf("lease %d: expires in %v: CLT time not taken off", i, time.Until(b.Expires))
		}
	}
}

// TestInteropInterleaved: one link-address query per port on one
// connection, answered in parallel by lqserver; each binding on its port.
func TestInteropInterleaved(t *testing.T) {
	const n = 2000
	io := startInterop(t, n, lqserver.Options{MaxQueries: 4})
	var qs []leasequery.Query
	for p := range ioPorts {
		qs = append(qs, leasequery.LinkAddressQuery(fmt.Sprintf("dl%d", p), ioLink(p)))
	}
	rep, err := io.requestor(t, qs, []netip.AddrPort{io.addr}, nil).Recover(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Servers[0].Result != leasequery.ResultComplete || rep.Added != n || rep.Servers[0].Attempts != 1 || len(rep.Servers[0].Queries) != ioPorts {
		t.Fatalf("report %+v", rep.Servers[0])
	}
	per := map[string]int{}
	for _, b := range io.list(t) {
		per[b.Port]++
	}
	for p := range ioPorts {
		if per[fmt.Sprintf("dl%d", p)] != n/ioPorts {
			t.Errorf("port dl%d: %d bindings, want %d", p, per[fmt.Sprintf("dl%d", p)], n/ioPorts)
		}
	}
}

// TestInteropEmpty: a query nothing matches is a complete, empty answer
// (REPLY without client data, no DONE): the server's stale binding goes.
func TestInteropEmpty(t *testing.T) {
	io := startInterop(t, 100, lqserver.Options{})
	stale := io.addStale(t)
	other := []byte{0, 2, 0, 0, 0, 9, 9, 9}
	rep, err := io.requestor(t, []leasequery.Query{leasequery.RelayIDQuery(other)}, []netip.AddrPort{io.addr}, nil).Recover(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Servers[0].Result != leasequery.ResultComplete || rep.Received != 0 || rep.Removed != 1 || io.has(t, stale) {
		t.Fatalf("report %+v; stale kept %v", rep.Servers[0], io.has(t, stale))
	}
}

// TestInteropFailures: whatever goes wrong, nothing is removed, and the
// requestor retries within its attempts.
func TestInteropFailures(t *testing.T) {
	cases := []struct {
		name    string
		n       int
		prepare func(io *interop)
		tune    func(*leasequery.Config)
		server  func(io *interop) netip.AddrPort
		// partial: some bindings came before the failure
		partial bool
	}{
		{name: "kea fails mid-stream (DONE QueryTerminated)", n: 3000, partial: true,
			prepare: func(io *interop) { io.kea.FailPagesAfter(3) }},
		{name: "server closes early (shutdown: QueryTerminated)", n: 3000, partial: true,
			prepare: func(io *interop) {
				io.kea.SetPageDelay(30 * time.Millisecond)
				go func() { // once the first bindings are in
					for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
						var n int
						io.mgr.Do(context.Background(), func(tb *binding.Table) { n = tb.Len() })
						if n > 1 {
							break
						}
					}
					io.cancel()
				}()
			}},
		{name: "slow server (data timeout)", n: 400,
			prepare: func(io *interop) { io.kea.SetPageDelay(700 * time.Millisecond) },
			tune:    func(c *leasequery.Config) { c.DataTimeout = 200 * time.Millisecond }},
		{name: "connection refused", n: 10,
			server: func(*interop) netip.AddrPort {
				ln, _ := net.Listen("tcp", "127.0.0.1:0")
				a := netip.MustParseAddrPort(ln.Addr().String())
				ln.Close()
				return a
			}},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			io := startInterop(t, tc.n, lqserver.Options{Logger: slog.New(slog.DiscardHandler)})
			stale := io.addStale(t)
			addr := io.addr
			if tc.server != nil {
				addr = tc.server(io)
			}
			if tc.prepare != nil {
				tc.prepare(io)
			}
			rep, err := io.requestor(t, []leasequery.Query{leasequery.RelayIDQuery(ioRelayID)}, []netip.AddrPort{addr}, tc.tune).Recover(context.Background(), "")
			if err != nil {
				t.Fatal(err)
			}
			s := rep.Servers[0]
			if s.Result == leasequery.ResultComplete || s.Removed != 0 || !io.has(t, stale) {
				t.Fatalf("result %s removed %d (stale kept %v): %+v", s.Result, s.Removed, io.has(t, stale), s)
			}
			if s.Attempts != 3 {
				t.Errorf("%d attempts, want 3 (every failure here is worth a retry)", s.Attempts)
			}
			if tc.partial && s.Added == 0 {
				t.Errorf("no binding installed before the failure: %+v", s)
			}
			if s.Added+1 != len(io.list(t)) {
				t.Errorf("added %d, table holds %d", s.Added, len(io.list(t)))
			}
		})
	}
}

// TestInteropRelayIDOnLink: a relay-id query narrowed to one port's link
// returns that port's bindings only, and removes stale ones only there.
func TestInteropRelayIDOnLink(t *testing.T) {
	const n = 800
	io := startInterop(t, n, lqserver.Options{})
	stale := io.addStale(t) // on dl0
	q := leasequery.RelayIDQuery(ioRelayID).OnLink("dl1", ioLink(1))
	rep, err := io.requestor(t, []leasequery.Query{q}, []netip.AddrPort{io.addr}, nil).Recover(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Servers[0].Result != leasequery.ResultComplete || rep.Added != n/ioPorts || rep.Removed != 0 || !io.has(t, stale) {
		t.Fatalf("report %+v; stale on another port kept: %v", rep.Servers[0], io.has(t, stale))
	}
	for _, b := range io.list(t) {
		if b.Port != "dl1" && b.Key != stale {
			t.Fatalf("binding on %s from a query about dl1", b.Port)
		}
	}
}
