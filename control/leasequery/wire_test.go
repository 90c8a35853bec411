package leasequery

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

func TestAppendLeasequeryBytes(t *testing.T) {
	xid := [3]byte{0x12, 0x34, 0x56}
	duid := []byte{0, 3, 0, 1, 2, 0, 0x5e, 0, 0x53, 0xaa}
	tests := []struct {
		name string
		q    Query
		want []byte
	}{
		{"relay-id", RelayIDQuery(duid), []byte{
			14, 0x12, 0x34, 0x56, // LEASEQUERY, xid
			0, 1, 0, 10, 0, 3, 0, 1, 2, 0, 0x5e, 0, 0x53, 0xaa, // OPTION_CLIENTID: the relay's DUID-LL
			0, 44, 0, 31, // OPTION_LQ_QUERY, 17 + 14
			3,                                              // QUERY_BY_RELAY_ID
			0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // link-address ::
			0, 53, 0, 10, 0, 3, 0, 1, 2, 0, 0x5e, 0, 0x53, 0xaa, // OPTION_RELAY_ID
		}},
		{"link-address", LinkAddressQuery("dl1", netip.MustParseAddr("2001:db8:ff:1::1")), []byte{
			14, 0x12, 0x34, 0x56, // LEASEQUERY, xid
			0, 1, 0, 10, 0, 3, 0, 1, 2, 0, 0x5e, 0, 0x53, 0xaa, // OPTION_CLIENTID
			0, 44, 0, 17, // OPTION_LQ_QUERY, no query-options
			4,                                                             // QUERY_BY_LINK_ADDRESS
			0x20, 0x01, 0x0d, 0xb8, 0, 0xff, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, // 2001:db8:ff:1::1
		}},
		{"remote-id", RemoteIDQuery([]byte{0, 0, 0, 9, 0xab}), []byte{
			14, 0x12, 0x34, 0x56, // LEASEQUERY, xid
			0, 1, 0, 10, 0, 3, 0, 1, 2, 0, 0x5e, 0, 0x53, 0xaa, // OPTION_CLIENTID
			0, 44, 0, 26, // OPTION_LQ_QUERY, 17 + 9
			5,                                              // QUERY_BY_REMOTE_ID
			0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // link-address ::
			0, 37, 0, 5, 0, 0, 0, 9, 0xab, // OPTION_REMOTE_ID: enterprise 9, id ab
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendLeasequery(nil, xid, duid, tt.q)
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("got  %x\nwant %x", got, tt.want)
			}
			framed, err := dhcp6.AppendFramed(nil, got)
			if err != nil || be16(framed) != uint16(len(tt.want)) || !bytes.Equal(framed[2:], tt.want) {
				t.Fatalf("framed %x, %v", framed, err)
			}
		})
	}
}

func TestParseRelayLayersBytes(t *testing.T) {
	// pdrelay's own Relay-Forward, as lqserver rebuilds it from Kea's
	// relay info: no relay-message option.
	own := []byte{
		12, 0, // RELAY-FORW, hop-count 0
		0x20, 0x01, 0x0d, 0xb8, 0, 0xff, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, // link-address 2001:db8:ff:1::1
		0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42, // peer-address fe80::42
		0, 18, 0, 3, 'd', 'l', '1', // Interface-ID "dl1"
		0, 53, 0, 10, 0, 3, 0, 1, 2, 0, 0x5e, 0, 0x53, 0xaa, // Relay-ID
		0, 79, 0, 8, 0, 1, 2, 0, 0, 0, 0, 0x42, // client link-layer address, Ethernet 02:00:00:00:00:42
	}
	layers, err := dhcp6.ParseRelayLayers(own, nil)
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %v, err %v", layers, err)
	}
	l := layers[0]
	if l.LinkAddr != netip.MustParseAddr("2001:db8:ff:1::1") || l.PeerAddr != netip.MustParseAddr("fe80::42") {
		t.Errorf("addresses %v %v", l.LinkAddr, l.PeerAddr)
	}
	if id, _ := l.InterfaceID(); string(id) != "dl1" {
		t.Errorf("interface-id %q", id)
	}
	if mac, ok := l.ClientLinkLayer(); !ok || mac != [6]byte{2, 0, 0, 0, 0, 0x42} {
		t.Errorf("mac %x %v", mac, ok)
	}

	// Wrapped by a relay nearer the server, and keeping the client's
	// Solicit inside (a server that stores the whole message).
	inner := append(append([]byte(nil), own...), 0, 9, 0, 4, 1, 0xaa, 0xbb, 0xcc) // relay-message: Solicit header
	outer := append([]byte{
		12, 1, // RELAY-FORW, hop-count 1
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // link-address 2001:db8::1
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // peer-address 2001:db8::2
		0, 9, 0, byte(len(inner)), // relay-message
	}, inner...)
	layers, err = dhcp6.ParseRelayLayers(outer, nil)
	if err != nil || len(layers) != 2 || layers[0].HopCount != 1 || layers[1].PeerAddr != netip.MustParseAddr("fe80::42") {
		t.Fatalf("two layers: %+v, %v", layers, err)
	}

	for _, bad := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, dhcp6.ErrShort},
		{"relay-reply", append([]byte{13}, own[1:]...), dhcp6.ErrNotRelay},
		{"short header", own[:33], dhcp6.ErrShort},
		{"option past end", append(own[:34:34], 0, 18, 0, 9, 'x'), dhcp6.ErrBadOption},
	} {
		if _, err := dhcp6.ParseRelayLayers(bad.b, nil); !errors.Is(err, bad.want) {
			t.Errorf("%s: err %v, want %v", bad.name, err, bad.want)
		}
	}
	// Nesting deeper than the hop-count limit.
	deep := own
	for range dhcp6.HopCountLimit + 1 {
		hdr := append([]byte{12, 0}, make([]byte, 32)...)
		deep = append(append(hdr, 0, 9, byte(len(deep)>>8), byte(len(deep))), deep...)
	}
	if _, err := dhcp6.ParseRelayLayers(deep, nil); !errors.Is(err, dhcp6.ErrRelayDepth) {
		t.Errorf("deep: %v", err)
	}
}

func TestStream(t *testing.T) {
	x1, x2, x9 := [3]byte{0, 0, 1}, [3]byte{0, 0, 2}, [3]byte{0, 0, 9}
	sid := opt(dhcp6.OptServerID, testServerID)
	cd := simpleClient(1, 0, 0)
	type step struct {
		msg     []byte
		kind    EventKind
		query   int
		status  uint16
		wantErr error
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"interleaved", []step{
			{msg: msg(dhcp6.MsgLeasequeryReply, x2, sid, cd), kind: EvReply, query: 1},
			{msg: msg(dhcp6.MsgLeasequeryReply, x1, sid, cd), kind: EvReply, query: 0},
			{msg: msg(dhcp6.MsgLeasequeryData, x2, cd), kind: EvData, query: 1},
			{msg: msg(dhcp6.MsgLeasequeryData, x1, cd), kind: EvData, query: 0},
			{msg: msg(dhcp6.MsgLeasequeryDone, x1), kind: EvEnd, query: 0},
			{msg: msg(dhcp6.MsgLeasequeryData, x2, cd), kind: EvData, query: 1},
			{msg: msg(dhcp6.MsgLeasequeryDone, x2, statusOpt(dhcp6.StatusQueryTerminated, "bye")), kind: EvEnd, query: 1, status: dhcp6.StatusQueryTerminated},
		}},
		{"empty reply ends", []step{
			{msg: msg(dhcp6.MsgLeasequeryReply, x1, sid), kind: EvEnd},
			{msg: msg(dhcp6.MsgLeasequeryDone, x1), wantErr: ErrUnknownXID}, // no DONE may follow
		}},
		{"error reply ends", []step{
			{msg: msg(dhcp6.MsgLeasequeryReply, x1, statusOpt(dhcp6.StatusNotAllowed, "no")), kind: EvEnd, status: dhcp6.StatusNotAllowed},
		}},
		{"data without client data discarded", []step{
			{msg: msg(dhcp6.MsgLeasequeryReply, x1, sid, cd), kind: EvReply},
			{msg: msg(dhcp6.MsgLeasequeryData, x1, opt(0xfe01, nil)), kind: EvDiscarded},
			{msg: msg(dhcp6.MsgLeasequeryDone, x1), kind: EvEnd},
		}},
		{"done for unknown xid", []step{
			{msg: msg(dhcp6.MsgLeasequeryDone, x9), wantErr: ErrUnknownXID},
		}},
		{"done before reply", []step{
			{msg: msg(dhcp6.MsgLeasequeryDone, x1), wantErr: ErrUnknownXID},
		}},
		{"reply for unknown xid", []step{
			{msg: msg(dhcp6.MsgLeasequeryReply, x9, sid), wantErr: ErrUnknownXID},
		}},
		{"data for unknown xid", []step{
			{msg: msg(dhcp6.MsgLeasequeryData, x9, cd), wantErr: ErrUnknownXID},
		}},
		{"data before reply", []step{
			{msg: msg(dhcp6.MsgLeasequeryData, x1, cd), wantErr: ErrDataFirst},
		}},
		{"second reply", []step{
			{msg: msg(dhcp6.MsgLeasequeryReply, x1, sid, cd), kind: EvReply},
			{msg: msg(dhcp6.MsgLeasequeryReply, x1, sid, cd), wantErr: ErrDupReply},
		}},
		{"reply without server id", []step{
			{msg: msg(dhcp6.MsgLeasequeryReply, x1, cd), wantErr: ErrNoServerID},
		}},
		{"reply with client link", []step{
			{msg: msg(dhcp6.MsgLeasequeryReply, x1, sid, opt(dhcp6.OptLQClientLink, make([]byte, 16))), wantErr: ErrClientLink},
		}},
		{"other message type", []step{
			{msg: msg(dhcp6.MsgReply, x1, sid), wantErr: ErrUnexpected},
		}},
		{"malformed", []step{
			{msg: []byte{15, 0, 0, 1, 0, 2, 0, 9}, wantErr: dhcp6.ErrBadOption},
		}},
		{"malformed status reads as failure", []step{
			{msg: msg(dhcp6.MsgLeasequeryReply, x1, sid, cd), kind: EvReply},
			{msg: msg(dhcp6.MsgLeasequeryDone, x1, opt(dhcp6.OptStatusCode, []byte{0})), kind: EvEnd, status: dhcp6.StatusUnspecFail},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStream()
			if err := s.Add(x1, 0); err != nil {
				t.Fatal(err)
			}
			if err := s.Add(x2, 1); err != nil {
				t.Fatal(err)
			}
			if err := s.Add(x1, 5); err == nil {
				t.Fatal("duplicate xid accepted")
			}
			for i, st := range tt.steps {
				ev, err := s.Handle(st.msg)
				if st.wantErr != nil {
					if !errors.Is(err, st.wantErr) {
						t.Fatalf("step %d: err %v, want %v", i, err, st.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if ev.Kind != st.kind || ev.Query != st.query || ev.Status != st.status {
					t.Fatalf("step %d: event %+v, want kind %d query %d status %d", i, ev, st.kind, st.query, st.status)
				}
			}
		})
	}
}

func TestConvert(t *testing.T) {
	c := Converter{Ports: testPorts, RelayID: testRelayID}
	duid := duidN(7)
	mac := []byte{2, 0, 0, 0, 0, 7}
	relayID := RelayIDQuery(testRelayID)
	linkQ := LinkAddressQuery("dl2", netip.MustParseAddr("2001:db8:ff:2::1"))
	type want struct {
		port   string
		hop    string
		prefix string
		iaid   uint32
		known  bool
		pref   time.Duration
		valid  time.Duration
		mac    bool
	}
	tests := []struct {
		name    string
		data    []byte
		q       *Query
		want    []want
		expired int
		drop    string
	}{
		{"bare prefix, clt, interface-id, mac", clientData(duid,
			iaprefix("2001:db8:7::/56", 1800, 3600),
			dhcp6.AppendCLTTime(nil, 600),
			relayData("::", relayForw("::", "fe80::7", "dl1", mac))),
			&relayID, []want{{"dl1", "fe80::7", "2001:db8:7::/56", 0, false, 1200 * time.Second, 3000 * time.Second, true}}, 0, ""},
		{"ia_pd keeps iaid; infinite stays; preferred past", clientData(duid,
			dhcp6.AppendIAPD(nil, 42, 0, 0, append(iaprefix("2001:db8:8::/56", 100, 0xffffffff), iaprefix("2001:db8:9::/60", 100, 400)...)),
			dhcp6.AppendCLTTime(nil, 300),
			relayData("::", relayForw("2001:db8:ff:0::1", "fe80::8", "", nil))),
			&relayID, []want{
				{"dl0", "fe80::8", "2001:db8:8::/56", 42, true, 0, 0xffffffff * time.Second, false},
				{"dl0", "fe80::8", "2001:db8:9::/60", 42, true, 0, 100 * time.Second, false},
			}, 0, ""},
		{"expired skipped", clientData(duid,
			iaprefix("2001:db8:7::/56", 1800, 3600), iaprefix("2001:db8:6::/56", 100, 200),
			dhcp6.AppendCLTTime(nil, 200),
			relayData("::", relayForw("::", "fe80::7", "dl1", nil))),
			&relayID, []want{{"dl1", "fe80::7", "2001:db8:7::/56", 0, false, 1600 * time.Second, 3400 * time.Second, false}}, 1, ""},
		{"ia_pd with status skipped", clientData(duid,
			dhcp6.AppendIAPD(nil, 1, 0, 0, statusOpt(dhcp6.StatusNoBinding, "")),
			iaprefix("2001:db8:7::/56", 1800, 3600),
			relayData("::", relayForw("::", "fe80::7", "dl1", nil))),
			&relayID, []want{{"dl1", "fe80::7", "2001:db8:7::/56", 0, false, 1800 * time.Second, 3600 * time.Second, false}}, 0, ""},
		{"no relay data: link query's port and option peer", clientData(duid,
			iaprefix("2001:db8:7::/56", 1800, 3600),
			relayData("fe80::99", nil)),
			&linkQ, []want{{"dl2", "fe80::99", "2001:db8:7::/56", 0, false, 1800 * time.Second, 3600 * time.Second, false}}, 0, ""},
		{"relay peer wins over option peer", clientData(duid,
			iaprefix("2001:db8:7::/56", 1800, 3600),
			relayData("2001:db8::feed", relayForw("::", "fe80::7", "dl1", nil))),
			&relayID, []want{{"dl1", "fe80::7", "2001:db8:7::/56", 0, false, 1800 * time.Second, 3600 * time.Second, false}}, 0, ""},
		{"unknown interface-id, no link", clientData(duid,
			iaprefix("2001:db8:7::/56", 1800, 3600),
			relayData("::", relayForw("::", "fe80::7", "other", nil))),
			&relayID, nil, 0, DropNoPort},
		{"no relay data, relay-id query", clientData(duid, iaprefix("2001:db8:7::/56", 1800, 3600)),
			&relayID, nil, 0, DropNoPort},
		{"no next hop", clientData(duid,
			iaprefix("2001:db8:7::/56", 1800, 3600),
			relayData("::", relayForw("::", "::", "dl1", nil))),
			&relayID, nil, 0, DropNoNextHop},
		{"no client id", opt(dhcp6.OptClientData, iaprefix("2001:db8:7::/56", 1800, 3600)), &relayID, nil, 0, DropNoClient},
		{"bad iaprefix", clientData(duid, opt(dhcp6.OptIAPrefix, []byte{1, 2, 3})), &relayID, nil, 0, DropMalformed},
		{"bad relay message", clientData(duid, iaprefix("2001:db8:7::/56", 1800, 3600), relayData("::", []byte{12, 0})), &relayID, nil, 0, DropMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, _ := dhcp6.Options(tt.data).Get(dhcp6.OptClientData)
			got, expired, err := c.Convert(data, "server", tt.q, nil)
			if tt.drop != "" {
				var de *DropError
				if !errors.As(err, &de) || de.Reason != tt.drop || len(got) != 0 {
					t.Fatalf("got %v, %v; want drop %s", got, err, tt.drop)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if expired != tt.expired || len(got) != len(tt.want) {
				t.Fatalf("got %d candidates, %d expired: %+v", len(got), expired, got)
			}
			for i, w := range tt.want {
				g := got[i]
				if g.Port != w.port || g.NextHop != netip.MustParseAddr(w.hop) || g.Prefix != netip.MustParsePrefix(w.prefix) ||
					g.IAID != w.iaid || g.IAIDKnown != w.known || g.Preferred != w.pref || g.Valid != w.valid ||
					g.MACKnown != w.mac || g.DUID != string(duid) || g.ServerDUID != "server" || g.Source.String() != "leasequery" {
					t.Errorf("candidate %d: %+v, want %+v", i, g, w)
				}
				if w.mac && g.MAC != [6]byte(mac) {
					t.Errorf("mac %x", g.MAC)
				}
			}
		})
	}
}

func TestOwnLayerChosenByRelayID(t *testing.T) {
	// A relay between pdrelay and the server wraps pdrelay's layer: the
	// port comes from the layer with pdrelay's Relay-ID, not the outer one.
	own := relayForw("::", "fe80::7", "dl2", nil)
	outer := dhcp6.AppendRelayHeader(nil, dhcp6.MsgRelayForw, 1, netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"))
	outer = dhcp6.AppendOption(outer, dhcp6.OptInterfaceID, []byte("dl0"))
	outer = dhcp6.AppendOption(outer, dhcp6.OptRelayMsg, own)
	data, _ := dhcp6.Options(clientData(duidN(1), iaprefix("2001:db8:7::/56", 1800, 3600), relayData("::", outer))).Get(dhcp6.OptClientData)
	c := Converter{Ports: testPorts, RelayID: testRelayID}
	q := RelayIDQuery(testRelayID)
	got, _, err := c.Convert(data, "s", &q, nil)
	if err != nil || len(got) != 1 || got[0].Port != "dl2" || got[0].NextHop != netip.MustParseAddr("fe80::7") {
		t.Fatalf("got %+v, %v", got, err)
	}
}

func TestBackoff(t *testing.T) {
	base, max := time.Second, 60*time.Second
	var got []time.Duration
	for n := range 9 {
		got = append(got, backoff(n, base, max, 0.5))
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("backoff %v, want %v s", got, want)
		}
	}
	if lo, hi := backoff(3, base, max, 0), backoff(3, base, max, 0.999); lo != 6400*time.Millisecond || hi < 9590*time.Millisecond || hi > 9600*time.Millisecond {
		t.Errorf("jitter range %v..%v, want 6.4s..9.6s", lo, hi)
	}
	if d := backoff(10, base, max, 0.999); d != max {
		t.Errorf("jitter past the cap: %v", d)
	}
}

func TestRetryable(t *testing.T) {
	rel, link := RelayIDQuery(testRelayID), LinkAddressQuery("dl0", netip.MustParseAddr("2001:db8::1"))
	for _, tt := range []struct {
		code uint16
		q    *Query
		want bool
	}{
		{dhcp6.StatusQueryTerminated, &rel, true},
		{dhcp6.StatusUnspecFail, &rel, true},
		{dhcp6.StatusNotConfigured, &rel, true},
		{dhcp6.StatusNotConfigured, &link, false},
		{dhcp6.StatusNotAllowed, &rel, false},
		{dhcp6.StatusUnknownQueryType, &rel, false},
		{dhcp6.StatusMalformedQuery, &rel, false},
		{99, &rel, false},
	} {
		if got := retryable(tt.code, tt.q); got != tt.want {
			t.Errorf("retryable(%s, %s) = %v", dhcp6.StatusName(tt.code), tt.q, got)
		}
	}
}
