package lqserver

import (
	"bytes"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/dhcp6"
	"github.com/pdrelay/pdrelay/control/lqserver/keatest"
)

func relayIDOpt(id []byte) []byte { return dhcp6.AppendOption(nil, dhcp6.OptRelayID, id) }

var any6 = netip.IPv6Unspecified()

// TestBarePrefixes: by default each client's prefixes come in IA_PDs
// with the lease's IAID; with BarePrefixes, as bare IAPREFIX options.
func TestBarePrefixes(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	n, gen := genLeases(40, now.Unix()-100)
	for _, bare := range []bool{false, true} {
		f := start(t, keatest.Options{N: n, Gen: gen}, Options{BarePrefixes: bare}, 250)
		a := f.dial().query(7, dhcp6.QueryByRelayID, any6, relayIDOpt(relayA))
		if len(a.clients) == 0 {
			t.Fatalf("bare %v: no clients", bare)
		}
		for i, cd := range a.clients {
			want := gen(4 * i)
			switch {
			case bare && (len(cd.IAPDs) != 0 || len(cd.Prefixes) != 2):
				t.Fatalf("bare: client %d has %d IA_PDs, %d bare prefixes", i, len(cd.IAPDs), len(cd.Prefixes))
			case !bare && (len(cd.Prefixes) != 0 || len(cd.IAPDs) == 0 || cd.IAPDs[0].IAID != want.IAID):
				t.Fatalf("wrapped: client %d has %d bare prefixes, IA_PDs %+v, want IAID %d", i, len(cd.Prefixes), cd.IAPDs, want.IAID)
			}
			if len(allPrefixes(cd)) != 2 {
				t.Fatalf("bare %v: client %d prefixes %v", bare, i, allPrefixes(cd))
			}
		}
		f.stop()
	}
}

// TestBulkThousands: 6000 leases paged 250 at a time; QUERY_BY_RELAY_ID
// returns relay A's 1500 clients, each with its two prefixes in one
// OPTION_CLIENT_DATA, with CLT time and relay data, then DONE.
func TestBulkThousands(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	n, gen := genLeases(6000, now.Unix()-100)
	f := start(t, keatest.Options{N: n, Gen: gen}, Options{}, 250)
	r := f.dial()
	a := r.query(0x010203, dhcp6.QueryByRelayID, any6, relayIDOpt(relayA))
	if a.status != dhcp6.StatusSuccess || !a.done || a.doneSt != dhcp6.StatusSuccess {
		t.Fatalf("status %d done %v %d", a.status, a.done, a.doneSt)
	}
	if sid, _ := a.reply.Options.Get(dhcp6.OptServerID); !bytes.Equal(sid, testServerID) {
		t.Errorf("REPLY Server-ID %x", sid)
	}
	if cid, _ := a.reply.Options.Get(dhcp6.OptClientID); !bytes.Equal(cid, testClientID) {
		t.Errorf("REPLY Client-ID %x, want the query's", cid)
	}
	if len(a.clients) != 1500 || a.msgs != 1501 { // REPLY with the first, 1499 DATA, DONE
		t.Fatalf("%d clients in %d messages, want 1500 in 1501", len(a.clients), a.msgs)
	}
	seen := map[netip.Prefix]bool{}
	for i, cd := range a.clients {
		c := 2 * i // relay A has the even clients, in address order
		want := gen(2 * c)
		if !bytes.Equal(cd.ClientID, want.DUID) {
			t.Fatalf("client %d: DUID %x want %x", i, cd.ClientID, want.DUID)
		}
		if len(allPrefixes(cd)) != 2 || allPrefixes(cd)[0].Prefix != want.Prefix || allPrefixes(cd)[1].Prefix != gen(2*c+1).Prefix {
			t.Fatalf("client %d: prefixes %v", i, allPrefixes(cd))
		}
		for _, p := range allPrefixes(cd) {
			if p.Valid != 3600 || p.Preferred != 1800 || seen[p.Prefix] {
				t.Fatalf("client %d: prefix %+v (seen %v)", i, p, seen[p.Prefix])
			}
			seen[p.Prefix] = true
		}
		if !cd.HasCLTTime || cd.CLTTime != 100 {
			t.Fatalf("client %d: CLT time %v %d", i, cd.HasCLTTime, cd.CLTTime)
		}
		rd := cd.RelayData
		if rd == nil || rd.Peer != want.Relays[0].Peer {
			t.Fatalf("client %d: relay data %+v", i, rd)
		}
		rf := dhcp6.AppendRelayHeader(nil, dhcp6.MsgRelayForw, 0, linkA, want.Relays[0].Peer)
		rf = append(rf, want.Relays[0].Options...)
		if !bytes.Equal(rd.Relay, rf) {
			t.Fatalf("client %d: relay-forward %x\nwant %x", i, rd.Relay, rf)
		}
	}
	if got := f.kea.Commands()["lease6-get-page"]; got != 6000/250+1 {
		t.Errorf("%d pages fetched, want %d", got, 6000/250+1)
	}
	st := f.srv.Stats()
	if st.ClientData != 1500 || st.Prefixes != 3000 || st.Queries != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestInterleaved: two queries on one connection run in parallel; their
// messages interleave and both complete.
func TestInterleaved(t *testing.T) {
	n, gen := genLeases(4000, 1_800_000_000-5)
	f := start(t, keatest.Options{N: n, Gen: gen}, Options{}, 100)
	f.kea.SetPageDelay(2 * time.Millisecond)
	r := f.dial()
	r.send(lqMessage(0xa, dhcp6.QueryByRelayID, any6, relayIDOpt(relayA)))
	r.send(lqMessage(0xb, dhcp6.QueryByRelayID, any6, relayIDOpt(relayB)))
	out, order := r.collect(0xa, 0xb)
	for _, x := range []uint32{0xa, 0xb} {
		if a := out[x]; len(a.clients) != 1000 || !a.done {
			t.Errorf("xid %x: %d clients, done %v", x, len(a.clients), a.done)
		}
	}
	if cd := out[0xb].clients[0]; cd.RelayData == nil || !strings.Contains(string(cd.RelayData.Relay), "dl1") {
		t.Errorf("relay B's client data has relay data %+v", cd.RelayData)
	}
	switches := 0
	for i := 1; i < len(order); i++ {
		if order[i] != order[i-1] {
			switches++
		}
	}
	if switches < 2 {
		t.Errorf("answers did not interleave: %d switches between xids", switches)
	}
}

// TestMaxQueriesPerConn: with one query per connection, a second query
// is not read until the first is answered, so nothing interleaves.
func TestMaxQueriesPerConn(t *testing.T) {
	n, gen := genLeases(2000, 1_800_000_000-5)
	f := start(t, keatest.Options{N: n, Gen: gen}, Options{MaxQueries: 1}, 100)
	f.kea.SetPageDelay(time.Millisecond)
	r := f.dial()
	r.send(lqMessage(0xa, dhcp6.QueryByRelayID, any6, relayIDOpt(relayA)))
	r.send(lqMessage(0xb, dhcp6.QueryByRelayID, any6, relayIDOpt(relayB)))
	out, order := r.collect(0xa, 0xb)
	if len(out[0xa].clients) != 500 || len(out[0xb].clients) != 500 {
		t.Fatalf("clients %d %d", len(out[0xa].clients), len(out[0xb].clients))
	}
	first := slices.Index(order, 0xb)
	if slices.Contains(order[first:], 0xa) {
		t.Errorf("query b answered while a ran, with MaxQueries 1")
	}
}

// typesKea: leases that each query type must pick or leave out.
func typesKea() keatest.Options {
	now := int64(1_800_000_000)
	mac := [6]byte{2, 0, 0, 0, 0, 1}
	c1, c2, c3, c4, c5, c6 := duid(1), duid(2), duid(3), duid(4), duid(5), duid(6)
	ra := func(remote string) []keatest.Relay {
		return []keatest.Relay{{Link: linkA, Peer: netip.MustParseAddr("fe80::1"), Options: relayOpts("dl0", remote, relayA, mac)}}
	}
	rb := []keatest.Relay{{Link: linkB, Peer: netip.MustParseAddr("fe80::2"), Options: relayOpts("dl1", "r2", relayB, mac)}}
	pd := func(p string, d []byte, sub uint32, rel []keatest.Relay) keatest.Lease {
		return keatest.Lease{Prefix: netip.MustParsePrefix(p), DUID: d, SubnetID: sub, CLTT: now - 10, Valid: 600, Preferred: 300, Relays: rel}
	}
	na := pd("2001:db8:3::5/128", c3, 1, ra("r3"))
	na.Type = "IA_NA"
	reclaimed := pd("2001:db8:4::/56", c4, 1, ra("r4"))
	reclaimed.State = 2
	expired := pd("2001:db8:5::/56", c5, 1, ra("r5"))
	expired.CLTT = now - 601
	return keatest.Options{
		Leases: []keatest.Lease{
			pd("2001:db8:1::/56", c1, 1, ra("r1")),
			pd("2001:db8:1:100::/56", c1, 1, ra("r1")),
			pd("2001:db8:2::/56", c2, 2, rb),
			na, reclaimed, expired,
			pd("2001:db8:6::/56", c6, 1, nil),
		},
		Subnets: []keatest.Subnet{{ID: 1, Prefix: subnetA}},
	}
}

func duid(n byte) []byte { return []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, n} }

// result renders an answer as "duid-last-byte:prefix count" per client.
func clientsOf(a *answer) []string {
	var s []string
	for _, cd := range a.clients {
		s = append(s, string('0'+rune(cd.ClientID[len(cd.ClientID)-1]))+":"+string('0'+rune(len(allPrefixes(cd)))))
	}
	return s
}

func TestQueryTypes(t *testing.T) {
	f := start(t, typesKea(), Options{}, 2)
	r := f.dial()
	iaaddr := func(a string) []byte {
		b := netip.MustParseAddr(a).As16()
		return dhcp6.AppendOption(nil, dhcp6.OptIAAddr, append(b[:], make([]byte, 8)...))
	}
	remote := func(ent byte, id string) []byte {
		return dhcp6.AppendOption(nil, dhcp6.OptRemoteID, append([]byte{0, 0, 0, ent}, id...))
	}
	cases := []struct {
		name    string
		qt      uint8
		link    string
		opts    []byte
		status  uint16
		clients []string // "<client>:<prefixes>"
	}{
		{"relay-id all links", dhcp6.QueryByRelayID, "::", relayIDOpt(relayA), 0, []string{"1:2"}},
		{"relay-id on its link", dhcp6.QueryByRelayID, "fd00:0:0:1::1", relayIDOpt(relayA), 0, []string{"1:2"}},
		{"relay-id on another known link", dhcp6.QueryByRelayID, "fd00:0:0:2::1", relayIDOpt(relayA), 0, nil},
		{"relay-id on an unknown link", dhcp6.QueryByRelayID, "fd00:0:0:9::1", relayIDOpt(relayA), dhcp6.StatusNotConfigured, nil},
		{"unknown relay-id", dhcp6.QueryByRelayID, "::", relayIDOpt([]byte{9, 9, 9}), 0, nil},
		{"link by relay link-address and subnet", dhcp6.QueryByLinkAddress, "fd00:0:0:1::1", nil, 0, []string{"1:2", "6:1"}},
		{"link known by relays only", dhcp6.QueryByLinkAddress, "fd00:0:0:2::1", nil, 0, []string{"2:1"}},
		{"link by subnet only", dhcp6.QueryByLinkAddress, "fd00:0:0:1::77", nil, 0, []string{"1:2", "6:1"}},
		{"unknown link", dhcp6.QueryByLinkAddress, "fd00:9::1", nil, dhcp6.StatusNotConfigured, nil},
		{"remote-id", dhcp6.QueryByRemoteID, "::", remote(9, "r1"), 0, []string{"1:2"}},
		{"remote-id of another enterprise", dhcp6.QueryByRemoteID, "::", remote(8, "r1"), 0, nil},
		{"remote-id of a reclaimed lease", dhcp6.QueryByRemoteID, "::", remote(9, "r4"), 0, nil},
		{"remote-id of an expired lease", dhcp6.QueryByRemoteID, "::", remote(9, "r5"), 0, nil},
		{"remote-id of an IA_NA", dhcp6.QueryByRemoteID, "::", remote(9, "r3"), 0, nil},
		{"address in a prefix", dhcp6.QueryByAddress, "::", iaaddr("2001:db8:1:1ff::1"), 0, []string{"1:1"}},
		{"address nowhere", dhcp6.QueryByAddress, "::", iaaddr("2001:db8:7::1"), 0, nil},
		{"client-id", dhcp6.QueryByClientID, "::", dhcp6.AppendOption(nil, dhcp6.OptClientID, duid(2)), 0, []string{"2:1"}},
		{"client-id on the wrong link", dhcp6.QueryByClientID, "fd00:0:0:1::1", dhcp6.AppendOption(nil, dhcp6.OptClientID, duid(2)), 0, nil},
		{"unknown query type", 9, "::", nil, dhcp6.StatusUnknownQueryType, nil},
		{"relay-id without Relay-ID", dhcp6.QueryByRelayID, "::", nil, dhcp6.StatusMalformedQuery, nil},
		{"remote-id without Remote-ID", dhcp6.QueryByRemoteID, "::", nil, dhcp6.StatusMalformedQuery, nil},
		{"link-address ::", dhcp6.QueryByLinkAddress, "::", nil, dhcp6.StatusMalformedQuery, nil},
		{"address without IAADDR", dhcp6.QueryByAddress, "::", nil, dhcp6.StatusMalformedQuery, nil},
		{"client-id without Client-ID", dhcp6.QueryByClientID, "::", nil, dhcp6.StatusMalformedQuery, nil},
		{"link-local link-address", dhcp6.QueryByLinkAddress, "fe80::1", nil, dhcp6.StatusMalformedQuery, nil},
	}
	for i, c := range cases {
		a := r.query(uint32(0x100+i), c.qt, netip.MustParseAddr(c.link), c.opts)
		got := clientsOf(a)
		if a.status != c.status || !slices.Equal(got, c.clients) {
			t.Errorf("%s: status %s (%q) clients %v, want %s %v", c.name, dhcp6.StatusName(a.status), a.text,
				got, dhcp6.StatusName(c.status), c.clients)
		}
		if a.done != (len(c.clients) > 0) {
			t.Errorf("%s: DONE %v with %d clients", c.name, a.done, len(c.clients))
		}
	}
	// No OPTION_LQ_QUERY at all.
	m := dhcp6.AppendHeader(nil, dhcp6.MsgLeasequery, [3]byte{0, 0, 0x77})
	r.send(m)
	out, _ := r.collect(0x77)
	if out[0x77].status != dhcp6.StatusMalformedQuery {
		t.Errorf("query without LQ_QUERY: %s", dhcp6.StatusName(out[0x77].status))
	}
	// Not a LEASEQUERY: discarded, the connection goes on.
	r.send(dhcp6.AppendHeader(nil, dhcp6.MsgSolicit, [3]byte{0, 0, 0x78}))
	if a := r.query(0x79, dhcp6.QueryByRelayID, any6, relayIDOpt(relayA)); len(a.clients) != 1 {
		t.Errorf("query after a discarded message: %+v", a)
	}
	if d := f.srv.Stats().Discarded; d != 1 {
		t.Errorf("discarded %d, want 1", d)
	}
}

func TestNotAllowedQueryType(t *testing.T) {
	f := start(t, typesKea(), Options{QueryTypes: []uint8{dhcp6.QueryByRelayID}}, 100)
	r := f.dial()
	if a := r.query(1, dhcp6.QueryByLinkAddress, linkA, nil); a.status != dhcp6.StatusNotAllowed {
		t.Errorf("link query: %s", dhcp6.StatusName(a.status))
	}
	if a := r.query(2, dhcp6.QueryByRelayID, any6, relayIDOpt(relayA)); a.status != 0 || len(a.clients) != 1 {
		t.Errorf("relay-id query: %s %d", dhcp6.StatusName(a.status), len(a.clients))
	}
}

// TestKeaFailsMidStream: Kea stops answering after three pages: the
// answer ends with DONE QueryTerminated and the connection closes.
func TestKeaFailsMidStream(t *testing.T) {
	n, gen := genLeases(2000, 1_800_000_000-5)
	f := start(t, keatest.Options{N: n, Gen: gen}, Options{}, 100)
	f.kea.FailPagesAfter(3)
	r := f.dial()
	a := r.query(5, dhcp6.QueryByRelayID, any6, relayIDOpt(relayA))
	if a.status != 0 || !a.done || a.doneSt != dhcp6.StatusQueryTerminated {
		t.Fatalf("status %s done %v %s", dhcp6.StatusName(a.status), a.done, dhcp6.StatusName(a.doneSt))
	}
	// Three pages of 100 leases: 150 relay A leases, 75 clients.
	if len(a.clients) != 75 {
		t.Errorf("%d clients before the failure, want 75", len(a.clients))
	}
	r.expectClosed(2 * time.Second)
}

// TestKeaDownBeforeReply: a failure before anything was sent is a REPLY
// with QueryTerminated; the connection stays usable.
func TestKeaDownBeforeReply(t *testing.T) {
	n, gen := genLeases(100, 1_800_000_000-5)
	f := start(t, keatest.Options{N: n, Gen: gen}, Options{}, 10)
	f.kea.FailPagesAfter(0)
	r := f.dial()
	a := r.query(6, dhcp6.QueryByRelayID, any6, relayIDOpt(relayA))
	if a.status != dhcp6.StatusQueryTerminated || a.done || !strings.Contains(a.text, "kea") {
		t.Fatalf("status %s %q done %v", dhcp6.StatusName(a.status), a.text, a.done)
	}
	f.kea.FailPagesAfter(-1)
	if a := r.query(7, dhcp6.QueryByRelayID, any6, relayIDOpt(relayA)); len(a.clients) != 25 || !a.done {
		t.Errorf("after Kea is back: %d clients", len(a.clients))
	}
}

// TestShutdown: a query running at shutdown ends with DONE
// QueryTerminated, the connection closes and Serve returns.
func TestShutdown(t *testing.T) {
	n, gen := genLeases(4000, 1_800_000_000-5)
	f := start(t, keatest.Options{N: n, Gen: gen}, Options{}, 50)
	f.kea.SetPageDelay(20 * time.Millisecond)
	r := f.dial()
	r.send(lqMessage(8, dhcp6.QueryByRelayID, any6, relayIDOpt(relayA)))
	m, err := r.next()
	if err != nil || m.Type != dhcp6.MsgLeasequeryReply {
		t.Fatalf("first message %v %v", m.Type, err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- f.stop() }()
	for {
		m, err := r.next()
		if err != nil {
			t.Fatalf("no DONE before the close: %v", err)
		}
		if m.Type == dhcp6.MsgLeasequeryDone {
			if m.Status() != dhcp6.StatusQueryTerminated {
				t.Fatalf("DONE status %s", dhcp6.StatusName(m.Status()))
			}
			break
		}
	}
	r.expectClosed(3 * time.Second)
	if err := <-stopped; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if f.srv.Stats().Terminated != 1 {
		t.Errorf("stats %+v", f.srv.Stats())
	}
}

func TestConnectionLimit(t *testing.T) {
	f := start(t, typesKea(), Options{MaxConns: 2}, 100)
	r1, r2 := f.dial(), f.dial()
	for i, r := range []*requestor{r1, r2} {
		if a := r.query(uint32(i+1), dhcp6.QueryByRelayID, any6, relayIDOpt(relayA)); len(a.clients) != 1 {
			t.Fatalf("connection %d not served", i+1)
		}
	}
	f.dial().expectClosed(2 * time.Second)
	if st := f.srv.Stats(); st.OverLimit != 1 || st.Accepted != 2 {
		t.Errorf("stats %+v", st)
	}
	r1.c.Close()
	// Once the server has seen r1 go, a new connection is served.
	deadline := time.Now().Add(3 * time.Second)
	for f.srv.conns.Load() > 1 {
		if time.Now().After(deadline) {
			t.Fatal("closed connection still counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if a := f.dial().query(9, dhcp6.QueryByRelayID, any6, relayIDOpt(relayA)); len(a.clients) != 1 {
		t.Error("no service after a connection closed")
	}
}

func TestAccessRestriction(t *testing.T) {
	f := start(t, typesKea(), Options{Allow: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}}, 100)
	f.dial().expectClosed(2 * time.Second)
	if st := f.srv.Stats(); st.Refused != 1 || st.Accepted != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestDataTimeout: an idle connection, a stalled frame and a requestor
// that stops reading are each dropped after the data timeout.
func TestDataTimeout(t *testing.T) {
	n, gen := genLeases(20000, 1_800_000_000-5)
	f := start(t, keatest.Options{N: n, Gen: gen}, Options{DataTimeout: 300 * time.Millisecond}, 1000)
	f.dial().expectClosed(3 * time.Second)
	r := f.dial()
	r.c.Write([]byte{0, 40, 14}) // a frame that never completes
	r.expectClosed(3 * time.Second)

	slow := f.dial()
	if tc, ok := slow.c.(interface{ SetReadBuffer(int) error }); ok {
		tc.SetReadBuffer(4096)
	}
	slow.send(lqMessage(1, dhcp6.QueryByLinkAddress, linkA, nil)) // megabytes of answer, never read
	deadline := time.Now().Add(5 * time.Second)
	for f.srv.conns.Load() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open: a requestor that does not read holds the server", f.srv.conns.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
