package relay_test

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/dhcp6"
	"github.com/pdrelay/pdrelay/control/relay"
)

var (
	t0         = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	serverAddr = netip.MustParseAddr("2001:db8:5::547")
	relayDUID  = []byte{0, 3, 0, 1, 0x02, 0, 0, 0, 0, 0xee} // DUID-LL 02:00:00:00:00:ee
	serverDUID = &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 0xfe}}
	linkA      = netip.MustParseAddr("2001:db8:a::1")
)

// rrType is the RELEASE-REQUEST type the tests configure.
const rrType = 250

// Ports: 0 eth1 with a link-address and a relay below it (trusted for
// Relay-Forward), 1 eth2 with its own Interface-ID and no link-address, 2
// eth3 trusted for RELEASE-REQUEST and Relay-Forward.
func testConfig() relay.Config {
	return relay.Config{
		Ports: []relay.Port{
			{Name: "eth1", Index: 3, LinkAddr: linkA, TrustRelayForward: true},
			{Name: "eth2", Index: 4, InterfaceID: []byte("olt-7/1")},
			{Name: "eth3", Index: 5, TrustReleaseRequest: true, TrustRelayForward: true},
		},
		Servers:            []netip.Addr{serverAddr},
		RelayID:            relayDUID,
		ReleaseRequestType: rrType,
	}
}

// cpe is a PD client: its MAC, link-local address and DUID-LL.
type cpe struct {
	mac  [6]byte
	ll   netip.Addr
	duid dhcpv6.DUID
}

func newCPE(n byte) cpe {
	mac := [6]byte{0x02, 0x00, 0x5e, 0x00, 0x53, n}
	return cpe{
		mac:  mac,
		ll:   netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 15: n}),
		duid: &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr(mac[:])},
	}
}

func (c cpe) id() string { return string(c.duid.ToBytes()) }

// msg builds a client message of type t with transaction id 10 20 xid.
func (c cpe) msg(t dhcpv6.MessageType, xid byte, opts ...dhcpv6.Option) *dhcpv6.Message {
	m := &dhcpv6.Message{MessageType: t, TransactionID: dhcpv6.TransactionID{0x10, 0x20, xid}}
	m.AddOption(dhcpv6.OptClientID(c.duid))
	m.AddOption(dhcpv6.OptElapsedTime(0))
	for _, o := range opts {
		m.AddOption(o)
	}
	return m
}

func iapd(iaid uint32, t1, t2 uint32, prefixes ...*dhcpv6.OptIAPrefix) *dhcpv6.OptIAPD {
	ia := &dhcpv6.OptIAPD{
		IaId: [4]byte{byte(iaid >> 24), byte(iaid >> 16), byte(iaid >> 8), byte(iaid)},
		T1:   time.Duration(t1) * time.Second,
		T2:   time.Duration(t2) * time.Second,
	}
	for _, p := range prefixes {
		ia.Options.Add(p)
	}
	return ia
}

func iaprefix(p string, pref, valid uint32) *dhcpv6.OptIAPrefix {
	_, n, err := net.ParseCIDR(p)
	if err != nil {
		panic(err)
	}
	return &dhcpv6.OptIAPrefix{
		PreferredLifetime: time.Duration(pref) * time.Second,
		ValidLifetime:     time.Duration(valid) * time.Second,
		Prefix:            n,
	}
}

func status(code iana.StatusCode) *dhcpv6.OptStatusCode {
	return &dhcpv6.OptStatusCode{StatusCode: code, StatusMessage: code.String()}
}

// replyTo builds the server's Reply (or another type) to client message m.
func replyTo(m *dhcpv6.Message, opts ...dhcpv6.Option) *dhcpv6.Message {
	return answer(dhcpv6.MessageTypeReply, m, opts...)
}

func answer(t dhcpv6.MessageType, m *dhcpv6.Message, opts ...dhcpv6.Option) *dhcpv6.Message {
	r := &dhcpv6.Message{MessageType: t, TransactionID: m.TransactionID}
	r.AddOption(m.GetOneOption(dhcpv6.OptionClientID))
	r.AddOption(dhcpv6.OptServerID(serverDUID))
	for _, o := range opts {
		r.AddOption(o)
	}
	return r
}

// rawRelayReply wraps inner, unchanged, in a Relay-Reply.
func rawRelayReply(link, peer netip.Addr, ifid []byte, inner []byte) []byte {
	b := dhcp6.AppendRelayHeader(nil, dhcp6.MsgRelayRepl, 0, link, peer)
	if ifid != nil {
		b = dhcp6.AppendOption(b, dhcp6.OptInterfaceID, ifid)
	}
	return dhcp6.AppendOption(b, dhcp6.OptRelayMsg, inner)
}

// harness runs an engine against a real binding table, applying every
// binding.Update the way binding.Manager does (removals, then learning).
type harness struct {
	t       *testing.T
	e       *relay.Engine
	tbl     *binding.Table
	now     time.Time
	refused []error // Learn errors (limits)
}

func newHarness(t *testing.T, cfg relay.Config, def binding.PortLimits, perPort map[string]binding.PortLimits) *harness {
	t.Helper()
	e, err := relay.NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, e: e, tbl: binding.NewTable(def, perPort), now: t0}
}

func (h *harness) apply(u binding.Update) {
	for _, r := range u.RemoveIAs {
		h.tbl.RemoveIA(r.Port, r.DUID, r.IAID, r.Reason)
	}
	for _, r := range u.Remove {
		h.tbl.Remove(r.Key, r.Reason)
	}
	for _, l := range u.Learn {
		if _, err := h.tbl.Learn(h.now, l); err != nil {
			h.refused = append(h.refused, err)
		}
	}
}

// up hands a client message to the engine from client c on port and
// returns a copy of the Relay-Forward; the engine must relay it.
func (h *harness) up(port int, c cpe, m dhcpv6.DHCPv6) ([]byte, binding.Update) {
	h.t.Helper()
	return h.upRaw(port, c.mac, c.ll, m.ToBytes())
}

func (h *harness) upRaw(port int, mac [6]byte, src netip.Addr, payload []byte) ([]byte, binding.Update) {
	h.t.Helper()
	fw, upd, err := h.e.HandleClient(h.now, relay.ClientPacket{Dst: dhcp6.AllRelayAgentsAndServers, Port: port, SrcMAC: mac, Src: src, Payload: payload})
	if err != nil {
		h.t.Fatalf("HandleClient dropped the message: %v", err)
	}
	h.apply(upd)
	return bytes.Clone(fw), upd
}

// down answers Relay-Forward fw with msg as a server does (insomniacslk's
// NewRelayReplFromRelayForw: link, peer, Interface-ID echoed) and hands the
// Relay-Reply to the engine, which must relay msg unchanged.
func (h *harness) down(fw []byte, msg *dhcpv6.Message) (relay.ToClient, binding.Update) {
	h.t.Helper()
	rf, err := dhcpv6.RelayMessageFromBytes(fw)
	if err != nil {
		h.t.Fatal(err)
	}
	rr, err := dhcpv6.NewRelayReplFromRelayForw(rf, msg)
	if err != nil {
		h.t.Fatal(err)
	}
	out, upd := h.downRaw(rr.ToBytes())
	if !rf.Options.RelayMessage().IsRelay() && !bytes.Equal(out.Payload, msg.ToBytes()) {
		h.t.Fatalf("relayed %x, server sent %x", out.Payload, msg.ToBytes())
	}
	return out, upd
}

func (h *harness) downRaw(rr []byte) (relay.ToClient, binding.Update) {
	h.t.Helper()
	out, upd, err := h.e.HandleServer(h.now, relay.ServerPacket{Uplink: true, Src: serverAddr, Payload: rr})
	if err != nil {
		h.t.Fatalf("HandleServer dropped the message: %v", err)
	}
	h.apply(upd)
	return out, upd
}

// exchange relays request m from c on port and the server's answer.
func (h *harness) exchange(port int, c cpe, m, ans *dhcpv6.Message) binding.Update {
	h.t.Helper()
	fw, _ := h.up(port, c, m)
	_, upd := h.down(fw, ans)
	return upd
}

func (h *harness) bindings() []binding.Binding { return h.tbl.List() }

// want builds the binding that learning prefix p (pref/valid seconds, at
// h.now) from c on port should give.
func (h *harness) want(port string, c cpe, iaid uint32, p string, pref, valid uint32) binding.Binding {
	return binding.Binding{
		Key:        binding.Key{Port: port, DUID: c.id(), IAID: iaid, Prefix: netip.MustParsePrefix(p)},
		NextHop:    c.ll,
		MAC:        c.mac,
		Preferred:  h.now.Add(time.Duration(pref) * time.Second),
		Expires:    h.now.Add(time.Duration(valid) * time.Second),
		ServerDUID: string(serverDUID.ToBytes()),
		Updated:    h.now,
	}
}

func checkBindings(t *testing.T, got []binding.Binding, want ...binding.Binding) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d bindings, want %d:\n got %+v\nwant %+v", len(got), len(want), got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("binding %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

func dropReason(t *testing.T, err error) relay.Drop {
	t.Helper()
	var de *relay.DropError
	if !errors.As(err, &de) || !errors.Is(err, relay.ErrDropped) {
		t.Fatalf("err %v is not a DropError", err)
	}
	return de.Reason
}

// --- Relay-Forward construction --------------------------------------------

func TestRelayForwardFromClient(t *testing.T) {
	// A Solicit with an IA_PD and an option no RFC defines.
	solicit := []byte{
		1,                // msg-type SOLICIT
		0xa1, 0xb2, 0xc3, // transaction-id
		0, 1, // Client ID option code
		0, 10, // option length
		0, 3, // DUID type LL
		0, 1, // hardware type Ethernet
		0x02, 0x00, 0x5e, 0x00, 0x53, 0x01, // link-layer address
		0, 25, // IA_PD option code
		0, 12, // option length
		0, 0, 0, 1, // IAID 1
		0, 0, 0, 0, // T1 0
		0, 0, 0, 0, // T2 0
		0xfe, 0x01, // option code 65025, unassigned
		0, 3, // option length
		'x', 'y', 'z', // option data
	}
	tests := []struct {
		name string
		port int
		cfg  func(*relay.Config)
		want []byte
	}{
		{
			name: "port with link-address, Interface-ID is the name",
			port: 0,
			want: []byte{
				12,                                                            // msg-type RELAY-FORW
				0,                                                             // hop-count
				0x20, 0x01, 0x0d, 0xb8, 0, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // link-address 2001:db8:a::1
				0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // peer-address fe80::1
				0, 18, // Interface-ID option code
				0, 4, // option length
				'e', 't', 'h', '1', // interface-id "eth1"
				0, 53, // Relay-ID option code
				0, 10, // option length
				0, 3, 0, 1, 0x02, 0, 0, 0, 0, 0xee, // relay DUID-LL
				0, 79, // Client Link-Layer Address option code
				0, 8, // option length
				0, 1, // link-layer type Ethernet
				0x02, 0x00, 0x5e, 0x00, 0x53, 0x01, // the frame's source MAC
				0, 9, // Relay-Message option code
				0, byte(len(solicit)), // option length
			},
		},
		{
			name: "port without link-address, own Interface-ID",
			port: 1,
			want: []byte{
				12,                                             // msg-type RELAY-FORW
				0,                                              // hop-count
				0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // link-address ::
				0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // peer-address fe80::1
				0, 18, // Interface-ID option code
				0, 7, // option length
				'o', 'l', 't', '-', '7', '/', '1', // interface-id "olt-7/1"
				0, 53, // Relay-ID option code
				0, 10, // option length
				0, 3, 0, 1, 0x02, 0, 0, 0, 0, 0xee, // relay DUID-LL
				0, 79, // Client Link-Layer Address option code
				0, 8, // option length
				0, 1, // link-layer type Ethernet
				0x02, 0x00, 0x5e, 0x00, 0x53, 0x01, // the frame's source MAC
				0, 9, // Relay-Message option code
				0, byte(len(solicit)), // option length
			},
		},
		{
			name: "no relay id configured: no Relay-ID option",
			port: 0,
			cfg:  func(c *relay.Config) { c.RelayID = nil },
			want: []byte{
				12,                                                            // msg-type RELAY-FORW
				0,                                                             // hop-count
				0x20, 0x01, 0x0d, 0xb8, 0, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // link-address 2001:db8:a::1
				0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // peer-address fe80::1
				0, 18, // Interface-ID option code
				0, 4, // option length
				'e', 't', 'h', '1', // interface-id "eth1"
				0, 79, // Client Link-Layer Address option code
				0, 8, // option length
				0, 1, // link-layer type Ethernet
				0x02, 0x00, 0x5e, 0x00, 0x53, 0x01, // the frame's source MAC
				0, 9, // Relay-Message option code
				0, byte(len(solicit)), // option length
			},
		},
	}
	c := newCPE(1)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			h := newHarness(t, cfg, binding.PortLimits{}, nil)
			fw, upd := h.upRaw(tt.port, c.mac, c.ll, solicit)
			want := append(bytes.Clone(tt.want), solicit...) // relay-message: the client's bytes
			if !bytes.Equal(fw, want) {
				t.Fatalf("Relay-Forward\n got %x\nwant %x", fw, want)
			}
			if !upd.Empty() {
				t.Errorf("a Solicit produced binding changes %+v", upd)
			}
			if n := h.e.Counters.Messages(relay.Up, dhcp6.MsgSolicit); n != 1 {
				t.Errorf("up solicit counter = %d", n)
			}

			// A server's parser sees the same.
			rf, err := dhcpv6.RelayMessageFromBytes(fw)
			if err != nil {
				t.Fatal(err)
			}
			ht, mac := rf.Options.ClientLinkLayerAddress()
			if ht != iana.HWTypeEthernet || !bytes.Equal(mac, c.mac[:]) {
				t.Errorf("insomniacslk reads client link-layer %v %v", ht, mac)
			}
			if !rf.PeerAddr.Equal(net.IP(c.ll.AsSlice())) {
				t.Errorf("insomniacslk reads peer %v", rf.PeerAddr)
			}
		})
	}
}

func TestRelayForwardInsomniacslkSolicit(t *testing.T) {
	h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
	c := newCPE(2)
	sol, err := dhcpv6.NewSolicit(net.HardwareAddr(c.mac[:]), dhcpv6.WithClientID(c.duid), dhcpv6.WithIAPD([4]byte{0, 0, 0, 9}))
	if err != nil {
		t.Fatal(err)
	}
	fw, _ := h.up(0, c, sol)
	rf, err := dhcpv6.RelayMessageFromBytes(fw)
	if err != nil {
		t.Fatal(err)
	}
	if rf.MessageType != dhcpv6.MessageTypeRelayForward || rf.HopCount != 0 ||
		!rf.LinkAddr.Equal(net.ParseIP("2001:db8:a::1")) || !rf.PeerAddr.Equal(net.IP(c.ll.AsSlice())) {
		t.Errorf("header %v", rf)
	}
	if id := rf.Options.InterfaceID(); string(id) != "eth1" {
		t.Errorf("Interface-ID %q", id)
	}
	if rid := rf.GetOneOption(dhcpv6.OptionCode(dhcp6.OptRelayID)); rid == nil || !bytes.Equal(rid.ToBytes(), relayDUID) {
		t.Errorf("Relay-ID %v", rid)
	}
	inner, err := rf.GetInnerMessage()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(inner.ToBytes(), sol.ToBytes()) {
		t.Errorf("inner message changed")
	}
}

// Unknown message types and options pass byte for byte both ways (G-1).
func TestUnknownPassesBothWays(t *testing.T) {
	h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
	c := newCPE(3)
	unknownUp := []byte{
		200,              // msg-type 200, unassigned
		0x01, 0x02, 0x03, // transaction-id
		0xfe, 0x02, // option code 65026, unassigned
		0, 2, // option length
		0xbe, 0xef, // option data
	}
	fw, _ := h.upRaw(0, c.mac, c.ll, unknownUp)
	r, err := dhcp6.ParseRelay(fw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.Inner, unknownUp) {
		t.Errorf("up: relayed %x, client sent %x", r.Inner, unknownUp)
	}
	if n := h.e.Counters.Messages(relay.Up, 200); n != 1 {
		t.Errorf("up type-200 counter = %d", n)
	}

	// Even a malformed client message is relayed as it is; only the
	// snooper gives up on it.
	malformed := []byte{
		3,       // msg-type REQUEST
		1, 2, 3, // transaction-id
		0, 1, // Client ID option code
		0, 40, // option length 40, 0 follow
	}
	fw, _ = h.upRaw(0, c.mac, c.ll, malformed)
	if r, err := dhcp6.ParseRelay(fw); err != nil || !bytes.Equal(r.Inner, malformed) {
		t.Errorf("malformed client message not relayed as is: %x %v", fw, err)
	}
	if n := h.e.Counters.Snoops(relay.SnoopUnparsable); n != 1 {
		t.Errorf("unparsable counter = %d, want 1", n)
	}

	unknownDown := []byte{
		201,              // msg-type 201, unassigned
		0x01, 0x02, 0x03, // transaction-id
		0, 1, // Client ID option code
		0, 10, // option length
		0, 3, 0, 1, 0x02, 0x00, 0x5e, 0x00, 0x53, 0x03, // client DUID-LL
		0xfe, 0x03, // option code 65027, unassigned
		0, 0, // option length 0
	}
	out, upd := h.downRaw(rawRelayReply(netip.IPv6Unspecified(), c.ll, []byte("eth1"), unknownDown))
	if !bytes.Equal(out.Payload, unknownDown) || out.Port != 0 || out.Dst != c.ll || out.DstPort != dhcp6.ClientPort {
		t.Errorf("down: %+v", out)
	}
	if !upd.Empty() {
		t.Errorf("unknown message type produced binding changes %+v", upd)
	}
	if n := h.e.Counters.Messages(relay.Down, 201); n != 1 {
		t.Errorf("down type-201 counter = %d", n)
	}
	// An unknown option inside a Reply passes too, and the Reply is snooped.
	req := c.msg(dhcpv6.MessageTypeRequest, 1, iapd(1, 0, 0))
	rep := replyTo(req, &dhcpv6.OptionGeneric{OptionCode: 0xfe04, OptionData: []byte{1, 2, 3}},
		iapd(1, 100, 200, iaprefix("2001:db8:100::/56", 300, 400)))
	fw, _ = h.up(0, c, req)
	if _, upd := h.down(fw, rep); len(upd.Learn) != 1 {
		t.Errorf("Reply with an unknown option: learned %+v", upd.Learn)
	}
}

func TestRelayForwardFromRelay(t *testing.T) {
	below := newCPE(0xb0) // the relay below: its MAC and address
	c := newCPE(4)
	sol := c.msg(dhcpv6.MessageTypeSolicit, 1, iapd(1, 0, 0))
	tests := []struct {
		inHops   uint8
		wantHops uint8
		drop     bool
	}{
		{0, 1, false},
		{5, 6, false},
		{dhcp6.HopCountLimit - 1, dhcp6.HopCountLimit, false},
		{dhcp6.HopCountLimit, 0, true},
		{255, 0, true},
	}
	for _, tt := range tests {
		h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
		in := &dhcpv6.RelayMessage{
			MessageType: dhcpv6.MessageTypeRelayForward,
			HopCount:    tt.inHops,
			LinkAddr:    net.ParseIP("::"),
			PeerAddr:    net.IP(c.ll.AsSlice()),
		}
		in.AddOption(dhcpv6.OptInterfaceID([]byte("sub-3")))
		in.AddOption(dhcpv6.OptRelayMessage(sol))
		payload := in.ToBytes()
		fw, _, err := h.e.HandleClient(h.now, relay.ClientPacket{Dst: dhcp6.AllRelayAgentsAndServers, Port: 0, SrcMAC: below.mac, Src: below.ll, Payload: payload})
		if tt.drop {
			if r := dropReason(t, err); r != relay.DropHopLimit {
				t.Errorf("hop %d: drop %v, want hop_limit", tt.inHops, r)
			}
			if n := h.e.Counters.Drops(relay.DropHopLimit); n != 1 {
				t.Errorf("hop %d: hop_limit counter = %d", tt.inHops, n)
			}
			continue
		}
		if err != nil {
			t.Fatalf("hop %d: %v", tt.inHops, err)
		}
		want := []byte{
			12,                                             // msg-type RELAY-FORW
			tt.wantHops,                                    // hop-count: the received one plus 1
			0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // link-address :: for a message from a relay
			0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xb0, // peer-address: the relay below
			0, 18, // Interface-ID option code
			0, 4, // option length
			'e', 't', 'h', '1', // interface-id "eth1"
			0, 53, // Relay-ID option code
			0, 10, // option length
			0, 3, 0, 1, 0x02, 0, 0, 0, 0, 0xee, // relay DUID-LL; no Client Link-Layer option
			0, 9, // Relay-Message option code
			0, byte(len(payload)), // option length
		}
		want = append(want, payload...)
		if !bytes.Equal(fw, want) {
			t.Errorf("hop %d: Relay-Forward\n got %x\nwant %x", tt.inHops, fw, want)
		}
		if n := h.e.Counters.Drops(relay.DropHopLimit); n != 0 {
			t.Errorf("hop %d: hop_limit counter = %d", tt.inHops, n)
		}
	}
}

func TestHandleClientDrops(t *testing.T) {
	c := newCPE(5)
	rr := rawRelayReply(netip.IPv6Unspecified(), c.ll, []byte("eth1"), []byte{7, 1, 2, 3})
	releaseReq := []byte{
		rrType,  // msg-type RELEASE-REQUEST (experimental value)
		1, 2, 3, // transaction-id
		0, 1, // Client ID option code
		0, 10, // option length
		0, 3, 0, 1, 0x02, 0x00, 0x5e, 0x00, 0x53, 0x05, // client DUID-LL
	}
	wrapped := func(inner []byte) []byte {
		b := dhcp6.AppendRelayHeader(nil, dhcp6.MsgRelayForw, 0, netip.Addr{}, c.ll)
		return dhcp6.AppendOption(b, dhcp6.OptRelayMsg, inner)
	}
	tests := []struct {
		name    string
		port    int
		payload []byte
		drop    relay.Drop
		relayed bool
	}{
		{"relay-reply on a downlink", 0, rr, relay.DropRelayReplyFromClient, false},
		{"untrusted RELEASE-REQUEST", 0, releaseReq, relay.DropReleaseRequestUntrusted, false},
		{"untrusted RELEASE-REQUEST wrapped in a Relay-Forward", 0, wrapped(releaseReq), relay.DropReleaseRequestUntrusted, false},
		{"untrusted RELEASE-REQUEST wrapped twice", 0, wrapped(wrapped(releaseReq)), relay.DropReleaseRequestUntrusted, false},
		{"relay-forward from a subscriber port", 1, wrapped([]byte{1, 1, 2, 3}), relay.DropRelayForwardUntrusted, false},
		{"relay-forward forging a relay below", 1, wrapped(wrapped(releaseReq)), relay.DropRelayForwardUntrusted, false},
		{"relay-forward from a port trusting a relay below", 0, wrapped([]byte{1, 1, 2, 3}), 0, true},
		{"trusted RELEASE-REQUEST", 2, releaseReq, 0, true},
		{"trusted RELEASE-REQUEST wrapped", 2, wrapped(releaseReq), 0, true},
		{"three bytes", 0, []byte{1, 2, 3}, relay.DropMalformed, false},
		{"empty", 0, nil, relay.DropMalformed, false},
		{"relay-forward without relay-message", 0, dhcp6.AppendRelayHeader(nil, dhcp6.MsgRelayForw, 0, netip.Addr{}, c.ll), relay.DropMalformed, false},
		{"no such port", 7, releaseReq, relay.DropUnknownPort, false},
		{"negative port", -1, releaseReq, relay.DropUnknownPort, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
			fw, _, err := h.e.HandleClient(h.now, relay.ClientPacket{Dst: dhcp6.AllRelayAgentsAndServers, Port: tt.port, SrcMAC: c.mac, Src: c.ll, Payload: tt.payload})
			if tt.relayed {
				if err != nil {
					t.Fatalf("dropped: %v", err)
				}
				r, err := dhcp6.ParseRelay(fw)
				if err != nil || !bytes.Equal(r.Inner, tt.payload) {
					t.Fatalf("relayed %x (%v)", fw, err)
				}
				return
			}
			if r := dropReason(t, err); r != tt.drop {
				t.Fatalf("drop %v, want %v", r, tt.drop)
			}
			if fw != nil {
				t.Errorf("dropped message returned bytes %x", fw)
			}
			if n := h.e.Counters.Drops(tt.drop); n != 1 {
				t.Errorf("%v counter = %d", tt.drop, n)
			}
		})
	}
	// Without a configured RELEASE-REQUEST type, type 250 is just unknown.
	cfg := testConfig()
	cfg.ReleaseRequestType = 0
	h := newHarness(t, cfg, binding.PortLimits{}, nil)
	if _, _, err := h.e.HandleClient(h.now, relay.ClientPacket{Dst: dhcp6.AllRelayAgentsAndServers, Port: 0, SrcMAC: c.mac, Src: c.ll, Payload: releaseReq}); err != nil {
		t.Errorf("type 250 dropped with no RELEASE-REQUEST type configured: %v", err)
	}
}

// --- Relay-Reply handling ---------------------------------------------------

func TestHandleServerSource(t *testing.T) {
	c := newCPE(6)
	rr := rawRelayReply(netip.IPv6Unspecified(), c.ll, []byte("eth1"), []byte{7, 1, 2, 3})
	group := []netip.Addr{dhcp6.AllServers}
	trusted := []netip.Prefix{netip.MustParsePrefix("2001:db8:666::/48")}
	tests := []struct {
		name      string
		servers   []netip.Addr
		trusted   []netip.Prefix
		src       netip.Addr
		offUplink bool
		payload   []byte
		drop      relay.Drop
		ok        bool
	}{
		{"configured server", []netip.Addr{serverAddr}, nil, serverAddr, false, rr, 0, true},
		{"configured server with zone", []netip.Addr{netip.MustParseAddr("fe80::547")}, nil, netip.MustParseAddr("fe80::547%uplink"), false, rr, 0, true},
		{"unknown server", []netip.Addr{serverAddr}, nil, netip.MustParseAddr("2001:db8:666::1"), false, rr, relay.DropUntrustedServer, false},
		{"the server's address on a downlink", []netip.Addr{serverAddr}, nil, serverAddr, true, rr, relay.DropUntrustedServer, false},
		{"in trusted_servers with ff05::1:3", group, trusted, netip.MustParseAddr("2001:db8:666::1"), false, rr, 0, true},
		{"outside trusted_servers with ff05::1:3", group, trusted, netip.MustParseAddr("2001:db8:667::1"), false, rr, relay.DropUntrustedServer, false},
		{"in trusted_servers beside a unicast server", []netip.Addr{serverAddr}, trusted, netip.MustParseAddr("2001:db8:666::2"), false, rr, 0, true},
		{"in trusted_servers off the uplink", group, trusted, netip.MustParseAddr("2001:db8:666::1"), true, rr, relay.DropUntrustedServer, false},
		{"not a relay-reply", []netip.Addr{serverAddr}, nil, serverAddr, false, []byte{7, 1, 2, 3}, relay.DropNotRelayReply, false},
		{"relay-forward from the server side", []netip.Addr{serverAddr}, nil, serverAddr, false,
			dhcp6.AppendOption(dhcp6.AppendRelayHeader(nil, dhcp6.MsgRelayForw, 0, netip.Addr{}, c.ll), dhcp6.OptRelayMsg, []byte{1, 1, 2, 3}),
			relay.DropNotRelayReply, false},
		{"empty", []netip.Addr{serverAddr}, nil, serverAddr, false, nil, relay.DropNotRelayReply, false},
		{"truncated relay-reply", []netip.Addr{serverAddr}, nil, serverAddr, false, rr[:40], relay.DropMalformed, false},
		{"empty relay-message", []netip.Addr{serverAddr}, nil, serverAddr, false,
			rawRelayReply(netip.IPv6Unspecified(), c.ll, []byte("eth1"), nil), relay.DropMalformed, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Servers, cfg.TrustedServers = tt.servers, tt.trusted
			h := newHarness(t, cfg, binding.PortLimits{}, nil)
			out, _, err := h.e.HandleServer(h.now, relay.ServerPacket{Uplink: !tt.offUplink, Src: tt.src, Payload: tt.payload})
			if tt.ok {
				if err != nil {
					t.Fatalf("dropped: %v", err)
				}
				if !bytes.Equal(out.Payload, []byte{7, 1, 2, 3}) {
					t.Errorf("payload %x", out.Payload)
				}
				return
			}
			if r := dropReason(t, err); r != tt.drop {
				t.Fatalf("drop %v, want %v", r, tt.drop)
			}
			if n := h.e.Counters.Drops(tt.drop); n != 1 {
				t.Errorf("%v counter = %d", tt.drop, n)
			}
		})
	}
	// A multicast group alone trusts nobody: the engine refuses it.
	cfg := testConfig()
	cfg.Servers = group
	if _, err := relay.NewEngine(cfg); err == nil {
		t.Error("NewEngine accepted a multicast server without trusted prefixes")
	}
}

func TestRelayReplyPortChoice(t *testing.T) {
	c := newCPE(7)
	inner := []byte{
		7,       // msg-type REPLY
		1, 2, 3, // transaction-id
	}
	tests := []struct {
		name     string
		link     netip.Addr
		ifid     []byte
		wantPort int
		drop     bool
	}{
		{"by Interface-ID (name)", netip.IPv6Unspecified(), []byte("eth1"), 0, false},
		{"by Interface-ID (configured)", netip.IPv6Unspecified(), []byte("olt-7/1"), 1, false},
		{"Interface-ID wins over link-address", linkA, []byte("eth3"), 2, false},
		{"by link-address, no Interface-ID", linkA, nil, 0, false},
		{"by link-address, unknown Interface-ID", linkA, []byte("nope"), 0, false},
		{"unknown Interface-ID, link ::", netip.IPv6Unspecified(), []byte("nope"), 0, true},
		{"neither", netip.IPv6Unspecified(), nil, 0, true},
		{"unknown link-address", netip.MustParseAddr("2001:db8:b::1"), nil, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
			out, _, err := h.e.HandleServer(h.now, relay.ServerPacket{Uplink: true, Src: serverAddr, Payload: rawRelayReply(tt.link, c.ll, tt.ifid, inner)})
			if tt.drop {
				if r := dropReason(t, err); r != relay.DropUnknownPort {
					t.Fatalf("drop %v, want unknown_port", r)
				}
				if n := h.e.Counters.Drops(relay.DropUnknownPort); n != 1 {
					t.Errorf("unknown_port counter = %d", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := relay.ToClient{Port: tt.wantPort, Dst: c.ll, DstPort: dhcp6.ClientPort, Payload: inner}
			if out.Port != want.Port || out.Dst != want.Dst || out.DstPort != want.DstPort || !bytes.Equal(out.Payload, inner) {
				t.Errorf("out = %+v, want %+v", out, want)
			}
			if n := h.e.Counters.Messages(relay.Down, dhcp6.MsgReply); n != 1 {
				t.Errorf("down reply counter = %d", n)
			}
		})
	}
}

// A Relay-Reply for a relay below goes to it on port 547, and the Reply
// inside is still snooped, with the relay below as next hop.
func TestRelayReplyForRelayBelow(t *testing.T) {
	h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
	below := newCPE(0xb0)
	c := newCPE(8)
	req := c.msg(dhcpv6.MessageTypeRequest, 1, iapd(1, 0, 0))
	fwBelow, err := dhcpv6.EncapsulateRelay(req, dhcpv6.MessageTypeRelayForward, net.IPv6zero, net.IP(c.ll.AsSlice()))
	if err != nil {
		t.Fatal(err)
	}
	fwBelow.AddOption(dhcpv6.OptInterfaceID([]byte("sub-3")))
	fw, _ := h.up(0, below, fwBelow)

	rep := replyTo(req, iapd(1, 1000, 1600, iaprefix("2001:db8:200::/56", 2000, 3000)))
	out, upd := h.down(fw, rep)
	// What reaches the relay below is its own Relay-Reply.
	wantInner, err := dhcpv6.NewRelayReplFromRelayForw(fwBelow, rep)
	if err != nil {
		t.Fatal(err)
	}
	if out.Port != 0 || out.Dst != below.ll || out.DstPort != dhcp6.ServerPort || !bytes.Equal(out.Payload, wantInner.ToBytes()) {
		t.Errorf("out = %+v", out)
	}
	if n := h.e.Counters.Messages(relay.Down, dhcp6.MsgRelayRepl); n != 1 {
		t.Errorf("down relay-reply counter = %d", n)
	}
	if len(upd.Learn) != 1 || !upd.Learn[0].MACKnown {
		t.Fatalf("learned %+v", upd.Learn)
	}
	want := h.want("eth1", c, 1, "2001:db8:200::/56", 2000, 3000)
	want.NextHop, want.MAC = below.ll, below.mac
	checkBindings(t, h.bindings(), want)
	if n := h.e.Counters.Snoops(relay.SnoopUnmatched); n != 0 {
		t.Errorf("unmatched = %d", n)
	}
}

// --- Snooping ---------------------------------------------------------------

func TestSnoopRequestReply(t *testing.T) {
	h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
	c := newCPE(10)
	req := c.msg(dhcpv6.MessageTypeRequest, 1, iapd(1, 0, 0))
	fw, upd := h.up(0, c, req)
	if !upd.Empty() {
		t.Errorf("a Request produced binding changes %+v", upd)
	}
	rep := replyTo(req, iapd(1, 1800, 2880, iaprefix("2001:db8:100::/56", 3600, 7200)))
	out, upd := h.down(fw, rep)
	if out.Port != 0 || out.Dst != c.ll || out.DstPort != 546 {
		t.Errorf("out = %+v", out)
	}
	wantL := binding.Learned{
		Key:        binding.Key{Port: "eth1", DUID: c.id(), IAID: 1, Prefix: netip.MustParsePrefix("2001:db8:100::/56")},
		NextHop:    c.ll,
		MAC:        c.mac,
		MACKnown:   true,
		Preferred:  3600 * time.Second,
		Valid:      7200 * time.Second,
		ServerDUID: string(serverDUID.ToBytes()),
	}
	if len(upd.Learn) != 1 || upd.Learn[0] != wantL || len(upd.Remove)+len(upd.RemoveIAs) != 0 {
		t.Fatalf("update = %+v\nwant Learn %+v", upd, wantL)
	}
	checkBindings(t, h.bindings(), h.want("eth1", c, 1, "2001:db8:100::/56", 3600, 7200))
	if n := h.e.Counters.Snoops(relay.SnoopUnmatched); n != 0 {
		t.Errorf("unmatched = %d", n)
	}
	// The same Reply again (a duplicate from the server) no longer matches
	// a request: it still refreshes the binding, keeping the MAC.
	h.now = h.now.Add(time.Minute)
	_, upd = h.downRaw(rawRelayReply(linkA, c.ll, []byte("eth1"), rep.ToBytes()))
	if len(upd.Learn) != 1 || upd.Learn[0].MACKnown {
		t.Fatalf("duplicate Reply learned %+v", upd.Learn)
	}
	checkBindings(t, h.bindings(), h.want("eth1", c, 1, "2001:db8:100::/56", 3600, 7200))
	if n := h.e.Counters.Snoops(relay.SnoopUnmatched); n != 1 {
		t.Errorf("unmatched = %d, want 1", n)
	}
}

func TestSnoopSolicitAdvertiseRapidCommit(t *testing.T) {
	h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
	c := newCPE(11)
	sol := c.msg(dhcpv6.MessageTypeSolicit, 1, iapd(1, 0, 0))
	adv := answer(dhcpv6.MessageTypeAdvertise, sol, iapd(1, 100, 160, iaprefix("2001:db8:300::/56", 200, 300)))
	if upd := h.exchange(0, c, sol, adv); !upd.Empty() {
		t.Errorf("Advertise produced binding changes %+v", upd)
	}
	if n := h.tbl.Len(); n != 0 {
		t.Fatalf("Advertise installed %d bindings", n)
	}

	solRC := c.msg(dhcpv6.MessageTypeSolicit, 2, &dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit}, iapd(1, 0, 0))
	rep, err := dhcpv6.NewReplyFromMessage(solRC, dhcpv6.WithServerID(serverDUID),
		dhcpv6.WithOption(iapd(1, 100, 160, iaprefix("2001:db8:300::/56", 200, 300))))
	if err != nil {
		t.Fatal(err)
	}
	if upd := h.exchange(0, c, solRC, rep); len(upd.Learn) != 1 || !upd.Learn[0].MACKnown {
		t.Fatalf("rapid-commit Reply learned %+v", upd.Learn)
	}
	checkBindings(t, h.bindings(), h.want("eth1", c, 1, "2001:db8:300::/56", 200, 300))
}

func TestSnoopRenewRebind(t *testing.T) {
	h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
	c := newCPE(12)
	req := c.msg(dhcpv6.MessageTypeRequest, 1, iapd(1, 0, 0))
	h.exchange(0, c, req, replyTo(req, iapd(1, 50, 80, iaprefix("2001:db8:400::/56", 100, 160))))
	h.tbl.TakeChanges()

	h.now = h.now.Add(60 * time.Second)
	renew := c.msg(dhcpv6.MessageTypeRenew, 2, iapd(1, 0, 0, iaprefix("2001:db8:400::/56", 0, 0)))
	h.exchange(0, c, renew, replyTo(renew, iapd(1, 500, 800, iaprefix("2001:db8:400::/56", 1000, 1600))))
	checkBindings(t, h.bindings(), h.want("eth1", c, 1, "2001:db8:400::/56", 1000, 1600))
	ch := h.tbl.TakeChanges()
	if len(ch) != 1 || ch[0].Op != binding.Updated || ch[0].RouteChanged {
		t.Errorf("renewal changes = %+v, want one Updated without route change", ch)
	}

	h.now = h.now.Add(900 * time.Second)
	rebind := c.msg(dhcpv6.MessageTypeRebind, 3, iapd(1, 0, 0, iaprefix("2001:db8:400::/56", 0, 0)))
	h.exchange(0, c, rebind, replyTo(rebind, iapd(1, 500, 800, iaprefix("2001:db8:400::/56", 1000, 1600))))
	checkBindings(t, h.bindings(), h.want("eth1", c, 1, "2001:db8:400::/56", 1000, 1600))
}

// A relay that restarted with no bindings learns them again from the next
// Renew or Rebind exchange, with the MAC of the request.
func TestSnoopRelearnAfterRestart(t *testing.T) {
	for _, typ := range []dhcpv6.MessageType{dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind} {
		h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
		c := newCPE(13)
		m := c.msg(typ, 9, iapd(4, 0, 0, iaprefix("2001:db8:500::/48", 0, 0)))
		upd := h.exchange(1, c, m, replyTo(m, iapd(4, 500, 800, iaprefix("2001:db8:500::/48", 1000, 1600))))
		if len(upd.Learn) != 1 || !upd.Learn[0].MACKnown {
			t.Fatalf("%v: learned %+v", typ, upd.Learn)
		}
		checkBindings(t, h.bindings(), h.want("eth2", c, 4, "2001:db8:500::/48", 1000, 1600))
	}
}

func TestSnoopRemovals(t *testing.T) {
	c := newCPE(14)
	p1, p2, p3 := "2001:db8:600::/56", "2001:db8:601::/56", "2001:db8:602::/56"
	// setup: IA_PD 1 with p1 and p2 (different lifetimes), IA_PD 2 with p3.
	setup := func(t *testing.T) *harness {
		h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
		req := c.msg(dhcpv6.MessageTypeRequest, 1, iapd(1, 0, 0), iapd(2, 0, 0))
		h.exchange(0, c, req, replyTo(req,
			iapd(1, 100, 160, iaprefix(p1, 200, 300), iaprefix(p2, 400, 500)),
			iapd(2, 100, 160, iaprefix(p3, 600, 700))))
		checkBindings(t, h.bindings(),
			h.want("eth1", c, 1, p1, 200, 300),
			h.want("eth1", c, 1, p2, 400, 500),
			h.want("eth1", c, 2, p3, 600, 700))
		h.tbl.TakeChanges()
		h.now = h.now.Add(10 * time.Second)
		return h
	}
	removed := func(t *testing.T, h *harness, reason string, n int) {
		t.Helper()
		ch := h.tbl.TakeChanges()
		got := 0
		for _, c := range ch {
			if c.Op == binding.Removed {
				got++
				if c.Reason != reason {
					t.Errorf("removed %v with reason %q, want %q", c.Binding.Prefix, c.Reason, reason)
				}
			}
		}
		if got != n {
			t.Errorf("%d removals, want %d (%+v)", got, n, ch)
		}
	}

	t.Run("valid lifetime 0 removes that prefix", func(t *testing.T) {
		h := setup(t)
		renew := c.msg(dhcpv6.MessageTypeRenew, 2, iapd(1, 0, 0))
		upd := h.exchange(0, c, renew, replyTo(renew, iapd(1, 100, 160, iaprefix(p1, 0, 0), iaprefix(p2, 400, 500))))
		if len(upd.Remove) != 1 || upd.Remove[0].Reason != binding.ReasonZeroValid {
			t.Fatalf("update %+v", upd)
		}
		removed(t, h, binding.ReasonZeroValid, 1)
		h0 := *h
		h0.now = t0
		checkBindings(t, h.bindings(), h.want("eth1", c, 1, p2, 400, 500), h0.want("eth1", c, 2, p3, 600, 700))
	})
	t.Run("IA_PD NoBinding removes the IA", func(t *testing.T) {
		h := setup(t)
		renew := c.msg(dhcpv6.MessageTypeRenew, 2, iapd(1, 0, 0), iapd(2, 0, 0))
		nb := iapd(1, 0, 0)
		nb.Options.Add(status(iana.StatusNoBinding))
		upd := h.exchange(0, c, renew, replyTo(renew, nb, iapd(2, 100, 160, iaprefix(p3, 600, 700))))
		if len(upd.RemoveIAs) != 1 || upd.RemoveIAs[0] != (binding.RemoveIA{Port: "eth1", DUID: c.id(), IAID: 1, Reason: binding.ReasonNoBinding}) {
			t.Fatalf("update %+v", upd)
		}
		removed(t, h, binding.ReasonNoBinding, 2)
		checkBindings(t, h.bindings(), h.want("eth1", c, 2, p3, 600, 700))
	})
	t.Run("Release removes at once and on its Reply", func(t *testing.T) {
		h := setup(t)
		rel := c.msg(dhcpv6.MessageTypeRelease, 3, iapd(1, 0, 0, iaprefix(p1, 0, 0), iaprefix(p2, 0, 0)))
		fw, upd := h.up(0, c, rel)
		wantRm := binding.RemoveIA{Port: "eth1", DUID: c.id(), IAID: 1, Reason: binding.ReasonReleased}
		if len(upd.RemoveIAs) != 1 || upd.RemoveIAs[0] != wantRm {
			t.Fatalf("Release update %+v", upd)
		}
		removed(t, h, binding.ReasonReleased, 2)
		h0 := *h
		h0.now = t0
		checkBindings(t, h.bindings(), h0.want("eth1", c, 2, p3, 600, 700))
		_, upd = h.down(fw, replyTo(rel, status(iana.StatusSuccess)))
		if len(upd.RemoveIAs) != 1 || upd.RemoveIAs[0] != wantRm || len(upd.Learn) != 0 {
			t.Fatalf("Release Reply update %+v", upd)
		}
	})
	t.Run("Decline's Reply removes", func(t *testing.T) {
		h := setup(t)
		dec := c.msg(dhcpv6.MessageTypeDecline, 4, iapd(2, 0, 0, iaprefix(p3, 0, 0)))
		fw, upd := h.up(0, c, dec)
		if !upd.Empty() {
			t.Fatalf("Decline itself removed %+v", upd)
		}
		if h.tbl.Len() != 3 {
			t.Fatal("Decline removed a binding before its Reply")
		}
		_, upd = h.down(fw, replyTo(dec, status(iana.StatusSuccess)))
		if len(upd.RemoveIAs) != 1 || upd.RemoveIAs[0] != (binding.RemoveIA{Port: "eth1", DUID: c.id(), IAID: 2, Reason: binding.ReasonDeclined}) {
			t.Fatalf("Decline Reply update %+v", upd)
		}
		removed(t, h, binding.ReasonDeclined, 1)
		if h.tbl.Len() != 2 {
			t.Errorf("%d bindings left", h.tbl.Len())
		}
	})
	t.Run("top-level failure learns nothing", func(t *testing.T) {
		h := setup(t)
		renew := c.msg(dhcpv6.MessageTypeRenew, 5, iapd(1, 0, 0))
		upd := h.exchange(0, c, renew, replyTo(renew, status(iana.StatusUnspecFail),
			iapd(1, 100, 160, iaprefix(p1, 0, 0), iaprefix("2001:db8:6ff::/56", 1000, 2000))))
		if !upd.Empty() {
			t.Fatalf("failed Reply produced %+v", upd)
		}
		if ch := h.tbl.TakeChanges(); len(ch) != 0 {
			t.Errorf("changes %+v", ch)
		}
	})
}

func TestSnoopTwoIAPDsAndPrefixes(t *testing.T) {
	h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
	c := newCPE(15)
	req := c.msg(dhcpv6.MessageTypeRequest, 1, iapd(1, 0, 0), iapd(2, 0, 0))
	upd := h.exchange(1, c, req, replyTo(req,
		iapd(1, 100, 160, iaprefix("2001:db8:700::/56", 200, 300), iaprefix("2001:db8:701::/60", 20, 30)),
		iapd(2, 100, 160, iaprefix("2001:db8:702::/48", 0xffffffff, 0xffffffff))))
	if len(upd.Learn) != 3 {
		t.Fatalf("learned %+v", upd.Learn)
	}
	inf := h.want("eth2", c, 2, "2001:db8:702::/48", 0, 0)
	inf.Preferred, inf.Expires = binding.Forever, binding.Forever
	checkBindings(t, h.bindings(),
		h.want("eth2", c, 1, "2001:db8:700::/56", 200, 300),
		h.want("eth2", c, 1, "2001:db8:701::/60", 20, 30),
		inf)
	// The shorter lifetime expires alone.
	if n := h.tbl.Expire(h.now.Add(30 * time.Second)); n != 1 {
		t.Errorf("Expire removed %d", n)
	}
	if n := h.tbl.Len(); n != 2 {
		t.Errorf("%d bindings after expiry", n)
	}
}

func TestSnoopUnmatched(t *testing.T) {
	h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
	c, other := newCPE(16), newCPE(17)
	req := c.msg(dhcpv6.MessageTypeRequest, 1, iapd(1, 0, 0))
	fw, _ := h.up(0, c, req)

	// A Reply to another client with the same transaction id does not
	// match c's request: it is learned for the other DUID, MAC unknown.
	otherReq := other.msg(dhcpv6.MessageTypeRequest, 1, iapd(1, 0, 0))
	otherRep := replyTo(otherReq, iapd(1, 100, 160, iaprefix("2001:db8:800::/56", 200, 300)))
	_, upd := h.downRaw(rawRelayReply(linkA, other.ll, []byte("eth1"), otherRep.ToBytes()))
	if len(upd.Learn) != 1 || upd.Learn[0].MACKnown || upd.Learn[0].DUID != other.id() {
		t.Fatalf("learned %+v", upd.Learn)
	}
	if n := h.e.Counters.Snoops(relay.SnoopUnmatched); n != 1 {
		t.Errorf("unmatched = %d, want 1", n)
	}
	wantOther := h.want("eth1", other, 1, "2001:db8:800::/56", 200, 300)
	wantOther.MAC = [6]byte{}

	// c's own Reply still matches its request.
	_, upd = h.down(fw, replyTo(req, iapd(1, 100, 160, iaprefix("2001:db8:801::/56", 200, 300))))
	if len(upd.Learn) != 1 || !upd.Learn[0].MACKnown {
		t.Fatalf("learned %+v", upd.Learn)
	}
	if n := h.e.Counters.Snoops(relay.SnoopUnmatched); n != 1 {
		t.Errorf("unmatched = %d, want 1", n)
	}
	checkBindings(t, h.bindings(), wantOther, h.want("eth1", c, 1, "2001:db8:801::/56", 200, 300))
}

func TestSnoopPendingLimits(t *testing.T) {
	cfg := testConfig()
	cfg.PendingMax = 1
	cfg.PendingTTL = 10 * time.Second
	h := newHarness(t, cfg, binding.PortLimits{}, nil)
	c, d := newCPE(18), newCPE(19)
	reqC := c.msg(dhcpv6.MessageTypeRequest, 1, iapd(1, 0, 0))
	reqD := d.msg(dhcpv6.MessageTypeRequest, 1, iapd(1, 0, 0))
	fwC, _ := h.up(0, c, reqC)
	fwD, _ := h.up(0, d, reqD) // the newest is recorded: c's is evicted
	if n := h.e.Counters.Snoops(relay.SnoopPendingEvicted); n != 1 {
		t.Errorf("pending_evicted = %d, want 1", n)
	}
	_, upd := h.down(fwD, replyTo(reqD, iapd(1, 1, 2, iaprefix("2001:db8:900::/56", 3, 4))))
	if len(upd.Learn) != 1 || !upd.Learn[0].MACKnown || upd.Learn[0].MAC != d.mac {
		t.Errorf("the newest request: learned %+v", upd.Learn)
	}
	_, upd = h.down(fwC, replyTo(reqC, iapd(1, 1, 2, iaprefix("2001:db8:901::/56", 3, 4))))
	if len(upd.Learn) != 1 || upd.Learn[0].MACKnown {
		t.Errorf("evicted request: learned %+v", upd.Learn)
	}
	// A request exactly TTL old is too late to match.
	reqD2 := d.msg(dhcpv6.MessageTypeRenew, 2, iapd(1, 0, 0))
	fwD2, _ := h.up(0, d, reqD2)
	h.now = h.now.Add(10 * time.Second)
	_, upd = h.down(fwD2, replyTo(reqD2, iapd(1, 1, 2, iaprefix("2001:db8:900::/56", 3, 4))))
	if len(upd.Learn) != 1 || upd.Learn[0].MACKnown {
		t.Errorf("stale request: learned %+v", upd.Learn)
	}
	if n := h.e.Counters.Snoops(relay.SnoopUnmatched); n != 2 {
		t.Errorf("unmatched = %d, want 2", n)
	}
}

// The binding goes on the port the Relay-Reply names (the Interface-ID the
// relay sent, echoed by the server), where the message is delivered. A
// request from the same DUID on another port does not match it: that is
// another client (G-4), whose MAC must not be taken.
func TestSnoopPortFromReply(t *testing.T) {
	h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
	c := newCPE(20)
	req := c.msg(dhcpv6.MessageTypeRequest, 1, iapd(1, 0, 0))
	h.up(0, c, req) // asked on eth1 ...
	rep := replyTo(req, iapd(1, 1, 2, iaprefix("2001:db8:a00::/56", 3, 4)))
	out, _ := h.downRaw(rawRelayReply(netip.IPv6Unspecified(), c.ll, []byte("olt-7/1"), rep.ToBytes()))
	if out.Port != 1 { // ... answered for eth2
		t.Errorf("out port %d", out.Port)
	}
	want := h.want("eth2", c, 1, "2001:db8:a00::/56", 3, 4)
	want.MAC = [6]byte{} // unmatched: the MAC of eth1's request is not eth2's client's
	checkBindings(t, h.bindings(), want)
	if n := h.e.Counters.Snoops(relay.SnoopUnmatched); n != 1 {
		t.Errorf("unmatched = %d, want 1", n)
	}
}

// Two clients with the same DUID on two ports whose requests share a
// transaction id: each Reply matches its own port's request and MAC.
func TestSnoopSameDUIDSameXIDTwoPorts(t *testing.T) {
	h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
	a, b := newCPE(30), newCPE(30)
	b.mac[0] = 0x0a // same DUID, another box
	reqA := a.msg(dhcpv6.MessageTypeRequest, 7, iapd(1, 0, 0))
	reqB := b.msg(dhcpv6.MessageTypeRequest, 7, iapd(1, 0, 0))
	fwA, _ := h.up(0, a, reqA)
	fwB, _ := h.up(1, b, reqB)
	h.down(fwB, replyTo(reqB, iapd(1, 1, 2, iaprefix("2001:db8:b00::/56", 3, 4))))
	h.down(fwA, replyTo(reqA, iapd(1, 1, 2, iaprefix("2001:db8:a00::/56", 3, 4))))
	wantB := h.want("eth2", b, 1, "2001:db8:b00::/56", 3, 4)
	checkBindings(t, h.bindings(), h.want("eth1", a, 1, "2001:db8:a00::/56", 3, 4), wantB)
	if n := h.e.Counters.Snoops(relay.SnoopUnmatched); n != 0 {
		t.Errorf("unmatched = %d, want 0", n)
	}
}

// A Reply the snooper cannot decode is still relayed.
func TestSnoopUnparsableReply(t *testing.T) {
	h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
	c := newCPE(21)
	bad := []byte{
		7,       // msg-type REPLY
		1, 2, 3, // transaction-id
		0, 1, // Client ID option code
		0, 10, // option length
		0, 3, 0, 1, 0x02, 0x00, 0x5e, 0x00, 0x53, 21, // client DUID-LL
		0, 25, // IA_PD option code
		0, 41, // option length
		0, 0, 0, 1, // IAID 1
		0, 0, 0, 0, // T1
		0, 0, 0, 0, // T2
		0, 26, // IAPrefix option code
		0, 25, // option length
		0, 0, 0, 1, // preferred-lifetime 1
		0, 0, 0, 2, // valid-lifetime 2
		130,                                                        // prefix-length 130: invalid
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // prefix
	}
	out, upd := h.downRaw(rawRelayReply(linkA, c.ll, nil, bad))
	if !bytes.Equal(out.Payload, bad) || !upd.Empty() {
		t.Errorf("out %+v upd %+v", out, upd)
	}
	if n := h.e.Counters.Snoops(relay.SnoopUnparsable); n != 1 {
		t.Errorf("unparsable = %d, want 1", n)
	}
}

// --- Bindings never stop messages ------------------------------------------

// RFC 8987 section 3.1: a replacement CPE's Solicit is relayed although the
// old CPE's binding holds the port at its limit; the limit only refuses
// the route.
func TestReplacementCPE(t *testing.T) {
	per := map[string]binding.PortLimits{"eth1": {MaxDelegations: 1, MaxPerClient: 8}}
	h := newHarness(t, testConfig(), binding.PortLimits{MaxPerClient: 8}, per)
	a, b := newCPE(30), newCPE(31)
	req := a.msg(dhcpv6.MessageTypeRequest, 1, iapd(1, 0, 0))
	h.exchange(0, a, req, replyTo(req, iapd(1, 100, 160, iaprefix("2001:db8:b00::/56", 200, 300))))
	if h.tbl.PortCount("eth1") != 1 {
		t.Fatal("setup: no binding for A")
	}

	sol := b.msg(dhcpv6.MessageTypeSolicit, 2, iapd(1, 0, 0))
	fw, _, err := h.e.HandleClient(h.now, relay.ClientPacket{Dst: dhcp6.AllRelayAgentsAndServers, Port: 0, SrcMAC: b.mac, Src: b.ll, Payload: sol.ToBytes()})
	if err != nil {
		t.Fatalf("Solicit from a new DUID dropped: %v", err)
	}
	if r, err := dhcp6.ParseRelay(fw); err != nil || !bytes.Equal(r.Inner, sol.ToBytes()) {
		t.Fatalf("Solicit not relayed as is: %v", err)
	}
	fw = bytes.Clone(fw)
	adv := answer(dhcpv6.MessageTypeAdvertise, sol, iapd(1, 100, 160, iaprefix("2001:db8:b01::/56", 200, 300)))
	if out, _ := h.down(fw, adv); out.Port != 0 {
		t.Fatalf("Advertise to port %d", out.Port)
	}
	req = b.msg(dhcpv6.MessageTypeRequest, 3, iapd(1, 0, 0))
	h.exchange(0, b, req, replyTo(req, iapd(1, 100, 160, iaprefix("2001:db8:b01::/56", 200, 300))))
	if len(h.refused) != 1 || !errors.Is(h.refused[0], binding.ErrPortLimit) {
		t.Errorf("refused = %v, want [ErrPortLimit]", h.refused)
	}
	// Once A's binding is gone (released or expired), B's next exchange
	// installs its route.
	rel := a.msg(dhcpv6.MessageTypeRelease, 4, iapd(1, 0, 0))
	h.up(0, a, rel)
	renew := b.msg(dhcpv6.MessageTypeRenew, 5, iapd(1, 0, 0))
	h.exchange(0, b, renew, replyTo(renew, iapd(1, 100, 160, iaprefix("2001:db8:b01::/56", 200, 300))))
	checkBindings(t, h.bindings(), h.want("eth1", b, 1, "2001:db8:b01::/56", 200, 300))
}

// G-4: the same DUID may hold bindings on two ports, unless the second port
// requires unique clients.
func TestSameDUIDTwoPorts(t *testing.T) {
	c := newCPE(40)
	twin := c
	twin.ll = netip.MustParseAddr("fe80::4040")
	run := func(t *testing.T, per map[string]binding.PortLimits) *harness {
		h := newHarness(t, testConfig(), binding.PortLimits{MaxPerClient: 8}, per)
		r1 := c.msg(dhcpv6.MessageTypeRequest, 1, iapd(1, 0, 0))
		h.exchange(0, c, r1, replyTo(r1, iapd(1, 100, 160, iaprefix("2001:db8:c00::/56", 200, 300))))
		r2 := twin.msg(dhcpv6.MessageTypeRequest, 2, iapd(1, 0, 0))
		h.exchange(1, twin, r2, replyTo(r2, iapd(1, 100, 160, iaprefix("2001:db8:c01::/56", 200, 300))))
		return h
	}
	t.Run("allowed by default", func(t *testing.T) {
		h := run(t, nil)
		checkBindings(t, h.bindings(),
			h.want("eth1", c, 1, "2001:db8:c00::/56", 200, 300),
			h.want("eth2", twin, 1, "2001:db8:c01::/56", 200, 300))
	})
	t.Run("unique_client on the second port", func(t *testing.T) {
		h := run(t, map[string]binding.PortLimits{"eth2": {MaxPerClient: 8, UniqueClient: true}})
		if len(h.refused) != 1 || !errors.Is(h.refused[0], binding.ErrDuplicateDUID) {
			t.Errorf("refused = %v, want [ErrDuplicateDUID]", h.refused)
		}
		checkBindings(t, h.bindings(), h.want("eth1", c, 1, "2001:db8:c00::/56", 200, 300))
	})
}

func TestNewEngineConfig(t *testing.T) {
	cfg := testConfig()
	cfg.Servers = nil
	if _, err := relay.NewEngine(cfg); err == nil {
		t.Error("no servers accepted")
	}
	cfg = testConfig()
	cfg.Ports[1].InterfaceID = []byte("eth1")
	if _, err := relay.NewEngine(cfg); err == nil {
		t.Error("two ports with one Interface-ID accepted")
	}
	e, err := relay.NewEngine(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	ports := e.Ports()
	if string(ports[0].InterfaceID) != "eth1" || ports[1].LinkAddr != netip.IPv6Unspecified() || ports[0].LinkAddr != linkA {
		t.Errorf("ports %+v", ports)
	}
}

func TestCountersEach(t *testing.T) {
	h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
	c := newCPE(50)
	h.up(0, c, c.msg(dhcpv6.MessageTypeSolicit, 1))
	h.up(0, c, c.msg(dhcpv6.MessageTypeSolicit, 2))
	_, _, _ = h.e.HandleServer(h.now, relay.ServerPacket{Uplink: true, Src: netip.MustParseAddr("2001:db8::bad"), Payload: []byte{13}})
	msgs := map[string]uint64{}
	h.e.Counters.EachMessage(func(d relay.Direction, typ dhcp6.MessageType, n uint64) { msgs[d.String()+"/"+typ.String()] = n })
	if len(msgs) != 1 || msgs["up/solicit"] != 2 {
		t.Errorf("messages %v", msgs)
	}
	drops := map[string]uint64{}
	h.e.Counters.EachDrop(func(r relay.Drop, n uint64) { drops[r.String()] = n })
	if len(drops) != relay.NumDrops || drops["untrusted_server"] != 1 || drops["send_error"] != 0 {
		t.Errorf("drops %v", drops)
	}
	snoops := map[string]uint64{}
	h.e.Counters.EachSnoop(func(e relay.SnoopEvent, n uint64) { snoops[e.String()] = n })
	if len(snoops) != 3 || snoops["unmatched_reply"] != 0 {
		t.Errorf("snoops %v", snoops)
	}
	h.e.Counters.Drop(relay.DropSendError)
	if h.e.Counters.Drops(relay.DropSendError) != 1 {
		t.Error("Drop did not count")
	}
}

func TestDropErrorText(t *testing.T) {
	h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
	_, _, err := h.e.HandleClient(h.now, relay.ClientPacket{Dst: dhcp6.AllRelayAgentsAndServers, Port: 0, Payload: []byte{1}})
	if err == nil || err.Error() != "dropped (malformed): dhcpv6 message too short" {
		t.Errorf("err = %v", err)
	}
	if !errors.Is(err, dhcp6.ErrShort) {
		t.Errorf("err %v does not wrap ErrShort", err)
	}
	_, _, err = h.e.HandleClient(h.now, relay.ClientPacket{Dst: dhcp6.AllRelayAgentsAndServers, Port: 9, Payload: []byte{1}})
	if err == nil || err.Error() != "dropped (unknown_port)" {
		t.Errorf("err = %v", err)
	}
}

func TestEngineRefusesSharedLinkAddress(t *testing.T) {
	cfg := testConfig()
	cfg.Ports[1].LinkAddr = linkA // eth1's
	if _, err := relay.NewEngine(cfg); err == nil || !strings.Contains(err.Error(), "link-address") {
		t.Fatalf("NewEngine with a shared link-address: %v", err)
	}
}

// TestSnoopSharesServerDUID: the server's DUID is one string for all the
// bindings it delegates, not a copy held by each.
func TestSnoopSharesServerDUID(t *testing.T) {
	h := newHarness(t, testConfig(), binding.PortLimits{}, nil)
	var ids []string
	for i, p := range []string{"2001:db8:100::/56", "2001:db8:200::/56"} {
		c := newCPE(byte(20 + i))
		req := c.msg(dhcpv6.MessageTypeRequest, 1, iapd(1, 0, 0))
		fw, _ := h.up(0, c, req)
		_, upd := h.down(fw, replyTo(req, iapd(1, 1800, 2880, iaprefix(p, 3600, 7200))))
		if len(upd.Learn) != 1 {
			t.Fatalf("Reply %d learned %+v", i, upd.Learn)
		}
		ids = append(ids, upd.Learn[0].ServerDUID)
	}
	if ids[0] != string(serverDUID.ToBytes()) || ids[1] != ids[0] || unsafe.StringData(ids[0]) != unsafe.StringData(ids[1]) {
		t.Errorf("server DUIDs %x and %x: not one shared string", ids[0], ids[1])
	}
}
