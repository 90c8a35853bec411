package leasequery

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// serveAll answers one relay-id query with clients 0..n-1 spread over the
// three ports: REPLY with the first, DATA for the rest, then DONE.
func serveAll(n int, clt uint32) func(c *fakeConn) {
	return func(c *fakeConn) {
		q := c.readQuery()
		sid := opt(dhcp6.OptServerID, testServerID)
		if n == 0 {
			c.send(msg(dhcp6.MsgLeasequeryReply, q.xid, sid))
			c.drain()
			return
		}
		msgs := [][]byte{msg(dhcp6.MsgLeasequeryReply, q.xid, sid, opt(dhcp6.OptClientID, q.clientID), simpleClient(0, 0, clt))}
		for i := 1; i < n; i++ {
			msgs = append(msgs, msg(dhcp6.MsgLeasequeryData, q.xid, simpleClient(i, i%3, clt)))
			if len(msgs) == 256 {
				if c.send(msgs...) != nil {
					return
				}
				msgs = msgs[:0]
			}
		}
		msgs = append(msgs, msg(dhcp6.MsgLeasequeryDone, q.xid))
		c.send(msgs...)
		c.drain()
	}
}

func TestRecoverThousands(t *testing.T) {
	const n = 5000
	srv := newFakeServer(t, serveAll(n, 60))
	tm := newTestManager(t, binding.Policy{}, binding.PortLimits{})
	var sl sleeps
	r := newTestRequestor(tm, &sl, []netip.AddrPort{srv.addr})
	rep, err := r.Recover(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	s := rep.Servers[0]
	if s.Result != ResultComplete || s.Received != n || s.Added != n || s.Attempts != 1 || s.ServerDUID != "0003000102005e0053fe" {
		t.Fatalf("report %+v", s)
	}
	got := tm.list(t)
	if len(got) != n {
		t.Fatalf("table has %d bindings, want %d", len(got), n)
	}
	for i := range n {
		b, ok := got[prefixN(i)]
		if !ok {
			t.Fatalf("client %d's prefix missing", i)
		}
		wantHop := netip.AddrFrom16([16]byte{0xfe, 0x80, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
		left := time.Until(b.Expires)
		if b.Port != "dl"+itoa(i%3) || b.DUID != string(duidN(i)) || b.NextHop != wantHop ||
			b.MAC != [6]byte{2, 0, byte(i >> 16), byte(i >> 8), byte(i), 1} || b.ServerDUID != string(testServerID) ||
			b.Source != binding.SourceLeasequery || left > 3540*time.Second || left < 3500*time.Second {
			t.Fatalf("binding %d: %+v (valid %v left)", i, b, left)
		}
	}
	// The status the metrics and `pdrelay stats` read.
	st := r.Status()
	if len(st) != 1 || st[0].Last == nil || st[0].Last.Received != n || st[0].Running {
		t.Fatalf("status %+v", st)
	}
}

func TestRecoverInterleavedOnOneConnection(t *testing.T) {
	q0 := LinkAddressQuery("dl0", testPorts[0].LinkAddr)
	q1 := LinkAddressQuery("dl1", testPorts[1].LinkAddr)
	sid := opt(dhcp6.OptServerID, testServerID)
	srv := newFakeServer(t, func(c *fakeConn) {
		a, b := c.readQuery(), c.readQuery()
		byLink := map[netip.Addr][3]byte{a.q.Link: a.xid, b.q.Link: b.xid}
		x0, x1 := byLink[q0.Link], byLink[q1.Link]
		if a.q.Type != dhcp6.QueryByLinkAddress || len(byLink) != 2 {
			t.Errorf("queries %+v %+v", a.q, b.q)
		}
		// Clients without relay data: the query's port places them.
		bare := func(n int) []byte {
			return clientData(duidN(n), dhcp6.AppendIAPrefix(nil, dhcp6.IAPrefix{Preferred: 100, Valid: 200, Prefix: prefixN(n)}),
				relayData("fe80::"+itoa(n+1), nil))
		}
		c.send(
			msg(dhcp6.MsgLeasequeryReply, x1, sid, bare(10)),
			msg(dhcp6.MsgLeasequeryReply, x0, sid, bare(0)),
			msg(dhcp6.MsgLeasequeryData, x1, bare(11)),
			msg(dhcp6.MsgLeasequeryData, x0, bare(1)),
			msg(dhcp6.MsgLeasequeryDone, x0),
			msg(dhcp6.MsgLeasequeryData, x1, bare(12)),
			msg(dhcp6.MsgLeasequeryDone, x1),
		)
		c.drain()
	})
	tm := newTestManager(t, binding.Policy{}, binding.PortLimits{})
	var sl sleeps
	r := newTestRequestor(tm, &sl, []netip.AddrPort{srv.addr}, q0, q1)
	rep, err := r.Recover(context.Background(), srv.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	if s := rep.Servers[0]; s.Result != ResultComplete || s.Added != 5 || srv.connections() != 1 ||
		s.Queries[0].Added != 2 || s.Queries[1].Added != 3 {
		t.Fatalf("report %+v, %d connections", s, srv.connections())
	}
	got := tm.list(t)
	for n, port := range map[int]string{0: "dl0", 1: "dl0", 10: "dl1", 11: "dl1", 12: "dl1"} {
		if b := got[prefixN(n)]; b.Port != port || b.NextHop != netip.MustParseAddr("fe80::"+itoa(n+1)) {
			t.Errorf("client %d: %+v", n, b)
		}
	}
}

// TestMergeScope checks the server's word: returned bindings updated,
// ones it left out removed only after a complete answer and only in the
// query's scope.
func TestMergeScope(t *testing.T) {
	stale := func(n int, port string, server []byte) binding.Learned {
		return binding.Learned{Key: binding.Key{Port: port, DUID: string(duidN(n)), IAID: 7, Prefix: prefixN(n)},
			NextHop: netip.MustParseAddr("fe80::dead"), MAC: [6]byte{2, 2, 2, 2, 2, 2}, MACKnown: true,
			Preferred: time.Hour, Valid: 2 * time.Hour, ServerDUID: string(server)}
	}
	setup := func(t *testing.T, tm *testManager) {
		tm.learn(t,
			stale(1, "dl1", testServerID),   // returned by the server: updated, keeps IAID 7
			stale(100, "dl0", testServerID), // not returned: removed after a complete answer
			stale(101, "dl2", testServerID), // not returned: removed by relay-id, kept by a dl0 link query
			stale(102, "dl0", otherServer),  // another server's: out of scope
			binding.Learned{Key: binding.Key{Port: "dl0", DUID: "x", Prefix: prefixN(103)}, NextHop: netip.MustParseAddr("fe80::1"),
				Valid: time.Hour}, // server unknown: out of scope
		)
	}
	sid := opt(dhcp6.OptServerID, testServerID)

	t.Run("relay-id complete", func(t *testing.T) {
		srv := newFakeServer(t, func(c *fakeConn) {
			q := c.readQuery()
			c.send(msg(dhcp6.MsgLeasequeryReply, q.xid, sid, simpleClient(1, 1, 0)), msg(dhcp6.MsgLeasequeryDone, q.xid))
			c.drain()
		})
		tm := newTestManager(t, binding.Policy{}, binding.PortLimits{})
		setup(t, tm)
		rep, err := newTestRequestor(tm, new(sleeps), []netip.AddrPort{srv.addr}).Recover(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		got := tm.list(t)
		b1 := got[prefixN(1)]
		if b1.IAID != 7 || b1.NextHop != netip.MustParseAddr("fe80::1") || b1.MAC != [6]byte{2, 0, 0, 0, 1, 1} || b1.Source != binding.SourceLeasequery {
			t.Errorf("returned binding not updated from the server: %+v", b1)
		}
		for _, n := range []int{100, 101} {
			if _, ok := got[prefixN(n)]; ok {
				t.Errorf("binding %d not at the server kept", n)
			}
		}
		for _, n := range []int{102, 103} {
			if _, ok := got[prefixN(n)]; !ok {
				t.Errorf("out-of-scope binding %d removed", n)
			}
		}
		if s := rep.Servers[0]; s.Updated != 1 || s.Added != 0 || s.Removed != 2 {
			t.Errorf("report %+v", s)
		}
	})

	t.Run("link-address query removes on its port only", func(t *testing.T) {
		srv := newFakeServer(t, func(c *fakeConn) {
			q := c.readQuery()
			c.send(msg(dhcp6.MsgLeasequeryReply, q.xid, sid)) // nothing on dl0
			c.drain()
		})
		tm := newTestManager(t, binding.Policy{}, binding.PortLimits{})
		setup(t, tm)
		rep, err := newTestRequestor(tm, new(sleeps), []netip.AddrPort{srv.addr},
			LinkAddressQuery("dl0", testPorts[0].LinkAddr)).Recover(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		got := tm.list(t)
		if _, ok := got[prefixN(100)]; ok {
			t.Error("dl0 binding not at the server kept")
		}
		for _, n := range []int{1, 101, 102, 103} {
			if _, ok := got[prefixN(n)]; !ok {
				t.Errorf("binding %d outside dl0's scope removed", n)
			}
		}
		if s := rep.Servers[0]; s.Result != ResultComplete || s.Removed != 1 {
			t.Errorf("report %+v", s)
		}
	})

	t.Run("remote-id query removes nothing", func(t *testing.T) {
		srv := newFakeServer(t, func(c *fakeConn) {
			q := c.readQuery()
			c.send(msg(dhcp6.MsgLeasequeryReply, q.xid, sid))
			c.drain()
		})
		tm := newTestManager(t, binding.Policy{}, binding.PortLimits{})
		setup(t, tm)
		rep, err := newTestRequestor(tm, new(sleeps), []netip.AddrPort{srv.addr},
			RemoteIDQuery([]byte{0, 0, 0, 9, 1})).Recover(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		if len(tm.list(t)) != 5 || rep.Servers[0].Removed != 0 || rep.Servers[0].Result != ResultComplete {
			t.Errorf("remote-id removed bindings: %+v", rep.Servers[0])
		}
	})

	// Failures: the bindings received before the failure stay (the
	// server's word), but nothing is removed.
	for _, tc := range []struct {
		name   string
		script func(c *fakeConn)
		want   string
	}{
		{"error status mid-stream", func(c *fakeConn) {
			q := c.readQuery()
			c.send(msg(dhcp6.MsgLeasequeryReply, q.xid, sid, simpleClient(1, 1, 0)),
				msg(dhcp6.MsgLeasequeryData, q.xid, simpleClient(2, 1, 0)),
				msg(dhcp6.MsgLeasequeryDone, q.xid, statusOpt(dhcp6.StatusNotAllowed, "stop")))
			c.drain()
		}, "NotAllowed"},
		{"server closes early", func(c *fakeConn) {
			q := c.readQuery()
			c.send(msg(dhcp6.MsgLeasequeryReply, q.xid, sid, simpleClient(1, 1, 0)),
				msg(dhcp6.MsgLeasequeryData, q.xid, simpleClient(2, 1, 0)))
		}, "server closed the connection"},
		{"unknown xid closes", func(c *fakeConn) {
			q := c.readQuery()
			c.send(msg(dhcp6.MsgLeasequeryReply, q.xid, sid, simpleClient(1, 1, 0)),
				msg(dhcp6.MsgLeasequeryData, q.xid, simpleClient(2, 1, 0)),
				msg(dhcp6.MsgLeasequeryDone, [3]byte{q.xid[0] ^ 0xff, q.xid[1], q.xid[2]}),
				msg(dhcp6.MsgLeasequeryDone, q.xid))
			c.drain()
		}, "no outstanding query"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t, tc.script)
			tm := newTestManager(t, binding.Policy{}, binding.PortLimits{})
			setup(t, tm)
			rep, err := newTestRequestor(tm, new(sleeps), []netip.AddrPort{srv.addr}).Recover(context.Background(), "")
			if err != nil {
				t.Fatal(err)
			}
			got := tm.list(t)
			if len(got) != 6 { // 5 before, client 2 added
				t.Errorf("table has %d bindings, want 6: nothing removed", len(got))
			}
			s := rep.Servers[0]
			if s.Result != ResultFailed || s.Removed != 0 || !strings.Contains(s.Queries[0].Error, tc.want) {
				t.Errorf("report %+v", s)
			}
		})
	}
}

func TestQueryTerminatedRetried(t *testing.T) {
	sid := opt(dhcp6.OptServerID, testServerID)
	srv := newFakeServer(t, func(c *fakeConn) {
		q := c.readQuery()
		switch c.n {
		case 0: // shutting down after a few bindings
			c.send(msg(dhcp6.MsgLeasequeryReply, q.xid, sid, simpleClient(1, 0, 0)),
				msg(dhcp6.MsgLeasequeryDone, q.xid, statusOpt(dhcp6.StatusQueryTerminated, "shutting down")))
		case 1: // not ready yet
			c.send(msg(dhcp6.MsgLeasequeryReply, q.xid, statusOpt(dhcp6.StatusQueryTerminated, "starting")))
		default:
			c.send(msg(dhcp6.MsgLeasequeryReply, q.xid, sid, simpleClient(1, 0, 0)),
				msg(dhcp6.MsgLeasequeryData, q.xid, simpleClient(2, 0, 0)),
				msg(dhcp6.MsgLeasequeryDone, q.xid))
		}
		c.drain()
	})
	tm := newTestManager(t, binding.Policy{}, binding.PortLimits{})
	var sl sleeps
	rep, err := newTestRequestor(tm, &sl, []netip.AddrPort{srv.addr}).Recover(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	s := rep.Servers[0]
	if s.Result != ResultComplete || s.Attempts != 3 || srv.connections() != 3 || s.Added != 2 || s.Updated != 1 {
		t.Fatalf("report %+v, %d connections", s, srv.connections())
	}
	if w := sl.waits(); len(w) != 2 || w[0] != 100*time.Millisecond || w[1] != 200*time.Millisecond {
		t.Fatalf("backoff waits %v, want 100ms then 200ms", w)
	}
	if len(tm.list(t)) != 2 {
		t.Fatal("bindings missing")
	}
}

func TestNotRetried(t *testing.T) {
	for _, tc := range []struct {
		code uint16
		q    Query
	}{
		{dhcp6.StatusNotAllowed, RelayIDQuery(testRelayID)},
		{dhcp6.StatusUnknownQueryType, RelayIDQuery(testRelayID)},
		{dhcp6.StatusMalformedQuery, RelayIDQuery(testRelayID)},
		{dhcp6.StatusNotConfigured, LinkAddressQuery("dl0", testPorts[0].LinkAddr)},
	} {
		t.Run(dhcp6.StatusName(tc.code), func(t *testing.T) {
			srv := newFakeServer(t, func(c *fakeConn) {
				q := c.readQuery()
				c.send(msg(dhcp6.MsgLeasequeryReply, q.xid, statusOpt(tc.code, "no")))
				c.drain()
			})
			tm := newTestManager(t, binding.Policy{}, binding.PortLimits{})
			var sl sleeps
			rep, err := newTestRequestor(tm, &sl, []netip.AddrPort{srv.addr}, tc.q).Recover(context.Background(), "")
			if err != nil {
				t.Fatal(err)
			}
			s := rep.Servers[0]
			if s.Result != ResultFailed || s.Attempts != 1 || len(sl.waits()) != 0 || s.Queries[0].Status != dhcp6.StatusName(tc.code) {
				t.Fatalf("report %+v", s)
			}
		})
	}
}

func TestSlowServerDataTimeout(t *testing.T) {
	sid := opt(dhcp6.OptServerID, testServerID)
	srv := newFakeServer(t, func(c *fakeConn) {
		q := c.readQuery()
		// The REPLY, then silence: the requestor's data timeout ends it.
		c.send(msg(dhcp6.MsgLeasequeryReply, q.xid, sid, simpleClient(1, 0, 0)))
		c.drain()
	})
	tm := newTestManager(t, binding.Policy{}, binding.PortLimits{})
	tm.learn(t, binding.Learned{Key: binding.Key{Port: "dl0", DUID: "x", Prefix: prefixN(50)},
		NextHop: netip.MustParseAddr("fe80::1"), Valid: time.Hour, ServerDUID: string(testServerID)})
	var sl sleeps
	r := newTestRequestor(tm, &sl, []netip.AddrPort{srv.addr})
	r.cfg.DataTimeout = 50 * time.Millisecond
	r.cfg.Attempts = 3
	rep, err := r.Recover(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	s := rep.Servers[0]
	if s.Result != ResultFailed || s.Attempts != 3 || srv.connections() != 3 || !strings.Contains(s.Error, "data timeout") {
		t.Fatalf("report %+v", s)
	}
	if w := sl.waits(); len(w) != 2 || !(w[0] < w[1]) {
		t.Fatalf("waits %v: want two, growing", w)
	}
	if _, ok := tm.list(t)[prefixN(50)]; !ok {
		t.Fatal("an incomplete query removed a binding")
	}
}

func TestSlowWriterTimesOut(t *testing.T) {
	// A server that never reads: the requestor's write blocks (a pipe
	// has no buffer) and the data timeout ends it.
	var peers []net.Conn
	defer func() {
		for _, p := range peers {
			p.Close()
		}
	}()
	tm := newTestManager(t, binding.Policy{}, binding.PortLimits{})
	var sl sleeps
	r := newTestRequestor(tm, &sl, []netip.AddrPort{netip.MustParseAddrPort("[::1]:547")})
	r.cfg.DataTimeout = 50 * time.Millisecond
	r.cfg.Attempts = 2
	r.cfg.Dial = func(context.Context, netip.AddrPort) (net.Conn, error) {
		a, b := net.Pipe()
		peers = append(peers, b)
		return a, nil
	}
	rep, err := r.Recover(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if s := rep.Servers[0]; s.Result != ResultFailed || s.Attempts != 2 || !strings.Contains(s.Error, "send queries") ||
		!strings.Contains(s.Error, "data timeout") {
		t.Fatalf("result %s after %d attempts: %s", s.Result, s.Attempts, s.Error)
	}
}

func TestConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close() // nothing listens there now
	tm := newTestManager(t, binding.Policy{}, binding.PortLimits{})
	var sl sleeps
	r := newTestRequestor(tm, &sl, []netip.AddrPort{addr})
	rep, err := r.Recover(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	s := rep.Servers[0]
	if s.Result != ResultFailed || s.Attempts != 4 || !strings.Contains(s.Error, "refused") {
		t.Fatalf("report %+v", s)
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}
	if w := sl.waits(); len(w) != 3 || w[0] != want[0] || w[1] != want[1] || w[2] != want[2] {
		t.Fatalf("waits %v, want %v", w, want)
	}
}

func TestBackoffCappedAtMaxRetry(t *testing.T) {
	tm := newTestManager(t, binding.Policy{}, binding.PortLimits{})
	var sl sleeps
	r := newTestRequestor(tm, &sl, []netip.AddrPort{netip.MustParseAddrPort("[::1]:9")})
	r.cfg.Attempts = 7
	r.cfg.Dial = func(context.Context, netip.AddrPort) (net.Conn, error) { return nil, errSentinel }
	if _, err := r.Recover(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{100, 200, 400, 800, 800, 800}
	w := sl.waits()
	if len(w) != len(want) {
		t.Fatalf("waits %v", w)
	}
	for i := range want {
		if w[i] != want[i]*time.Millisecond {
			t.Fatalf("waits %v, want %v ms", w, want)
		}
	}
}

func TestDataWithoutClientDataDiscarded(t *testing.T) {
	sid := opt(dhcp6.OptServerID, testServerID)
	srv := newFakeServer(t, func(c *fakeConn) {
		q := c.readQuery()
		c.send(msg(dhcp6.MsgLeasequeryReply, q.xid, sid, simpleClient(1, 0, 0)),
			msg(dhcp6.MsgLeasequeryData, q.xid, opt(dhcp6.OptCLTTime, []byte{0, 0, 0, 1})),               // no client data
			msg(dhcp6.MsgLeasequeryData, q.xid, clientData(duidN(3), iaprefix("2001:db8:3::/56", 1, 2))), // no relay data: no port
			msg(dhcp6.MsgLeasequeryData, q.xid, simpleClient(2, 0, 0)),
			msg(dhcp6.MsgLeasequeryDone, q.xid))
		c.drain()
	})
	tm := newTestManager(t, binding.Policy{}, binding.PortLimits{})
	r := newTestRequestor(tm, new(sleeps), []netip.AddrPort{srv.addr})
	rep, err := r.Recover(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	s := rep.Servers[0]
	if s.Result != ResultComplete || s.Added != 2 || s.Discarded != 2 {
		t.Fatalf("report %+v", s)
	}
	r.mu.Lock()
	d := r.status[srv.addr].dropped
	r.mu.Unlock()
	if d[DropNoData] != 1 || d[DropNoPort] != 1 {
		t.Fatalf("drops %v", d)
	}
}

func TestRefusedNotInstalled(t *testing.T) {
	sid := opt(dhcp6.OptServerID, testServerID)
	client := func(n int, p string) []byte {
		return clientData(duidN(n), iaprefix(p, 100, 200), relayData("::", relayForw("::", "fe80::"+itoa(n), "dl0", nil)))
	}
	srv := newFakeServer(t, func(c *fakeConn) {
		q := c.readQuery()
		c.send(msg(dhcp6.MsgLeasequeryReply, q.xid, sid, client(1, "2001:db8:1::/56")),
			msg(dhcp6.MsgLeasequeryData, q.xid, client(2, "2001:db8:2::/64")),    // length outside 48-60
			msg(dhcp6.MsgLeasequeryData, q.xid, client(3, "2001:db9:3::/56")),    // outside the pool
			msg(dhcp6.MsgLeasequeryData, q.xid, client(4, "2001:db8:1:10::/60")), // inside client 1's
			msg(dhcp6.MsgLeasequeryData, q.xid, client(5, "2001:db8:5::/56")),
			msg(dhcp6.MsgLeasequeryData, q.xid, client(5, "2001:db8:6::/56")), // over max_per_client 1
			msg(dhcp6.MsgLeasequeryDone, q.xid))
		c.drain()
	})
	tm := newTestManager(t, binding.Policy{MinLen: 48, MaxLen: 60, Pools: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}},
		binding.PortLimits{MaxPerClient: 1})
	rep, err := newTestRequestor(tm, new(sleeps), []netip.AddrPort{srv.addr}).Recover(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	got := tm.list(t)
	if len(got) != 2 || got[netip.MustParsePrefix("2001:db8:1::/56")].Port != "dl0" || got[netip.MustParsePrefix("2001:db8:5::/56")].Port != "dl0" {
		t.Fatalf("installed %v", got)
	}
	s := rep.Servers[0]
	if s.Added != 2 || s.Refused != 4 || s.Received != 6 {
		t.Fatalf("report %+v", s)
	}
	tm.mu.Lock()
	defer tm.mu.Unlock()
	var reasons []string
	for _, e := range tm.refused {
		var re *binding.RefusedError
		if errors.As(e, &re) {
			reasons = append(reasons, re.Reason)
		} else {
			reasons = append(reasons, e.Error())
		}
	}
	if strings.Join(reasons, ",") != "length,pool,nested,"+binding.ErrClientLimit.Error() {
		t.Fatalf("refusals counted: %q", reasons)
	}
}

func TestSeveralServersInParallel(t *testing.T) {
	// Two servers, each with its own bindings; the second is slow to
	// answer but the first's answer does not wait for it.
	release := make(chan struct{})
	mk := func(id []byte, first int, wait bool) *fakeServer {
		return newFakeServer(t, func(c *fakeConn) {
			q := c.readQuery()
			if wait {
				<-release
			}
			c.send(msg(dhcp6.MsgLeasequeryReply, q.xid, opt(dhcp6.OptServerID, id), simpleClient(first, 0, 0)),
				msg(dhcp6.MsgLeasequeryDone, q.xid))
			c.drain()
		})
	}
	a := mk(testServerID, 1, false)
	b := mk(otherServer, 2, true)
	tm := newTestManager(t, binding.Policy{}, binding.PortLimits{})
	r := newTestRequestor(tm, new(sleeps), []netip.AddrPort{a.addr, b.addr})
	done := make(chan Report)
	go func() {
		rep, err := r.Recover(context.Background(), "")
		if err != nil {
			t.Error(err)
		}
		done <- rep
	}()
	// The first server's binding arrives while the second has not answered.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := tm.list(t)[prefixN(1)]; ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("first server's binding not installed while the second was silent")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := r.Recover(context.Background(), ""); !errors.Is(err, ErrBusy) {
		t.Errorf("second recovery while one runs: %v", err)
	}
	close(release)
	rep := <-done
	if rep.Added != 2 || rep.Servers[0].Result != ResultComplete || rep.Servers[1].Result != ResultComplete {
		t.Fatalf("report %+v", rep)
	}
	if b := tm.list(t)[prefixN(2)]; b.ServerDUID != string(otherServer) {
		t.Fatalf("second server's binding %+v", b)
	}
	if _, err := r.Recover(context.Background(), "2001:db8::1"); !errors.Is(err, ErrUnknownServer) {
		t.Errorf("unknown server: %v", err)
	}
}

func TestRecoverCancelled(t *testing.T) {
	sid := opt(dhcp6.OptServerID, testServerID)
	srv := newFakeServer(t, func(c *fakeConn) {
		q := c.readQuery()
		c.send(msg(dhcp6.MsgLeasequeryReply, q.xid, sid, simpleClient(1, 0, 0)))
		c.drain()
	})
	tm := newTestManager(t, binding.Policy{}, binding.PortLimits{})
	r := newTestRequestor(tm, new(sleeps), []netip.AddrPort{srv.addr})
	r.cfg.DataTimeout = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	rep, err := r.Recover(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if s := rep.Servers[0]; s.Result != ResultFailed || s.Attempts != 1 || !strings.Contains(s.Error, "canceled") {
		t.Fatalf("report %+v", s)
	}
}
