package lqserver

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/bench/lab"
	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// TestRealKea runs lqserver against the real kea-dhcp6 of the lab (as
// root, in namespaces the lab creates): two clients get two prefixes
// each through Relay-Forwards carrying Interface-ID, Remote-ID and
// Relay-ID (Kea stores them with store-extended-info), a third lease is
// added with lease6-add and a Kea-shaped user-context. lqserver learns
// Kea's DUID from the file Kea persisted, answers QUERY_BY_RELAY_ID,
// QUERY_BY_LINK_ADDRESS and QUERY_BY_REMOTE_ID from Kea's leases, and a
// RELEASE-REQUEST removes a lease from Kea (lease6-get-all).
func TestRealKea(t *testing.T) {
	lab.Require(t, "kea-dhcp6")
	l := lab.NewT(t, lab.Config{Clients: 1})
	k, err := l.StartKea(lab.KeaOptions{RapidCommit: true, ValidLifetime: 3600, PreferredLifetime: 1800,
		RenewTimer: 900, RebindTimer: 1400, Extra: map[string]any{
			"store-extended-info": true,
			"server-id":           map[string]any{"type": "LLT", "persist": true},
		}})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := l.ListenUDP(l.RelayNS, netip.AddrPortFrom(lab.RelayUplinkAddr, 547))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// Two clients, two IA_PDs each, relayed as pdrelay relays them.
	var keaDUID []byte
	mac := [6]byte{2, 0, 0, 0x99, 0, 0}
	for c := 0; c < 2; c++ {
		cid := []byte{0, 3, 0, 1, 2, 0, 0, 0x99, 0, byte(c)}
		sol := &lab.Message{Type: lab.MsgSolicit, XID: uint32(0x100 + c), Options: []lab.Option{
			{Code: lab.OptClientID, Data: cid}, lab.IAPDOption(1), lab.IAPDOption(2),
			{Code: lab.OptElapsedTime, Data: []byte{0, 0}}, {Code: lab.OptRapidCommit},
		}}
		rf := &lab.Message{Type: lab.MsgRelayForward, LinkAddr: linkA, PeerAddr: netip.MustParseAddr("fe80::99"),
			Options: []lab.Option{
				{Code: lab.OptInterfaceID, Data: []byte("dl0")},
				{Code: 37, Data: []byte{0, 0, 0, 9, 'r', 'i', byte('0' + c)}},
				{Code: 53, Data: relayA},
				{Code: 79, Data: append([]byte{0, 1}, mac[:]...)},
				{Code: lab.OptRelayMsg, Data: sol.Marshal()},
			}}
		if _, err := conn.WriteToUDPAddrPort(rf.Marshal(), netip.AddrPortFrom(lab.ServerAddr, 547)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, _, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("no answer from Kea: %v", err)
		}
		rr, err := lab.ParseMessage(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		in, err := rr.Inner()
		if err != nil || in.Type != lab.MsgReply || len(in.Delegations()) != 2 {
			t.Fatalf("client %d: Kea answered %+v %v", c, in, err)
		}
		keaDUID = in.Option(lab.OptServerID)
	}
	// A lease added by hand with a user-context shaped as Kea's, via
	// relay B on another link.
	if _, err := k.Command("lease6-add", map[string]any{
		"ip-address": "2001:db8:1ff:ff00::", "prefix-len": 56, "type": "IA_PD", "duid": "00:03:00:01:02:00:00:99:00:07",
		"iaid": 1, "subnet-id": 1, "valid-lft": 3600, "preferred-lft": 1800,
		"user-context": map[string]any{"ISC": map[string]any{"relays": []any{map[string]any{
			"hop": 0, "link": "fd00:0:0:2::1", "peer": "fe80::7", "options": "0x00120003646C31" + "00350007" + "00020000ABCD02"}}}},
	}); err != nil {
		t.Fatal(err)
	}
	leases, err := k.Leases6()
	if err != nil || len(leases) != 5 {
		t.Fatalf("Kea holds %v %v", leases, err)
	}
	// Kea's own lease6-get-page answer takes the fast decoder's path and
	// decodes as encoding/json decodes it (testdata/kea-2.2-page.json was
	// captured here, with PDRELAY_KEA_PAGE_CAPTURE set to its path).
	raw, err := (&Kea{Socket: k.Socket}).getPage(context.Background(), "start", 100, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkPageDecoders(t, raw, true)
	if p, _ := decodePageFast(raw); len(p.leases) != 5 {
		t.Errorf("fast decoder: %d leases of 5", len(p.leases))
	}
	if path := os.Getenv("PDRELAY_KEA_PAGE_CAPTURE"); path != "" {
		if err := os.WriteFile(path, raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// lqserver as `pdrelay lqserver` runs it, the server DUID read from
	// Kea's persisted file.
	lqPort, relPort := freePort(t, "tcp"), freePort(t, "udp")
	cfg, err := ParseFlags([]string{"--kea-socket", k.Socket, "--listen", "127.0.0.1:" + lqPort,
		"--release-listen", "127.0.0.1:" + relPort, "--allow", "127.0.0.1", "--page-size", "2"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	go func() { done <- Run(ctx, cfg, log) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var c net.Conn
	for deadline := time.Now().Add(5 * time.Second); ; {
		if c, err = net.Dial("tcp", "127.0.0.1:"+lqPort); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lqserver not listening: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer c.Close()
	r := &requestor{t: t, c: c, fr: dhcp6.NewFrameReader(bufio.NewReader(c))}

	a := r.query(1, dhcp6.QueryByRelayID, any6, relayIDOpt(relayA))
	if sid, _ := a.reply.Options.Get(dhcp6.OptServerID); !bytes.Equal(sid, keaDUID) || len(keaDUID) == 0 {
		t.Errorf("REPLY Server-ID %x, Kea's is %x", sid, keaDUID)
	}
	if len(a.clients) != 2 || !a.done {
		t.Fatalf("relay A: %d clients, done %v", len(a.clients), a.done)
	}
	for i, cd := range a.clients {
		var got []netip.Prefix
		for _, p := range allPrefixes(cd) {
			got = append(got, p.Prefix)
			if p.Valid != 3600 || p.Preferred != 1800 {
				t.Errorf("client %d: lifetimes %d %d", i, p.Preferred, p.Valid)
			}
		}
		var want []netip.Prefix
		for _, ls := range leases {
			if bytes.Equal(ls.DUID, cd.ClientID) {
				want = append(want, ls.Prefix)
			}
		}
		slices.SortFunc(got, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
		slices.SortFunc(want, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
		if len(got) != 2 || !slices.Equal(got, want) {
			t.Errorf("client %x: prefixes %v, Kea has %v", cd.ClientID, got, want)
		}
		if !cd.HasCLTTime || cd.CLTTime > 60 {
			t.Errorf("client %d: CLT time %d", i, cd.CLTTime)
		}
		rel, err := dhcp6.ParseRelay(append(cd.RelayData.Relay, 0, 9, 0, 0)) // an empty relay-message to parse it
		if err != nil {
			t.Fatalf("client %d: relay data %x: %v", i, cd.RelayData.Relay, err)
		}
		ifid, _ := rel.InterfaceID()
		rid, _ := rel.Options.Get(dhcp6.OptRelayID)
		remote, _ := rel.Options.Get(dhcp6.OptRemoteID)
		ll, _ := rel.Options.Get(dhcp6.OptClientLinkLayer)
		if cd.RelayData.Peer != netip.MustParseAddr("fe80::99") || rel.LinkAddr != linkA || string(ifid) != "dl0" ||
			!bytes.Equal(rid, relayA) || !bytes.Equal(remote, []byte{0, 0, 0, 9, 'r', 'i', '0' + byte(i)}) ||
			!bytes.Equal(ll, append([]byte{0, 1}, mac[:]...)) {
			t.Errorf("client %d: relay data peer %s link %s ifid %q relay-id %x remote %x ll %x",
				i, cd.RelayData.Peer, rel.LinkAddr, ifid, rid, remote, ll)
		}
	}
	if a := r.query(2, dhcp6.QueryByLinkAddress, linkA, nil); len(a.clients) != 3 {
		// Subnet 1 contains link A: the lease added through relay B's link is in it too.
		t.Errorf("link A: %d clients, want 3", len(a.clients))
	}
	if a := r.query(3, dhcp6.QueryByRelayID, any6, relayIDOpt(relayB)); len(a.clients) != 1 || a.clients[0].RelayData.Peer != netip.MustParseAddr("fe80::7") {
		t.Errorf("relay B: %+v", a.clients)
	}
	if a := r.query(4, dhcp6.QueryByRemoteID, any6, dhcp6.AppendOption(nil, dhcp6.OptRemoteID, []byte{0, 0, 0, 9, 'r', 'i', '1'})); len(a.clients) != 1 ||
		!bytes.Equal(a.clients[0].ClientID, []byte{0, 3, 0, 1, 2, 0, 0, 0x99, 0, 1}) {
		t.Errorf("remote-id ri1: %+v", a.clients)
	}
	if a := r.query(5, dhcp6.QueryByLinkAddress, netip.MustParseAddr("fd00:0:0:77::1"), nil); a.status != dhcp6.StatusNotConfigured {
		t.Errorf("unknown link: %s", dhcp6.StatusName(a.status))
	}

	// RELEASE-REQUEST for client 0's first prefix, over UDP.
	client0 := a.clients[0]
	_ = client0
	var p0 netip.Prefix
	for _, ls := range leases {
		if ls.DUID[len(ls.DUID)-1] == 0 && (!p0.IsValid() || ls.Prefix.Addr().Less(p0.Addr())) {
			p0 = ls.Prefix
		}
	}
	uc, err := net.Dial("udp", "127.0.0.1:"+relPort)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	exchange := func(msg []byte) *dhcp6.Message {
		uc.Write(msg)
		buf := make([]byte, 1500)
		uc.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := uc.Read(buf)
		if err != nil {
			return nil
		}
		m, err := dhcp6.ParseMessage(buf[:n])
		if err != nil {
			t.Fatalf("reply %x: %v", buf[:n], err)
		}
		return &m
	}
	cid0 := []byte{0, 3, 0, 1, 2, 0, 0, 0x99, 0, 0}
	req := releaseRequest(0x51, keaDUID, cdata(cid0, dhcp6.AppendIAPD(nil, 1, 0, 0, iaprefix(p0))))
	m := exchange(req)
	if m == nil || m.Type != 251 || m.Status() != dhcp6.StatusSuccess || len(clientDataOf(t, *m)) != 0 {
		t.Fatalf("release reply %+v", m)
	}
	after, err := k.Leases6()
	if err != nil || len(after) != 4 || slices.ContainsFunc(after, func(x lab.Lease6) bool { return x.Prefix == p0 }) {
		t.Errorf("after release Kea holds %v %v", after, err)
	}
	m = exchange(req) // retransmission
	if m == nil || m.Status() != dhcp6.StatusSuccess {
		t.Fatalf("retransmission reply %+v", m)
	}
	if cds := clientDataOf(t, *m); len(cds) != 1 || len(cds[0].IAPDs) != 1 || cds[0].IAPDs[0].IAID != 1 {
		t.Errorf("retransmission: %+v", cds)
	} else if p, err := dhcp6.ParseIAPrefix(must(cds[0].IAPDs[0].Options.Get(dhcp6.OptIAPrefix))); err != nil ||
		p.Prefix != p0 || statusOf(p.Options) != dhcp6.StatusNoBinding {
		t.Errorf("retransmission IAPREFIX %+v %v", p, err)
	}
	if m := exchange(releaseRequest(0x52, []byte{0, 3, 0, 1, 1, 2, 3, 4, 5, 6}, cdata(cid0))); m != nil {
		t.Errorf("request naming another server answered: %+v", m)
	}
	if after, _ := k.Leases6(); len(after) != 4 {
		t.Errorf("a discarded request changed Kea: %v", after)
	}
}

func must(b []byte, _ bool) []byte { return b }

func freePort(t *testing.T, network string) string {
	t.Helper()
	var a net.Addr
	if network == "tcp" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a = ln.Addr()
		ln.Close()
	} else {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a = pc.LocalAddr()
		pc.Close()
	}
	_, port, _ := net.SplitHostPort(a.String())
	if _, err := strconv.Atoi(port); err != nil {
		t.Fatal(err)
	}
	return port
}
