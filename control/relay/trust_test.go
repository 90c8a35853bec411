package relay_test

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/dhcp6"
	"github.com/pdrelay/pdrelay/control/relay"
)

// A client message must be sent to ff02::1:2 or to one of the relay's
// addresses on its port; the addresses are read again on a miss, at most
// once a second.
func TestClientDestination(t *testing.T) {
	own := netip.MustParseAddr("2001:db8:a::1")
	later := netip.MustParseAddr("2001:db8:a::2")
	reads := 0
	cfg := testConfig()
	current := []netip.Addr{own, netip.MustParseAddr("fe80::1")}
	cfg.Ports[1].Addrs = current
	cfg.AddrSource = func(port string) []netip.Addr {
		reads++
		if port != "eth2" {
			t.Errorf("addresses of %s read for eth2's message", port)
		}
		return current
	}
	h := newHarness(t, cfg, binding.PortLimits{}, nil)
	c := newCPE(60)
	sol := c.msg(dhcpv6.MessageTypeSolicit, 1).ToBytes()
	send := func(dst netip.Addr) error {
		_, _, err := h.e.HandleClient(h.now, relay.ClientPacket{Port: 1, SrcMAC: c.mac, Src: c.ll, Dst: dst, Payload: sol})
		return err
	}
	for _, tc := range []struct {
		dst  string
		ok   bool
		read int // AddrSource calls so far
	}{
		{"ff02::1:2", true, 0},
		{"2001:db8:a::1", true, 0},
		{"fe80::1%eth2", true, 0},      // the zone does not matter
		{"ff05::1:3", false, 0},        // another group: not for a relay
		{"ff02::1", false, 0},          //
		{"::", false, 0},               //
		{"2001:db8:666::1", false, 1},  // not ours: read again, still not
		{"2001:db8:a::2", false, 1},    // added since, but within the second
		{"2001:db8:ffff::9", false, 1}, // no read within the second either
	} {
		if tc.dst == "2001:db8:a::2" {
			current = append(current, later)
		}
		err := send(netip.MustParseAddr(tc.dst))
		if tc.ok != (err == nil) {
			t.Errorf("to %s: err %v, want ok %v", tc.dst, err, tc.ok)
		}
		if !tc.ok && dropReason(t, err) != relay.DropBadDestination {
			t.Errorf("to %s: %v, want bad_destination", tc.dst, err)
		}
		if reads != tc.read {
			t.Errorf("to %s: %d address reads, want %d", tc.dst, reads, tc.read)
		}
	}
	h.now = h.now.Add(time.Second)
	if err := send(later); err != nil || reads != 2 {
		t.Errorf("an address added to the port: %v (%d reads)", err, reads)
	}
	if err := send(netip.Addr{}); dropReason(t, err) != relay.DropBadDestination {
		t.Errorf("no destination: %v", err)
	}
	if n := h.e.Counters.PortDrops(1, relay.DropBadDestination); n != 7 {
		t.Errorf("eth2 bad_destination = %d, want 7", n)
	}
	if n := h.e.Counters.PortDrops(0, relay.DropBadDestination); n != 0 {
		t.Errorf("eth1 counted eth2's drops: %d", n)
	}
	if n := h.e.Counters.Drops(relay.DropBadDestination); n != 7 {
		t.Errorf("total bad_destination = %d, want 7", n)
	}
}

// Per-port drop counters: each client drop is counted on its port and in
// the total; drops of server messages only in the total.
func TestPortDropCounters(t *testing.T) {
	h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
	c := newCPE(61)
	wrapped := dhcp6.AppendOption(dhcp6.AppendRelayHeader(nil, dhcp6.MsgRelayForw, 0, netip.Addr{}, c.ll), dhcp6.OptRelayMsg, []byte{1, 1, 2, 3})
	for range 3 {
		h.e.HandleClient(h.now, relay.ClientPacket{Port: 1, Dst: dhcp6.AllRelayAgentsAndServers, Src: c.ll, Payload: wrapped})
	}
	h.e.HandleServer(h.now, relay.ServerPacket{Src: netip.MustParseAddr("2001:db8::bad"), Uplink: true, Payload: []byte{13}})
	got := map[[2]string]uint64{}
	h.e.Counters.EachPortDrop(func(port int, r relay.Drop, n uint64) {
		if n != 0 {
			got[[2]string{h.e.Ports()[port].Name, r.String()}] = n
		}
	})
	if len(got) != 1 || got[[2]string{"eth2", "relay_forward_untrusted"}] != 3 {
		t.Errorf("port drops %v", got)
	}
	if h.e.Counters.Drops(relay.DropUntrustedServer) != 1 || h.e.Counters.Drops(relay.DropRelayForwardUntrusted) != 3 {
		t.Error("totals wrong")
	}
}

// FuzzTrust feeds the engine any bytes as a client message (on any port,
// to any destination) or as a server's (from a trusted or an untrusted
// source, on or off the uplink), and checks the trust rules hold whatever
// the bytes: a subscriber's Relay-Forward or Relay-Reply is never relayed
// from a port that does not trust a relay below, nothing is relayed that
// was not sent to the relay, a message from an untrusted source never
// reaches a client nor teaches a binding, what is relayed up carries the
// client's bytes unchanged (G-1), and the pending table stays within its
// bounds.
func FuzzTrust(f *testing.F) {
	c := newCPE(70)
	sol := c.msg(dhcpv6.MessageTypeSolicit, 1, iapd(1, 0, 0)).ToBytes()
	req := c.msg(dhcpv6.MessageTypeRequest, 2, iapd(1, 0, 0)).ToBytes()
	rr := rawRelayReply(linkA, c.ll, []byte("eth1"), replyTo(c.msg(dhcpv6.MessageTypeRequest, 2), iapd(1, 1, 2, iaprefix("2001:db8:100::/56", 3, 4))).ToBytes())
	fwd := dhcp6.AppendOption(dhcp6.AppendRelayHeader(nil, dhcp6.MsgRelayForw, 0, netip.Addr{}, c.ll), dhcp6.OptRelayMsg, sol)
	for _, b := range [][]byte{sol, req, rr, fwd, {12}, {13, 0}} {
		for sel := range uint8(8) {
			f.Add(b, sel)
		}
	}
	dsts := []netip.Addr{dhcp6.AllRelayAgentsAndServers, netip.MustParseAddr("2001:db8:a::1"), netip.MustParseAddr("2001:db8:666::1"), netip.MustParseAddr("ff05::1:3")}
	srcs := []netip.Addr{serverAddr, netip.MustParseAddr("2001:db8:666::1")}
	f.Fuzz(func(t *testing.T, b []byte, sel uint8) {
		cfg := testConfig()
		cfg.PendingMax = 4
		cfg.Ports[0].Addrs = []netip.Addr{netip.MustParseAddr("2001:db8:a::1")}
		h := newHarness(t, cfg, binding.PortLimits{}, nil)
		port := int(sel) % 3
		dst := dsts[int(sel>>2)%len(dsts)]
		for range 3 { // a retransmission or two
			fw, _, err := h.e.HandleClient(h.now, relay.ClientPacket{Port: port, SrcMAC: c.mac, Src: c.ll, Dst: dst, Payload: b})
			if err != nil {
				continue
			}
			if dst != dhcp6.AllRelayAgentsAndServers && !(port == 0 && dst == dsts[1]) {
				t.Fatalf("relayed a message sent to %s on port %d", dst, port)
			}
			if b[0] == byte(dhcp6.MsgRelayRepl) || b[0] == byte(dhcp6.MsgRelayForw) && !cfg.Ports[port].TrustRelayForward {
				t.Fatalf("relayed a subscriber's %d on port %d", b[0], port)
			}
			r, perr := dhcp6.ParseRelay(fw)
			if perr != nil || !bytes.Equal(r.Inner, b) {
				t.Fatalf("the relayed message is not the client's bytes: %v", perr)
			}
		}
		if n, _ := h.e.PendingLen(); n > 4 {
			t.Fatalf("pending table holds %d, max 4", n)
		}
		src := srcs[int(sel>>4)%len(srcs)]
		up := sel&0x40 == 0
		out, upd, err := h.e.HandleServer(h.now, relay.ServerPacket{Src: src, Uplink: up, Payload: b})
		if (src != serverAddr || !up) && (err == nil || len(out.Payload) != 0 || !upd.Empty()) {
			t.Fatalf("a message from %s (uplink %v) was not dropped: %v", src, up, err)
		}
	})
}
