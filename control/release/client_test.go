package release

import (
	"bytes"
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/config"
	"github.com/pdrelay/pdrelay/control/dhcp6"
	"github.com/pdrelay/pdrelay/control/relay"
)

var serverAddr = netip.MustParseAddr("2001:db8:5::547")

// engineOriginator runs originated Releases through a real relay engine
// and a fake server, as relay.Conn does: the engine wraps the Release,
// the server answers with a Relay-Reply, and the engine's output goes to
// the Releaser (Originated) or would go to the client (counted).
type engineOriginator struct {
	t      *testing.T
	eng    *relay.Engine
	r      *Releaser
	answer func(n int, release dhcp6.Message) []byte // the Reply, nil for none
	drop   int                                       // transmissions to leave unanswered first

	mu       sync.Mutex
	n        int
	relayed  [][]byte // the Relay-Forwards
	toClient int      // server messages the engine would deliver to a client
}

func (o *engineOriginator) Originate(m relay.Originated) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	fw, err := o.eng.Originate(time.Now(), m)
	if err != nil {
		return err
	}
	o.relayed = append(o.relayed, bytes.Clone(fw))
	o.n++
	if o.n <= o.drop {
		return nil
	}
	rf, err := dhcp6.ParseRelay(fw)
	if err != nil {
		o.t.Errorf("relay-forward: %v", err)
		return nil
	}
	rel, err := dhcp6.ParseMessage(rf.Inner)
	if err != nil || rel.Type != dhcp6.MsgRelease {
		o.t.Errorf("inner message %x: %v", rf.Inner, err)
		return nil
	}
	reply := o.answer(o.n, rel)
	if reply == nil {
		return nil
	}
	// A server's Relay-Reply: link and peer addresses and Interface-ID
	// echoed (RFC 8415 19.3).
	ifid, _ := rf.InterfaceID()
	rr := dhcp6.AppendRelayHeader(nil, dhcp6.MsgRelayRepl, 0, rf.LinkAddr, rf.PeerAddr)
	rr = dhcp6.AppendOption(rr, dhcp6.OptInterfaceID, ifid)
	rr = dhcp6.AppendOption(rr, dhcp6.OptRelayMsg, reply)
	out, upd, err := o.eng.HandleServer(time.Now(), relay.ServerPacket{Src: serverAddr, Uplink: true, Payload: rr})
	if err != nil {
		o.t.Errorf("engine dropped the Relay-Reply: %v", err)
		return nil
	}
	if !upd.Empty() {
		o.t.Errorf("engine snooped the reply to an originated Release: %+v", upd)
	}
	if !out.Originated {
		o.toClient++
		return nil
	}
	port := o.eng.Ports()[out.Port].Name
	go o.r.HandleReply(port, bytes.Clone(out.Payload)) // later, from the engine's goroutine
	return nil
}

func testEngine(t *testing.T) *relay.Engine {
	t.Helper()
	e, err := relay.NewEngine(relay.Config{
		Ports: []relay.Port{
			{Name: "eth1", LinkAddr: netip.MustParseAddr("2001:db8:a::1")},
			{Name: "eth2", InterfaceID: []byte("olt-7/1")},
		},
		Servers: []netip.Addr{serverAddr},
		RelayID: relayDUID,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// keaReply answers a Release as Kea 2.2 does: per IA_PD Success when it
// holds the prefixes, NoBinding otherwise, and a summary status at the
// top.
func keaReply(held map[netip.Prefix]bool) func(int, dhcp6.Message) []byte {
	return func(_ int, rel dhcp6.Message) []byte {
		cid, _ := rel.Options.Get(dhcp6.OptClientID)
		b := dhcp6.AppendHeader(nil, dhcp6.MsgReply, rel.XID)
		b = dhcp6.AppendOption(b, dhcp6.OptClientID, cid)
		b = dhcp6.AppendOption(b, dhcp6.OptServerID, []byte(serverDUID))
		top := dhcp6.StatusSuccess
		var ias []byte
		for data := range rel.Options.Each(dhcp6.OptIAPD) {
			ia, _ := dhcp6.ParseIAPD(data)
			st := dhcp6.StatusSuccess
			for _, p := range iaPrefixes(ia.Options) {
				if !held[p.Prefix] {
					st = dhcp6.StatusNoBinding
				}
			}
			if st != dhcp6.StatusSuccess {
				top = st
			}
			ias = dhcp6.AppendIAPD(ias, ia.IAID, 0, 0, dhcp6.AppendStatus(nil, st, "x"))
		}
		b = dhcp6.AppendStatus(b, top, "Summary status for all processed IA_PDs")
		return append(b, ias...)
	}
}

func clientReleaser(t *testing.T, tbl Table, o *engineOriginator) (*Releaser, *Metrics) {
	t.Helper()
	met := NewMetrics()
	r, err := New(context.Background(), Config{Mode: config.ReleaseClient, Timeout: 30 * time.Millisecond, MaxRC: 3, Operator: true}, tbl, met, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.rnd = func() float64 { return 0 }
	r.SetOriginator(o)
	o.r = r
	t.Cleanup(func() { r.Close() })
	return r, met
}

// TestClientReleaseThroughEngine: the Release goes out wrapped as the
// client's own (link-address, peer-address the next hop, Interface-ID,
// Relay-ID, link-layer option with the binding's MAC); the Reply comes
// back to the Releaser, never to the client; Success and NoBinding clear,
// and the retransmission keeps the transaction id.
func TestClientReleaseThroughEngine(t *testing.T) {
	a1 := bnd("eth1", clientA, 1, "2001:db8:1::/56")
	a2 := bnd("eth1", clientA, 2, "2001:db8:2::/56") // Kea does not hold it: NoBinding
	b1 := bnd("eth2", clientB, 1, "2001:db8:3::/56")
	b1.NextHop, b1.MAC = netip.MustParseAddr("fe80::b"), [6]byte{2, 0, 0, 0, 0, 0x0b}
	mgr := testManager(t, a1, a2, b1)
	o := &engineOriginator{t: t, eng: testEngine(t), drop: 1,
		answer: keaReply(map[netip.Prefix]bool{a1.Prefix: true, b1.Prefix: true})}
	r, met := clientReleaser(t, mgr, o)
	res, err := r.Release(context.Background(), []binding.Binding{a1, a2, b1})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range res {
		if !x.Released() {
			t.Errorf("%s not released: %s", x.Binding.Prefix, x.Reason())
		}
	}
	if res[1].Status != dhcp6.StatusNoBinding {
		t.Errorf("the prefix Kea does not hold: %s, want NoBinding", res[1].Reason())
	}
	if k := keysOf(t, mgr); len(k) != 0 {
		t.Errorf("bindings left: %v", k)
	}
	if o.toClient != 0 {
		t.Errorf("%d replies would have reached a client", o.toClient)
	}
	// Two Releases (one per client); the first sent twice (one dropped).
	o.mu.Lock()
	relayed := o.relayed
	o.mu.Unlock()
	if len(relayed) != 3 {
		t.Fatalf("%d Relay-Forwards, want 3", len(relayed))
	}
	var peers []netip.Addr
	xids := map[[3]byte]int{}
	for _, fw := range relayed {
		rf, _ := dhcp6.ParseRelay(fw)
		peers = append(peers, rf.PeerAddr)
		rel, _ := dhcp6.ParseMessage(rf.Inner)
		xids[rel.XID]++
		ll, ok := rf.Options.Get(dhcp6.OptClientLinkLayer)
		rid, _ := rf.Options.Get(dhcp6.OptRelayID)
		if !ok || len(ll) != 8 || !bytes.Equal(rid, relayDUID) {
			t.Errorf("relay-forward options: link-layer %x, relay-id %x", ll, rid)
		}
	}
	if len(xids) != 2 {
		t.Errorf("transaction ids %v: the retransmission should keep its id", xids)
	}
	if peers[0] != a1.NextHop && peers[0] != b1.NextHop {
		t.Errorf("peer-address %s is no binding's next hop", peers[0])
	}
	if n := counterValue(met.released.WithLabelValues(TriggerOperator, "no_binding")); n != 1 {
		t.Errorf("no_binding counted %v", n)
	}
}

// TestClientReleaseRefused: a Reply with UnspecFail for the IA keeps the
// binding; no Reply at all keeps it too.
func TestClientReleaseRefused(t *testing.T) {
	a1 := bnd("eth1", clientA, 1, "2001:db8:1::/56")
	b1 := bnd("eth2", clientB, 1, "2001:db8:3::/56")
	mgr := testManager(t, a1, b1)
	o := &engineOriginator{t: t, eng: testEngine(t), answer: func(_ int, rel dhcp6.Message) []byte {
		cid, _ := rel.Options.Get(dhcp6.OptClientID)
		if string(cid) == clientB {
			return nil // never answered
		}
		b := dhcp6.AppendHeader(nil, dhcp6.MsgReply, rel.XID)
		b = dhcp6.AppendOption(b, dhcp6.OptClientID, cid)
		return append(b, iapd(1, status(dhcp6.StatusUnspecFail))...)
	}}
	r, _ := clientReleaser(t, mgr, o)
	res, err := r.Release(context.Background(), []binding.Binding{a1, b1})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Released() || res[0].Reason() != "UnspecFail" || res[1].Released() || res[1].Reason() != "no answer" {
		t.Errorf("results %s, %s", res[0].Reason(), res[1].Reason())
	}
	if k := keysOf(t, mgr); len(k) != 2 {
		t.Errorf("bindings left %v, want both", k)
	}
	if o.toClient != 0 {
		t.Errorf("%d replies would have reached a client", o.toClient)
	}
}
