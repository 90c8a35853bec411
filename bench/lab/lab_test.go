package lab

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMessageRoundTrip(t *testing.T) {
	inner := &Message{Type: MsgSolicit, XID: 0xabcdef, Options: []Option{
		{Code: OptClientID, Data: []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 1}},
		IAPDOption(7),
	}}
	rf := &Message{Type: MsgRelayForward, LinkAddr: netip.MustParseAddr("fd00::1"), PeerAddr: netip.MustParseAddr("fe80::2"),
		Options: []Option{{Code: OptInterfaceID, Data: []byte("pdr0")}, {Code: OptRelayMsg, Data: inner.Marshal()}}}
	m, err := ParseMessage(rf.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if m.LinkAddr != rf.LinkAddr || m.PeerAddr != rf.PeerAddr || string(m.Option(OptInterfaceID)) != "pdr0" {
		t.Fatalf("relay header: %+v", m)
	}
	in, err := m.Inner()
	if err != nil || in.XID != 0xabcdef || len(in.Option(OptIAPD)) != 12 {
		t.Fatalf("inner: %+v %v", in, err)
	}
}

func TestParseDhclientLeases(t *testing.T) {
	const f = `default-duid "\000\001";
lease6 {
  interface "eth0";
  ia-pd 00:00:01:02 {
    starts 1;
    iaprefix 2001:db8:100::/56 {
      starts 1;
      preferred-life 30;
      max-life 40;
    }
  }
  option dhcp6.client-id 0:1:0:1:32:95:7a:ed:2:0:0:0:1:2;
}
lease6 {
  interface "eth0";
  ia-pd 00:00:01:02 {
    iaprefix 2001:db8:100:100::/56 {
      preferred-life 30;
      max-life 40;
    }
  }
  ia-pd 00:00:01:03 {
    iaprefix 2001:db8:100:200::/56 {
      preferred-life 0;
      max-life 0;
    }
  }
  option dhcp6.client-id 0:1:0:1:32:95:7a:ed:2:0:0:0:1:2;
}
`
	ds := parseDhclientLeases(f)
	want := []Delegation{
		{IAID: 0x102, Prefix: netip.MustParsePrefix("2001:db8:100:100::/56"), Preferred: 30, Valid: 40},
		{IAID: 0x103, Prefix: netip.MustParsePrefix("2001:db8:100:200::/56")},
	}
	if !slices.Equal(ds, want) {
		t.Fatalf("got %+v want %+v", ds, want)
	}
	if d := parseDhclientClientID(f); !bytes.Equal(d, []byte{0, 1, 0, 1, 0x32, 0x95, 0x7a, 0xed, 2, 0, 0, 0, 1, 2}) {
		t.Fatalf("client-id %x", d)
	}
}

func TestAddressPlan(t *testing.T) {
	if got := DownlinkPrefix(0).String(); got != "fd00:0:0:1::/64" {
		t.Error(got)
	}
	if got := DefaultPDPool(0).String(); got != "2001:db8:100::/40" {
		t.Error(got)
	}
	if got := DefaultPDPool(1).String(); got != "2001:db8:200::/40" {
		t.Error(got)
	}
	if got := eui64(mac(1, 2)).String(); got != "fe80::ff:fe00:102" {
		t.Error(got)
	}
	if v, _ := DhcrelayIndex("pdr0"); v != 812803184 {
		t.Errorf("DhcrelayIndex(pdr0) = %d", v)
	}
}

// TestTopology checks the namespaces, links, addresses and routes, and
// that forwarding in the relay namespace is off unless asked for.
func TestTopology(t *testing.T) {
	resolv := readResolv(t)
	l := NewT(t, Config{Clients: 2})

	for _, ns := range l.Namespaces() {
		if _, err := os.Stat("/run/netns/" + ns); err != nil {
			t.Errorf("namespace %s: %v", ns, err)
		}
		if _, err := os.Stat("/etc/netns/" + ns + "/resolv.conf"); err != nil {
			t.Errorf("resolv.conf for %s: %v", ns, err)
		}
	}
	if out, _ := l.Run(l.ClientNS[0], "cat", "/etc/resolv.conf"); !strings.Contains(out, "127.0.0.1") {
		t.Errorf("client resolv.conf not private: %q", out)
	}
	if fwd, err := l.Forwarding(); err != nil || fwd {
		t.Fatalf("relay forwarding = %v, %v; want off", fwd, err)
	}

	const to = 2 * time.Second
	for i, d := range l.Downlinks {
		// Client -> relay gateway fe80::1, and relay -> client EUI-64.
		if err := l.Ping(d.PeerNS, netip.Addr{}, DownlinkGateway.WithZone("eth0"), to); err != nil {
			t.Errorf("client %d -> gateway: %v", i, err)
		}
		if err := l.Ping(l.RelayNS, netip.Addr{}, d.PeerLinkLocal.WithZone(d.Name), to); err != nil {
			t.Errorf("relay -> client %d link-local %s: %v", i, d.PeerLinkLocal, err)
		}
		if err := l.Ping(d.PeerNS, netip.Addr{}, d.LinkLocal.WithZone("eth0"), to); err != nil {
			t.Errorf("client %d -> relay EUI-64 %s: %v", i, d.LinkLocal, err)
		}
	}
	if err := l.Ping(l.RelayNS, netip.Addr{}, ServerAddr, to); err != nil {
		t.Errorf("relay -> server: %v", err)
	}
	if err := l.Ping(l.RelayNS, netip.Addr{}, UpstreamAddr, to); err != nil {
		t.Errorf("relay -> upstream host: %v", err)
	}

	// Client 0 with a global address: the upstream host is reachable
	// only while the relay namespace forwards.
	src := DownlinkPrefix(0).Addr().Next().Next() // fd00:0:0:1::2
	if _, err := l.Run(l.ClientNS[0], "ip", "addr", "add", src.String()+"/64", "dev", "eth0", "nodad"); err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(l.ClientNS[0], src, UpstreamAddr, 500*time.Millisecond); err == nil {
		t.Errorf("client reached upstream host with forwarding off")
	}
	if err := l.SetForwarding(true); err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(l.ClientNS[0], src, UpstreamAddr, to); err != nil {
		t.Errorf("client -> upstream host with forwarding on: %v", err)
	}
	if err := l.SetForwarding(false); err != nil {
		t.Fatal(err)
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, ns := range l.Namespaces() {
		if _, err := os.Stat("/run/netns/" + ns); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s left behind", ns)
		}
		if _, err := os.Stat("/etc/netns/" + ns); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("/etc/netns/%s left behind", ns)
		}
	}
	if _, err := os.Stat(l.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left behind", l.Dir)
	}
	checkResolv(t, resolv)
}

func readResolv(t *testing.T) []byte {
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		t.Skipf("no /etc/resolv.conf: %v", err)
	}
	return b
}

func checkResolv(t *testing.T, before []byte) {
	t.Helper()
	if after, _ := os.ReadFile("/etc/resolv.conf"); !bytes.Equal(before, after) {
		t.Errorf("/etc/resolv.conf changed:\nbefore: %q\nafter:  %q", before, after)
	}
}

// TestKeaSubnetSelection talks to Kea directly with hand-made
// Relay-Forwards from the relay namespace, to pin down how Kea 2.2 picks
// a subnet: Interface-ID first, then relay ip-addresses, then the subnet
// containing link-address; and a link-address of :: or link-local means
// "not relayed", whatever the Interface-ID.
func TestKeaSubnetSelection(t *testing.T) {
	Require(t, "kea-dhcp6")
	l := NewT(t, Config{Clients: 1})
	byIfID := KeaSubnet{ID: 1, Subnet: netip.MustParsePrefix("fd00:0:0:aaaa::/64"), InterfaceID: "pdr0",
		Pools: []PDPool{{Prefix: netip.MustParsePrefix("2001:db8:a00::/40")}}}
	byRange := KeaSubnet{ID: 2, Subnet: DownlinkPrefix(0),
		Pools: []PDPool{{Prefix: netip.MustParsePrefix("2001:db8:b00::/40")}}}
	byRelay := KeaSubnet{ID: 3, Subnet: netip.MustParsePrefix("fd00:0:0:cccc::/64"),
		RelayAddrs: []netip.Addr{netip.MustParseAddr("fd00:0:0:99::1")},
		Pools:      []PDPool{{Prefix: netip.MustParsePrefix("2001:db8:c00::/40")}}}
	k, err := l.StartKea(KeaOptions{Subnets: []KeaSubnet{byIfID, byRange, byRelay}})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := l.ListenUDP(l.RelayNS, netip.AddrPortFrom(RelayUplinkAddr, 547))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	cases := []struct {
		name string
		link string
		ifid string
		pool string // "" means no prefix (NoPrefixAvail)
	}{
		{"interface-id beats link-address", "fd00:0:0:1::1", "pdr0", "2001:db8:a00::/40"},
		{"link-address in subnet", "fd00:0:0:1::1", "", "2001:db8:b00::/40"},
		{"unknown interface-id falls back", "fd00:0:0:1::1", "zzzz", "2001:db8:b00::/40"},
		{"relay ip-addresses", "fd00:0:0:99::1", "", "2001:db8:c00::/40"},
		{"interface-id, unknown global link-address", "fd00:0:0:77::1", "pdr0", "2001:db8:a00::/40"},
		{"link-address :: ignores interface-id", "::", "pdr0", ""},
		{"link-local link-address ignores interface-id", "fe80::1", "pdr0", ""},
	}
	buf := make([]byte, 4096)
	for i, c := range cases {
		duid := []byte{0, 3, 0, 1, 2, 0, 0, 0x99, 0, byte(i)}
		sol := &Message{Type: MsgSolicit, XID: uint32(0x100 + i), Options: []Option{
			{Code: OptClientID, Data: duid}, IAPDOption(1), {Code: OptElapsedTime, Data: []byte{0, 0}},
		}}
		rf := &Message{Type: MsgRelayForward, LinkAddr: netip.MustParseAddr(c.link),
			PeerAddr: netip.MustParseAddr("fe80::99")}
		if c.ifid != "" {
			rf.Options = append(rf.Options, Option{Code: OptInterfaceID, Data: []byte(c.ifid)})
		}
		rf.Options = append(rf.Options, Option{Code: OptRelayMsg, Data: sol.Marshal()})
		if _, err := conn.WriteToUDPAddrPort(rf.Marshal(), netip.AddrPortFrom(ServerAddr, 547)); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, _, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("%s: no answer from Kea: %v", c.name, err)
		}
		rr, err := ParseMessage(buf[:n])
		if err != nil || rr.Type != MsgRelayReply {
			t.Fatalf("%s: bad relay-reply %x: %v", c.name, buf[:n], err)
		}
		if rr.LinkAddr != rf.LinkAddr || rr.PeerAddr != rf.PeerAddr {
			t.Errorf("%s: relay-reply addresses %s %s", c.name, rr.LinkAddr, rr.PeerAddr)
		}
		if c.ifid != "" && string(rr.Option(OptInterfaceID)) != c.ifid {
			t.Errorf("%s: Interface-ID not echoed: %q", c.name, rr.Option(OptInterfaceID))
		}
		adv, err := rr.Inner()
		if err != nil || adv.Type != MsgAdvertise || adv.XID != sol.XID {
			t.Fatalf("%s: inner %+v %v", c.name, adv, err)
		}
		ds := adv.Delegations()
		if c.pool == "" {
			if len(ds) != 0 || !slices.Contains(adv.StatusCodes(), 6) {
				t.Errorf("%s: got %v (status %v), want NoPrefixAvail", c.name, ds, adv.StatusCodes())
			}
			continue
		}
		if len(ds) != 1 || !netip.MustParsePrefix(c.pool).Contains(ds[0].Prefix.Addr()) || ds[0].Prefix.Bits() != 56 {
			t.Errorf("%s: got %v (status %v), want a /56 from %s", c.name, ds, adv.StatusCodes(), c.pool)
		}
	}
	// Advertise does not create leases.
	if ls, err := k.Leases6(); err != nil || len(ls) != 0 {
		t.Errorf("leases after Solicits only: %v %v", ls, err)
	}
}

// TestLabDhcrelay is the lab's self-test with real peers: Kea, ISC
// dhcrelay standing in for pdrelay, dhclient and dhcpcd asking for two
// IA_PDs each, and a third client (dhcpcd with Rapid Commit) sharing
// client 1's DUID on another port.
func TestLabDhcrelay(t *testing.T) {
	Require(t, "kea-dhcp6", "dhclient", "dhcpcd", "dhcrelay")
	resolv := readResolv(t)
	start := time.Now()
	l := NewT(t, Config{Clients: 3})
	rapid := true
	subnets := DefaultSubnets(l)
	// Port 0 is found only by Interface-ID (its subnet prefix matches no
	// link-address); ports 1 and 2 by the relay's link-address.
	subnets[0].Subnet = netip.MustParsePrefix("fd00:0:0:aaaa::/64")
	subnets[0].RelayAddrs = nil
	subnets[0].InterfaceID = "pdr0"
	subnets[1].InterfaceID = ""
	subnets[2].InterfaceID = ""
	subnets[2].RapidCommit = &rapid
	k, err := l.StartKea(KeaOptions{Subnets: subnets})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.StartDhcrelay(DhcrelayOptions{InterfaceIDs: map[int]string{0: "pdr0"}}); err != nil {
		t.Fatal(err)
	}
	t.Logf("lab, kea and dhcrelay up after %v", time.Since(start).Round(time.Millisecond))

	shared := []byte{0, 3, 0, 1, 0x02, 0x42, 0, 0, 0, 0x77} // DUID-LL
	c0, err := l.StartDhclient(0, ClientOptions{IAPDs: 2})
	if err != nil {
		t.Fatal(err)
	}
	c1, err := l.StartDhcpcd(1, ClientOptions{IAPDs: 2, DUID: shared})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := l.StartDhcpcd(2, ClientOptions{IAIDs: []uint32{1}, DUID: shared, RapidCommit: true})
	if err != nil {
		t.Fatal(err)
	}
	got := map[*Client][]netip.Prefix{}
	for i, c := range []*Client{c0, c1, c2} {
		ps, err := c.WaitPrefix(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if !DefaultPDPool(i).Contains(p.Addr()) || p.Bits() != 56 {
				t.Errorf("%s got %s, want a /56 from %s", c.Name, p, DefaultPDPool(i))
			}
		}
		got[c] = ps
		t.Logf("%s: %v after %v", c.Name, ps, time.Since(start).Round(time.Millisecond))
	}
	if len(got[c0]) != 2 || len(got[c1]) != 2 || len(got[c2]) != 1 {
		t.Fatalf("prefix counts: %v", got)
	}

	// dhclient's IAIDs are the MAC's last four bytes, then +1.
	ds0, _ := c0.Delegations()
	var iaids0 []uint32
	for _, d := range ds0 {
		iaids0 = append(iaids0, d.IAID)
	}
	slices.Sort(iaids0)
	m := l.Downlinks[0].PeerMAC
	first := binary.BigEndian.Uint32(m[2:])
	if !slices.Equal(iaids0, []uint32{first, first + 1}) {
		t.Errorf("dhclient IAIDs %x, want %x and %x", iaids0, first, first+1)
	}
	if log := c2.Log(); strings.Contains(log, "ADV ") || !strings.Contains(log, "REPLY6") {
		t.Errorf("rapid commit client saw an Advertise:\n%s", tail(log, 20))
	}
	if b, err := os.ReadFile(c1.leaseFile); err == nil {
		rep, _ := ParseMessage(b)
		if sid := rep.Option(OptServerID); !bytes.Equal(sid, k.ServerDUID()) {
			t.Errorf("server DUID %x, want %x", sid, k.ServerDUID())
		}
	}

	// Kea holds exactly those bindings, under the clients' DUIDs.
	leases, err := k.Leases6()
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 5 {
		t.Errorf("kea has %d PD leases, want 5: %v", len(leases), leases)
	}
	for i, c := range []*Client{c0, c1, c2} {
		duid, err := c.DUID()
		if err != nil {
			t.Fatal(err)
		}
		ds, _ := c.Delegations()
		for _, d := range ds {
			ok := false
			for _, le := range leases {
				if le.Prefix == d.Prefix && bytes.Equal(le.DUID, duid) && le.IAID == d.IAID && le.SubnetID == i+1 && le.State == 0 {
					ok = true
				}
			}
			if !ok {
				t.Errorf("%s: no kea lease for %+v duid %x: %+v", c.Name, d, duid, leases)
			}
		}
	}
	if !bytes.Equal(mustDUID(t, c1), shared) || !bytes.Equal(mustDUID(t, c2), shared) {
		t.Errorf("shared DUID not used")
	}
	if d := mustDUID(t, c0); len(d) != 14 || d[1] != 1 || !bytes.Equal(d[8:], m) {
		t.Errorf("dhclient DUID %x is not DUID-LLT of %s", d, m)
	}
	for _, le := range leases {
		if le.SubnetID == 1 && !strings.EqualFold(le.HWAddress, m.String()) {
			t.Errorf("kea hw-address %q, want %s", le.HWAddress, m)
		}
	}

	// Release: dhclient -r and dhcpcd SIGALRM send Release; Kea 2.2
	// deletes released leases. Stop (SIGTERM) sends nothing.
	t0 := time.Now()
	if err := c0.Release(); err != nil {
		t.Fatal(err)
	}
	if err := c1.Release(); err != nil {
		t.Fatal(err)
	}
	if err := c2.Stop(); err != nil {
		t.Fatal(err)
	}
	left, err := k.WaitLeases(5*time.Second, func(ls []Lease6) bool {
		for _, le := range ls {
			if le.SubnetID != 3 {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("released leases still in kea: %v", err)
	}
	t.Logf("released after %v", time.Since(t0).Round(time.Millisecond))
	if len(left) != 1 || left[0].Prefix != got[c2][0] || left[0].State != 0 {
		t.Errorf("stopped client's lease: %+v, want %s still active", left, got[c2][0])
	}
	if !c0.Exited() || !c1.Exited() {
		t.Errorf("clients still running after release")
	}
	checkResolv(t, resolv)
	t.Logf("whole run %v", time.Since(start).Round(time.Millisecond))
}

func mustDUID(t *testing.T, c *Client) []byte {
	t.Helper()
	d, err := c.DUID()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// relayExchange sends msg in a Relay-Forward from the relay namespace's
// socket and returns the message inside Kea's Relay-Reply.
func relayExchange(t *testing.T, conn *net.UDPConn, link netip.Addr, msg *Message) *Message {
	t.Helper()
	rf := &Message{Type: MsgRelayForward, LinkAddr: link, PeerAddr: netip.MustParseAddr("fe80::99"),
		Options: []Option{{Code: OptRelayMsg, Data: msg.Marshal()}}}
	if _, err := conn.WriteToUDPAddrPort(rf.Marshal(), netip.AddrPortFrom(ServerAddr, 547)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, _, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no answer from Kea: %v", err)
	}
	rr, err := ParseMessage(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	in, err := rr.Inner()
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// TestKeaKeepReclaimed: with KeepReclaimed, an expired lease stays in
// lease6-get-all in state 2 (expired-reclaimed) with its prefix.
func TestKeaKeepReclaimed(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a lease to expire")
	}
	Require(t, "kea-dhcp6")
	l := NewT(t, Config{Clients: 1})
	k, err := l.StartKea(KeaOptions{KeepReclaimed: true,
		RenewTimer: 1, RebindTimer: 1, PreferredLifetime: 2, ValidLifetime: 2})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := l.ListenUDP(l.RelayNS, netip.AddrPortFrom(RelayUplinkAddr, 547))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	link := l.Downlinks[0].Addr.Addr()
	duid := []byte{0, 3, 0, 1, 2, 0, 0, 0x98, 0, 1}
	adv := relayExchange(t, conn, link, &Message{Type: MsgSolicit, XID: 1, Options: []Option{
		{Code: OptClientID, Data: duid}, IAPDOption(9), {Code: OptElapsedTime, Data: []byte{0, 0}}}})
	var ia []byte
	for _, o := range adv.Options {
		if o.Code == OptIAPD {
			ia = o.Data
		}
	}
	if adv.Type != MsgAdvertise || ia == nil {
		t.Fatalf("advertise: %+v", adv)
	}
	rep := relayExchange(t, conn, link, &Message{Type: MsgRequest, XID: 2, Options: []Option{
		{Code: OptClientID, Data: duid}, {Code: OptServerID, Data: adv.Option(OptServerID)},
		{Code: OptIAPD, Data: ia}, {Code: OptElapsedTime, Data: []byte{0, 0}}}})
	ds := rep.Delegations()
	if rep.Type != MsgReply || len(ds) != 1 {
		t.Fatalf("reply: %+v", rep)
	}
	if ls, err := k.Leases6(); err != nil || len(ls) != 1 || ls[0].State != 0 || ls[0].Prefix != ds[0].Prefix {
		t.Fatalf("leases: %+v %v", ls, err)
	}
	ls, err := k.WaitLeases(6*time.Second, func(ls []Lease6) bool { return len(ls) == 1 && ls[0].State == 2 })
	if err != nil {
		t.Fatal(err)
	}
	if ls[0].Prefix != ds[0].Prefix || !bytes.Equal(ls[0].DUID, duid) {
		t.Errorf("reclaimed lease %+v", ls[0])
	}
	t.Logf("expired lease kept: %+v", ls[0])
}

// TestFRR: a tagged Lab without the pool route, and FRR in its server
// namespace, answering vtysh on its own sockets.
func TestFRR(t *testing.T) {
	Require(t, "zebra", "bgpd", "vtysh")
	l := NewT(t, Config{NoPoolRoute: true, Tag: "bg"})
	for _, ns := range l.Namespaces() {
		if !strings.Contains(ns, "-bg") || staleID(ns) != l.ID {
			t.Errorf("namespace %s: no tag, or SweepStale would not find its lab (%q)", ns, staleID(ns))
		}
	}
	if out, err := l.Run(l.ServerNS, "ip", "-6", "route", "show", "match", DefaultPDPool(0).Addr().String()); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("server namespace routes the pool: %q %v", out, err)
	}
	f, err := l.StartFRR(FRROptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := f.Session(RelayUplinkAddr)
	if err != nil || s.State == "Established" {
		t.Errorf("FRR's neighbor %s: %+v, %v; want configured, not established", RelayUplinkAddr, s, err)
	}
	rs, err := f.Routes()
	if err != nil || len(rs) != 0 {
		t.Errorf("FRR's table: %v, %v; want empty", rs, err)
	}
	for _, name := range []string{"bgpd.vty", "zebra.vty", "zserv.api", "bgpd.pid"} {
		if _, err := os.Stat(filepath.Join(f.Dir, name)); err != nil {
			t.Errorf("FRR's %s not in its directory: %v", name, err)
		}
	}
	if _, err := New(Config{Tag: "b-g"}); err == nil {
		t.Errorf("a tag with a dash accepted")
	}
}

// TestPhys lends the lab two pairs of interfaces of the test's own
// namespace, as a machine with NIC ports cabled to each other would: veth
// pairs made here stand in for them. The lab uses them for up0 and dl0
// (its names and MACs, traffic across), and Close gives them back with
// their own names, MACs and state.
func TestPhys(t *testing.T) {
	Require(t)
	tag := strconv.Itoa(os.Getpid() % 100000)
	ends := [][2]string{{"pu" + tag + "a", "pu" + tag + "b"}, {"pd" + tag + "a", "pd" + tag + "b"}}
	macs := map[string]string{}
	for i, e := range ends {
		for j, name := range e {
			macs[name] = fmt.Sprintf("02:00:00:ee:%02x:%02x", i, j)
		}
		if out, err := exec.Command("ip", "link", "add", e[0], "address", macs[e[0]], "type", "veth", "peer", "name", e[1], "address", macs[e[1]]).CombinedOutput(); err != nil {
			t.Fatalf("veth: %v: %s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("ip", "link", "del", e[0]).Run() })
	}
	if out, err := exec.Command("ip", "link", "set", "dev", ends[0][0], "up").CombinedOutput(); err != nil {
		t.Fatalf("up: %v: %s", err, out)
	}
	l, err := New(Config{Tag: "phys", Logf: t.Logf, Phys: map[string][2]string{"up0": ends[0], "dl0": ends[1]}})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = l.Close()
		}
	})
	for _, lk := range []Link{l.Uplink, l.Downlinks[0]} {
		out, err := l.Run(l.RelayNS, "ip", "-br", "link", "show", "dev", lk.Name)
		if err != nil || !strings.Contains(out, lk.MAC.String()) {
			t.Errorf("relay's %s: %q %v, want MAC %s", lk.Name, out, err, lk.MAC)
		}
		if out, err := l.Run(lk.PeerNS, "ip", "-br", "link", "show", "dev", "eth0"); err != nil || !strings.Contains(out, lk.PeerMAC.String()) {
			t.Errorf("peer's eth0: %q %v, want MAC %s", out, err, lk.PeerMAC)
		}
		if err := l.Ping(l.RelayNS, netip.Addr{}, lk.PeerLinkLocal.WithZone(lk.Name), 2*time.Second); err != nil {
			t.Errorf("ping across %s: %v", lk.Name, err)
		}
	}
	if err := l.Ping(l.ClientNS[0], netip.Addr{}, DownlinkGateway.WithZone("eth0"), 2*time.Second); err != nil {
		t.Errorf("client to the relay's gateway address: %v", err)
	}
	if err := l.Ping(l.ServerNS, netip.Addr{}, RelayUplinkAddr, 2*time.Second); err != nil {
		t.Errorf("server to the relay's uplink address: %v", err)
	}
	closed = true
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, e := range ends {
		for j, name := range e {
			ifi, err := net.InterfaceByName(name)
			if err != nil {
				t.Errorf("%s not back: %v", name, err)
				continue
			}
			if ifi.HardwareAddr.String() != macs[name] {
				t.Errorf("%s came back with MAC %s, want %s", name, ifi.HardwareAddr, macs[name])
			}
			if up := ifi.Flags&net.FlagUp != 0; up != (e == ends[0] && j == 0) {
				t.Errorf("%s came back up=%v", name, up)
			}
		}
	}
}

// TestPhysRefused: a Phys entry that names no link of the lab, or one
// interface twice, stops New before anything is moved.
func TestPhysRefused(t *testing.T) {
	Require(t)
	for _, phys := range []map[string][2]string{
		{"x": {"a", "b"}},
		{"dl1": {"a", "b"}}, // one client: dl0 only
		{"up0": {"a", "a"}},
		{"up0": {"pdrelay-no-such-if", "pdrelay-no-such-2"}},
	} {
		l, err := New(Config{Tag: "physbad", Phys: phys})
		if err == nil {
			l.Close()
			t.Errorf("Phys %v: New took it", phys)
		}
	}
}
