package relay_test

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/relay"
)

// TestOriginateWrapsLikeClient: a Release the relay builds for a client
// is wrapped byte for byte as the client's own Release on that port would
// be (the engine's HandleClient is the reference), and the server's Reply
// to it is handed back (Originated) with nothing snooped, while the same
// Reply to the client's own Release goes to the client.
func TestOriginateWrapsLikeClient(t *testing.T) {
	for _, port := range []int{0, 1} {
		h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
		c := newCPE(7)
		rel := c.msg(dhcpv6.MessageTypeRelease, 0x42, iapd(1, 0, 0, iaprefix("2001:db8:100::/56", 0, 0)))
		rel.AddOption(dhcpv6.OptServerID(serverDUID))
		name := testConfig().Ports[port].Name

		fw, err := h.e.Originate(h.now, relay.Originated{Port: name, Peer: c.ll, MAC: c.mac, Payload: rel.ToBytes()})
		if err != nil {
			t.Fatal(err)
		}
		fw = bytes.Clone(fw)
		// The reference: the client's own Release, on a second engine.
		ref := newHarness(t, testConfig(), binding.PortLimits{}, nil)
		want, _ := ref.up(port, c, rel)
		if !bytes.Equal(fw, want) {
			t.Fatalf("port %s: originated Relay-Forward\n%x\nclient's own\n%x", name, fw, want)
		}

		ia := iapd(1, 0, 0)
		ia.Options.Add(status(iana.StatusSuccess))
		reply := replyTo(rel, ia)
		out, upd := h.down(fw, reply)
		if !out.Originated || out.Port != port || !bytes.Equal(out.Payload, reply.ToBytes()) {
			t.Errorf("port %s: reply to the originated Release: %+v, want Originated on port %d", name, out, port)
		}
		if !upd.Empty() {
			t.Errorf("port %s: the originator's reply was snooped: %+v", name, upd)
		}
		// The answer to a retransmission is held back too.
		if out, _ := h.down(fw, reply); !out.Originated {
			t.Errorf("port %s: second reply to the originated Release went to the client", name)
		}
		// The client's own Release (another xid) is answered to the client.
		own := c.msg(dhcpv6.MessageTypeRelease, 0x43, iapd(1, 0, 0, iaprefix("2001:db8:100::/56", 0, 0)))
		if out, _ := h.down(mustUp(h, port, c, own), replyTo(own)); out.Originated || out.Dst != c.ll {
			t.Errorf("port %s: reply to the client's own Release: %+v", name, out)
		}
	}
}

func mustUp(h *harness, port int, c cpe, m *dhcpv6.Message) []byte {
	fw, _ := h.up(port, c, m)
	return fw
}

// TestOriginateMACAndTTL: without a MAC the link-layer option is left
// out; a Reply after the pending TTL is no longer held back; bad input is
// refused.
func TestOriginateMACAndTTL(t *testing.T) {
	cfg := testConfig()
	cfg.PendingTTL = 10 * time.Second
	h := newHarness(t, cfg, binding.PortLimits{}, nil)
	c := newCPE(8)
	rel := c.msg(dhcpv6.MessageTypeRelease, 0x50, iapd(1, 0, 0))
	fw, err := h.e.Originate(h.now, relay.Originated{Port: "eth2", Peer: c.ll, Payload: rel.ToBytes()})
	if err != nil {
		t.Fatal(err)
	}
	fw = bytes.Clone(fw)
	rf, err := dhcpv6.RelayMessageFromBytes(fw)
	if err != nil {
		t.Fatal(err)
	}
	if rf.Options.GetOne(dhcpv6.OptionClientLinkLayerAddr) != nil {
		t.Error("link-layer option sent without a MAC")
	}
	if got, _ := netip.AddrFromSlice(rf.PeerAddr); got != c.ll {
		t.Errorf("peer-address %s, want %s", got, c.ll)
	}
	h.now = h.now.Add(10 * time.Second)
	if out, _ := h.down(fw, replyTo(rel)); out.Originated {
		t.Error("reply after the TTL still held back")
	}

	if _, err := h.e.Originate(h.now, relay.Originated{Port: "nope", Payload: rel.ToBytes()}); err == nil {
		t.Error("unknown port accepted")
	}
	noID := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeRelease}
	if _, err := h.e.Originate(h.now, relay.Originated{Port: "eth1", Payload: noID.ToBytes()}); !errors.Is(err, relay.ErrNoClientID) {
		t.Errorf("message without client id: %v", err)
	}
	if _, err := h.e.Originate(h.now, relay.Originated{Port: "eth1", Payload: []byte{8, 1}}); err == nil {
		t.Error("short message accepted")
	}
}
