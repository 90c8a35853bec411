package relay_test

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/dhcp6"
	"github.com/pdrelay/pdrelay/control/relay"
)

// reloaded is testConfig after a reload: eth1 removed, eth2 now first
// with a new Interface-ID and trusted for Relay-Forward, eth3 as before,
// eth4 added with a link-address; another server.
func reloaded() relay.Config {
	return relay.Config{
		Ports: []relay.Port{
			{Name: "eth2", Index: 4, InterfaceID: []byte("olt-7/2"), TrustRelayForward: true},
			{Name: "eth3", Index: 5, TrustReleaseRequest: true, TrustRelayForward: true},
			{Name: "eth4", Index: 6, LinkAddr: netip.MustParseAddr("2001:db8:4::1")},
		},
		Servers:            []netip.Addr{newServer},
		RelayID:            relayDUID,
		ReleaseRequestType: rrType,
	}
}

var newServer = netip.MustParseAddr("2001:db8:6::547")

// ifid returns the Interface-ID option of Relay-Forward fw.
func ifid(t *testing.T, fw []byte) string {
	t.Helper()
	r, err := dhcp6.ParseRelay(fw)
	if err != nil {
		t.Fatal(err)
	}
	id, ok := r.InterfaceID()
	if !ok {
		t.Fatalf("no Interface-ID in %x", fw)
	}
	return string(id)
}

// TestEngineReconfigure: a port that stays keeps its recorded requests
// (the Reply to a request relayed before the change matches it and gives
// the client's MAC) under its new index; a removed port's Replies name no
// port; an added port relays with its own Interface-ID and link-address;
// trust and servers take their new values; the counters carry over.
func TestEngineReconfigure(t *testing.T) {
	h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
	c, gone, added := newCPE(1), newCPE(2), newCPE(3)

	// Before: requests on eth2 (index 1) and on eth1 (index 0, to go).
	reqC := c.msg(dhcpv6.MessageTypeRequest, 1, iapd(1, 0, 0))
	fwC, _ := h.up(1, c, reqC)
	if got := ifid(t, fwC); got != "olt-7/1" {
		t.Fatalf("Interface-ID before %q", got)
	}
	reqGone := gone.msg(dhcpv6.MessageTypeRequest, 1, iapd(1, 0, 0))
	fwGone, _ := h.up(0, gone, reqGone)
	if n, _ := h.e.PendingLen(); n != 2 {
		t.Fatalf("%d pending before", n)
	}
	// A Relay-Forward from below on eth2: untrusted there for now.
	wrapped := dhcp6.AppendOption(dhcp6.AppendRelayHeader(nil, dhcp6.MsgRelayForw, 0, netip.Addr{}, c.ll), dhcp6.OptRelayMsg, reqC.ToBytes())
	if _, _, err := h.e.HandleClient(h.now, relay.ClientPacket{Port: 1, Dst: dhcp6.AllRelayAgentsAndServers, Src: c.ll, Payload: wrapped}); dropReason(t, err) != relay.DropRelayForwardUntrusted {
		t.Fatalf("relay-forward on eth2 before: %v", err)
	}

	if err := h.e.Reconfigure(reloaded()); err != nil {
		t.Fatal(err)
	}
	if got := portNames(h.e.Ports()); !slices.Equal(got, []string{"eth2", "eth3", "eth4"}) {
		t.Fatalf("ports %v", got)
	}
	if n, _ := h.e.PendingLen(); n != 1 {
		t.Errorf("%d pending after: eth1's request must go, eth2's stay", n)
	}

	// eth2's Reply, from the new server, echoing the Interface-ID it was
	// relayed with: that is no longer eth2's, so it names no port ...
	rep := replyTo(reqC, iapd(1, 100, 160, iaprefix("2001:db8:700::/56", 200, 300)))
	_, _, err := h.e.HandleServer(h.now, relay.ServerPacket{Uplink: true, Src: newServer, Payload: rawRelayReply(netip.IPv6Unspecified(), c.ll, []byte("olt-7/1"), rep.ToBytes())})
	if dropReason(t, err) != relay.DropUnknownPort {
		t.Errorf("reply with eth2's old Interface-ID: %v", err)
	}
	// ... and with its new one it reaches eth2, now index 0, and matches
	// the request relayed before the change (the MAC is known).
	out, upd, err := h.e.HandleServer(h.now, relay.ServerPacket{Uplink: true, Src: newServer, Payload: rawRelayReply(netip.IPv6Unspecified(), c.ll, []byte("olt-7/2"), rep.ToBytes())})
	if err != nil {
		t.Fatal(err)
	}
	if out.Port != 0 || out.Dst != c.ll || len(upd.Learn) != 1 || !upd.Learn[0].MACKnown || upd.Learn[0].MAC != c.mac || upd.Learn[0].Port != "eth2" {
		t.Errorf("eth2's reply after the change: out %+v, learned %+v", out, upd.Learn)
	}
	if n := h.e.Counters.Snoops(relay.SnoopUnmatched); n != 0 {
		t.Errorf("unmatched = %d: the pending request was lost", n)
	}

	// The old server is no longer trusted; eth1's Reply names no port.
	if _, _, err := h.e.HandleServer(h.now, relay.ServerPacket{Uplink: true, Src: serverAddr, Payload: rawRelayReply(netip.IPv6Unspecified(), c.ll, []byte("olt-7/2"), rep.ToBytes())}); dropReason(t, err) != relay.DropUntrustedServer {
		t.Errorf("reply from the old server: %v", err)
	}
	rf, _ := dhcpv6.RelayMessageFromBytes(fwGone)
	rrGone, _ := dhcpv6.NewRelayReplFromRelayForw(rf, replyTo(reqGone))
	if _, _, err := h.e.HandleServer(h.now, relay.ServerPacket{Uplink: true, Src: newServer, Payload: rrGone.ToBytes()}); dropReason(t, err) != relay.DropUnknownPort {
		t.Errorf("reply for the removed eth1: %v", err)
	}

	// eth2 now trusts a relay below.
	if _, _, err := h.e.HandleClient(h.now, relay.ClientPacket{Port: 0, Dst: dhcp6.AllRelayAgentsAndServers, Src: c.ll, Payload: wrapped}); err != nil {
		t.Errorf("relay-forward on eth2 after: %v", err)
	}
	// eth4 relays with its Interface-ID and link-address, and its Reply
	// comes back to it.
	reqA := added.msg(dhcpv6.MessageTypeSolicit, 9, iapd(1, 0, 0))
	fwA, _ := h.up(2, added, reqA)
	r, err := dhcp6.ParseRelay(fwA)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := r.InterfaceID(); string(id) != "eth4" || r.LinkAddr != netip.MustParseAddr("2001:db8:4::1") {
		t.Errorf("eth4's Relay-Forward: Interface-ID %q, link-address %s", id, r.LinkAddr)
	}
	h.e.Reconfigure(reloaded()) // the same again changes nothing
	if out, _ := h.downFrom(newServer, fwA, answer(dhcpv6.MessageTypeAdvertise, reqA)); out.Port != 2 {
		t.Errorf("eth4's reply went to port %d", out.Port)
	}

	// Counters: the Requests counted before the change are still there.
	if n := h.e.Counters.Messages(relay.Up, dhcp6.MsgRequest); n != 2 {
		t.Errorf("%d Requests counted up, want the 2 of before the change", n)
	}
}

// downFrom is down with the Relay-Reply from server src.
func (h *harness) downFrom(src netip.Addr, fw []byte, msg *dhcpv6.Message) (relay.ToClient, binding.Update) {
	h.t.Helper()
	rf, err := dhcpv6.RelayMessageFromBytes(fw)
	if err != nil {
		h.t.Fatal(err)
	}
	rr, err := dhcpv6.NewRelayReplFromRelayForw(rf, msg)
	if err != nil {
		h.t.Fatal(err)
	}
	out, upd, err := h.e.HandleServer(h.now, relay.ServerPacket{Uplink: true, Src: src, Payload: rr.ToBytes()})
	if err != nil {
		h.t.Fatalf("HandleServer dropped the message: %v", err)
	}
	h.apply(upd)
	return out, upd
}

func portNames(ps []relay.Port) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

// TestEngineReconfigureRefused: an invalid config, or one with another
// relay_id, changes nothing: the same messages are handled the same way.
func TestEngineReconfigureRefused(t *testing.T) {
	dupIfID := reloaded()
	dupIfID.Ports[2].InterfaceID = []byte("olt-7/2")
	noServers := reloaded()
	noServers.Servers = nil
	otherID := reloaded()
	otherID.RelayID = []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 0xef}
	dupName := reloaded()
	dupName.Ports[1].Name = "eth2"
	for name, tc := range map[string]struct {
		cfg relay.Config
		err error
	}{
		"duplicate interface-id": {cfg: dupIfID},
		"no servers":             {cfg: noServers},
		"relay id":               {cfg: otherID, err: relay.ErrRelayIDChanged},
		"duplicate port":         {cfg: dupName},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
			c := newCPE(4)
			req := c.msg(dhcpv6.MessageTypeRequest, 1, iapd(1, 0, 0))
			fw, _ := h.up(1, c, req)
			err := h.e.Reconfigure(tc.cfg)
			if err == nil || tc.err != nil && !errors.Is(err, tc.err) {
				t.Fatalf("Reconfigure: %v", err)
			}
			if got := portNames(h.e.Ports()); !slices.Equal(got, []string{"eth1", "eth2", "eth3"}) {
				t.Errorf("ports %v", got)
			}
			out, upd := h.down(fw, replyTo(req, iapd(1, 1, 2, iaprefix("2001:db8:700::/56", 3, 4))))
			if out.Port != 1 || len(upd.Learn) != 1 || !upd.Learn[0].MACKnown {
				t.Errorf("after the refused change: out %+v, learned %+v", out, upd.Learn)
			}
			if _, _, err := h.e.HandleServer(h.now, relay.ServerPacket{Uplink: true, Src: newServer, Payload: rawRelayReply(linkA, c.ll, []byte("eth1"), replyTo(req).ToBytes())}); dropReason(t, err) != relay.DropUntrustedServer {
				t.Errorf("the refused config's server is trusted: %v", err)
			}
		})
	}
	// nil RelayID keeps the running one.
	h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
	keep := reloaded()
	keep.RelayID = nil
	if err := h.e.Reconfigure(keep); err != nil {
		t.Fatal(err)
	}
	fw, _ := h.up(0, newCPE(5), newCPE(5).msg(dhcpv6.MessageTypeSolicit, 1))
	if !bytes.Contains(fw, relayDUID) {
		t.Error("the Relay-ID was lost")
	}
}

// TestEngineReconfigureCounters: a port's drop counts follow it by name
// across a change of index; a removed port's counts are kept, for
// EachPortDropByName; a port added again goes on from its counts.
func TestEngineReconfigureCounters(t *testing.T) {
	h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
	bad := func(port int) {
		h.e.HandleClient(h.now, relay.ClientPacket{Port: port, Dst: netip.MustParseAddr("2001:db8::99"), Src: newCPE(1).ll, Payload: []byte{1, 0, 0, 1}})
	}
	bad(0) // eth1
	bad(1) // eth2
	bad(1)
	if err := h.e.Reconfigure(reloaded()); err != nil {
		t.Fatal(err)
	}
	bad(0) // eth2, now index 0
	bad(2) // eth4
	if n := h.e.Counters.PortDrops(0, relay.DropBadDestination); n != 3 {
		t.Errorf("eth2 (index 0): %d bad_destination, want 3", n)
	}
	byName := func() map[string]uint64 {
		m := map[string]uint64{}
		h.e.Counters.EachPortDropByName(func(port string, r relay.Drop, n uint64) {
			if r == relay.DropBadDestination {
				m[port] = n
			}
		})
		return m
	}
	want := map[string]uint64{"eth1": 1, "eth2": 3, "eth3": 0, "eth4": 1}
	if got := byName(); !equalMaps(got, want) {
		t.Errorf("by name %v, want %v", got, want)
	}
	cur := map[string]uint64{}
	h.e.Counters.EachPortDrop(func(port int, r relay.Drop, n uint64) {
		if r == relay.DropBadDestination {
			cur[h.e.Ports()[port].Name] = n
		}
	})
	if want := (map[string]uint64{"eth2": 3, "eth3": 0, "eth4": 1}); !equalMaps(cur, want) {
		t.Errorf("current ports %v, want %v", cur, want)
	}
	if n := h.e.Counters.Drops(relay.DropBadDestination); n != 5 {
		t.Errorf("total %d, want 5", n)
	}
	// eth1 back, last: it goes on from 1.
	cfg := reloaded()
	cfg.Ports = append(cfg.Ports, relay.Port{Name: "eth1"})
	if err := h.e.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	bad(3)
	if n := h.e.Counters.PortDrops(3, relay.DropBadDestination); n != 2 {
		t.Errorf("eth1 added again: %d, want 2", n)
	}
}

func equalMaps(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestEngineReconfigureOriginated: the Reply to a message the relay
// originated before the change still goes back to the originator, on the
// port's new index.
func TestEngineReconfigureOriginated(t *testing.T) {
	h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
	c := newCPE(6)
	rel := c.msg(dhcpv6.MessageTypeRelease, 0x42, iapd(1, 0, 0, iaprefix("2001:db8:100::/56", 0, 0)))
	fw, err := h.e.Originate(h.now, relay.Originated{Port: "eth3", Peer: c.ll, MAC: c.mac, Payload: rel.ToBytes()})
	if err != nil {
		t.Fatal(err)
	}
	fw = bytes.Clone(fw)
	if err := h.e.Reconfigure(reloaded()); err != nil {
		t.Fatal(err)
	}
	out, upd := h.downFrom(newServer, fw, replyTo(rel))
	if !out.Originated || out.Port != 1 || !upd.Empty() {
		t.Errorf("reply to the originated Release: %+v, %+v", out, upd)
	}
	if _, err := h.e.Originate(h.now, relay.Originated{Port: "eth1", Peer: c.ll, Payload: rel.ToBytes()}); err == nil {
		t.Error("originated on the removed eth1")
	}
}
