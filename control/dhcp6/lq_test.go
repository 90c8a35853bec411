package dhcp6_test

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"
	"testing/iotest"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// A LEASEQUERY by Relay-ID, as a requestor sends it (RFC 5460 5.3.1).
var lqByRelayID = []byte{
	14,               // msg-type LEASEQUERY
	0x12, 0x34, 0x56, // transaction-id
	0, 1, // OPTION_CLIENTID
	0, 10, // option-len
	0, 3, 0, 1, 2, 0, 0x5e, 0, 0x53, 1, // DUID-LL 02:00:5e:00:53:01
	0, 44, // OPTION_LQ_QUERY
	0, 28, // option-len: 1 + 16 + 11
	3,                                              // query-type QUERY_BY_RELAY_ID
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // link-address ::
	0, 53, // OPTION_RELAY_ID
	0, 7, // option-len
	0, 2, 0, 0, 0xab, 0xcd, 1, // DUID-EN 0000abcd, id 01
}

// A LEASEQUERY-REPLY carrying one client's data (RFC 5007 4.1.2.2).
var lqReplyOneClient = []byte{
	15,               // msg-type LEASEQUERY-REPLY
	0x12, 0x34, 0x56, // transaction-id
	0, 2, // OPTION_SERVERID
	0, 10, // option-len
	0, 3, 0, 1, 2, 0, 0, 0, 0, 0xfe, // DUID-LL 02:00:00:00:00:fe
	0, 45, // OPTION_CLIENT_DATA
	0, 112, // option-len: 14 + 29 + 8 + 61
	0, 1, // OPTION_CLIENTID
	0, 10, // option-len
	0, 3, 0, 1, 2, 0, 0, 0, 1, 2, // DUID-LL 02:00:00:00:01:02
	0, 26, // OPTION_IAPREFIX
	0, 25, // option-len
	0, 0, 0x0e, 0x10, // preferred-lifetime 3600
	0, 0, 0x1c, 0x20, // valid-lifetime 7200
	56,                                                         // prefix-length
	0x20, 0x01, 0x0d, 0xb8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // prefix 2001:db8:100::
	0, 46, // OPTION_CLT_TIME
	0, 4, // option-len
	0, 0, 0, 90, // 90 seconds ago
	0, 47, // OPTION_LQ_RELAY_DATA
	0, 57, // option-len: 16 + 41
	0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 0, 1, 2, // peer-address fe80::ff:fe00:102
	12, 0, // Relay-Forward, hop-count 0
	0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, // link-address fd00:0:0:1::1
	0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 0, 1, 2, // peer-address fe80::ff:fe00:102
	0, 18, // OPTION_INTERFACE_ID
	0, 3, // option-len
	'd', 'l', '0', // "dl0"
}

func TestLeasequeryEncode(t *testing.T) {
	xid := [3]byte{0x12, 0x34, 0x56}
	b := dhcp6.AppendHeader(nil, dhcp6.MsgLeasequery, xid)
	b = dhcp6.AppendOption(b, dhcp6.OptClientID, []byte{0, 3, 0, 1, 2, 0, 0x5e, 0, 0x53, 1})
	b = dhcp6.AppendLQQuery(b, dhcp6.QueryByRelayID, netip.IPv6Unspecified(),
		dhcp6.AppendOption(nil, dhcp6.OptRelayID, []byte{0, 2, 0, 0, 0xab, 0xcd, 1}))
	if !bytes.Equal(b, lqByRelayID) {
		t.Errorf("LEASEQUERY\n got %x\nwant %x", b, lqByRelayID)
	}

	peer := netip.MustParseAddr("fe80::ff:fe00:102")
	relay := dhcp6.AppendRelayHeader(nil, dhcp6.MsgRelayForw, 0, netip.MustParseAddr("fd00:0:0:1::1"), peer)
	relay = dhcp6.AppendOption(relay, dhcp6.OptInterfaceID, []byte("dl0"))
	cd := dhcp6.AppendOption(nil, dhcp6.OptClientID, []byte{0, 3, 0, 1, 2, 0, 0, 0, 1, 2})
	cd = dhcp6.AppendIAPrefix(cd, dhcp6.IAPrefix{Preferred: 3600, Valid: 7200, Prefix: netip.MustParsePrefix("2001:db8:100::/56")})
	cd = dhcp6.AppendCLTTime(cd, 90)
	cd = dhcp6.AppendLQRelayData(cd, peer, relay)
	r := dhcp6.AppendHeader(nil, dhcp6.MsgLeasequeryReply, xid)
	r = dhcp6.AppendOption(r, dhcp6.OptServerID, []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 0xfe})
	r = dhcp6.AppendOption(r, dhcp6.OptClientData, cd)
	if !bytes.Equal(r, lqReplyOneClient) {
		t.Errorf("LEASEQUERY-REPLY\n got %x\nwant %x", r, lqReplyOneClient)
	}
}

func TestLeasequeryDecode(t *testing.T) {
	m, err := dhcp6.ParseMessage(lqByRelayID)
	if err != nil {
		t.Fatal(err)
	}
	qd, ok := m.Options.Get(dhcp6.OptLQQuery)
	if !ok {
		t.Fatal("no OPTION_LQ_QUERY")
	}
	q, err := dhcp6.ParseLQQuery(qd)
	if err != nil {
		t.Fatal(err)
	}
	if q.Type != dhcp6.QueryByRelayID || q.Link != netip.IPv6Unspecified() {
		t.Errorf("query %d link %v", q.Type, q.Link)
	}
	if id, ok := q.Options.Get(dhcp6.OptRelayID); !ok || !bytes.Equal(id, []byte{0, 2, 0, 0, 0xab, 0xcd, 1}) {
		t.Errorf("relay id %x %v", id, ok)
	}

	m, err = dhcp6.ParseMessage(lqReplyOneClient)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for data := range m.Options.Each(dhcp6.OptClientData) {
		n++
		cd, err := dhcp6.ParseClientData(data)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(cd.ClientID, []byte{0, 3, 0, 1, 2, 0, 0, 0, 1, 2}) {
			t.Errorf("client id %x", cd.ClientID)
		}
		if len(cd.Prefixes) != 1 || cd.Prefixes[0].Prefix != netip.MustParsePrefix("2001:db8:100::/56") ||
			cd.Prefixes[0].Preferred != 3600 || cd.Prefixes[0].Valid != 7200 || len(cd.IAPDs) != 0 {
			t.Errorf("prefixes %+v iapds %+v", cd.Prefixes, cd.IAPDs)
		}
		if !cd.HasCLTTime || cd.CLTTime != 90 {
			t.Errorf("clt time %d %v", cd.CLTTime, cd.HasCLTTime)
		}
		if cd.RelayData == nil || cd.RelayData.Peer != netip.MustParseAddr("fe80::ff:fe00:102") || len(cd.RelayData.Relay) != 41 {
			t.Fatalf("relay data %+v", cd.RelayData)
		}
		if cd.Status() != dhcp6.StatusSuccess {
			t.Errorf("status %d", cd.Status())
		}
	}
	if n != 1 {
		t.Errorf("%d client data options, want 1", n)
	}
}

func TestParseClientDataErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"truncated option", []byte{0, 1, 0, 9, 1}},
		{"short iaprefix", []byte{0, 26, 0, 3, 0, 0, 0}},
		{"prefix length 129", append([]byte{0, 26, 0, 25, 0, 0, 0, 1, 0, 0, 0, 1, 129}, make([]byte, 16)...)},
		{"short ia_pd", []byte{0, 25, 0, 4, 0, 0, 0, 1}},
		{"clt_time of 3 bytes", []byte{0, 46, 0, 3, 0, 0, 1}},
		{"short relay data", []byte{0, 47, 0, 4, 0xfe, 0x80, 0, 0}},
	} {
		if _, err := dhcp6.ParseClientData(tc.in); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	// A status inside the client data (a RELEASE-REQUEST-REPLY's).
	cd, err := dhcp6.ParseClientData(dhcp6.AppendStatus(nil, dhcp6.StatusNoBinding, "gone"))
	if err != nil || cd.Status() != dhcp6.StatusNoBinding {
		t.Errorf("status %d, %v", cd.Status(), err)
	}
	ia := dhcp6.AppendIAPD(nil, 7, 0, 0, dhcp6.AppendIAPrefix(nil, dhcp6.IAPrefix{Prefix: netip.MustParsePrefix("2001:db8::/48")}))
	cd, err = dhcp6.ParseClientData(ia)
	if err != nil || len(cd.IAPDs) != 1 || cd.IAPDs[0].IAID != 7 {
		t.Errorf("ia_pd wrapper: %+v, %v", cd.IAPDs, err)
	}
}

func TestStatusName(t *testing.T) {
	for code, want := range map[uint16]string{0: "Success", 3: "NoBinding", 9: "NotConfigured", 11: "QueryTerminated", 99: "status-99"} {
		if got := dhcp6.StatusName(code); got != want {
			t.Errorf("StatusName(%d) = %q, want %q", code, got, want)
		}
	}
}

func TestFraming(t *testing.T) {
	var stream []byte
	var err error
	msgs := [][]byte{lqByRelayID, lqReplyOneClient, {16, 1, 2, 3}}
	for _, m := range msgs {
		if stream, err = dhcp6.AppendFramed(stream, m); err != nil {
			t.Fatal(err)
		}
	}
	if stream[0] != 0 || stream[1] != byte(len(lqByRelayID)) {
		t.Fatalf("first frame header %x", stream[:2])
	}
	// One byte at a time: frames must not depend on how reads split.
	fr := dhcp6.NewFrameReader(iotest.OneByteReader(bytes.NewReader(stream)))
	for i, want := range msgs {
		got, err := fr.Next()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("frame %d: %x, %v", i, got, err)
		}
	}
	if _, err := fr.Next(); err != io.EOF {
		t.Errorf("after the last frame: %v, want io.EOF", err)
	}
	// Cut inside a frame: unexpected EOF, whether in the header or the body.
	for _, cut := range []int{1, 5} {
		fr := dhcp6.NewFrameReader(bytes.NewReader(stream[:cut]))
		if _, err := fr.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("cut at %d: %v, want unexpected EOF", cut, err)
		}
	}
	if _, err := dhcp6.NewFrameReader(bytes.NewReader([]byte{0, 0})).Next(); !errors.Is(err, dhcp6.ErrEmptyFrame) {
		t.Errorf("empty frame: %v", err)
	}
	if _, err := dhcp6.AppendFramed(nil, make([]byte, dhcp6.MaxFrame+1)); !errors.Is(err, dhcp6.ErrFrameTooLarge) {
		t.Errorf("oversized frame: %v", err)
	}
	if _, err := dhcp6.AppendFramed(nil, nil); !errors.Is(err, dhcp6.ErrEmptyFrame) {
		t.Errorf("empty message: %v", err)
	}
}

// FuzzClientData checks the client data parser never panics, and that
// what it accepts re-encodes to the same prefixes and CLT time.
func FuzzClientData(f *testing.F) {
	m, _ := dhcp6.ParseMessage(lqReplyOneClient)
	cd, _ := m.Options.Get(dhcp6.OptClientData)
	f.Add(cd)
	f.Add(dhcp6.AppendStatus(nil, dhcp6.StatusNoBinding, "x"))
	f.Add(dhcp6.AppendIAPD(nil, 7, 0, 0, dhcp6.AppendIAPrefix(nil, dhcp6.IAPrefix{Prefix: netip.MustParsePrefix("2001:db8::/48")})))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := dhcp6.ParseClientData(data)
		if err != nil {
			return
		}
		var re []byte
		for _, p := range c.Prefixes {
			re = dhcp6.AppendIAPrefix(re, p)
		}
		back, err := dhcp6.ParseClientData(re)
		if err != nil || len(back.Prefixes) != len(c.Prefixes) {
			t.Fatalf("re-encoded prefixes do not parse: %v", err)
		}
		for i := range c.Prefixes {
			if back.Prefixes[i].Prefix != c.Prefixes[i].Prefix || back.Prefixes[i].Valid != c.Prefixes[i].Valid {
				t.Fatalf("prefix %d: %+v became %+v", i, c.Prefixes[i], back.Prefixes[i])
			}
		}
		if c.RelayData != nil && !c.RelayData.Peer.Is6() {
			t.Fatalf("peer %v", c.RelayData.Peer)
		}
		if q, err := dhcp6.ParseLQQuery(data); err == nil && len(q.Options) > len(data) {
			t.Fatal("query options longer than the input")
		}
	})
}

// FuzzFrameReader checks the reader returns frames that add up to the
// stream and never a frame longer than its header says.
func FuzzFrameReader(f *testing.F) {
	var stream []byte
	stream, _ = dhcp6.AppendFramed(stream, lqByRelayID)
	stream, _ = dhcp6.AppendFramed(stream, lqReplyOneClient)
	f.Add(stream)
	f.Add([]byte{0, 0})
	f.Add([]byte{0xff, 0xff, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := dhcp6.NewFrameReader(bytes.NewReader(data))
		used := 0
		for {
			m, err := fr.Next()
			if err != nil {
				if err == io.EOF && used != len(data) {
					t.Fatalf("clean EOF after %d of %d bytes", used, len(data))
				}
				return
			}
			if len(m) == 0 {
				t.Fatal("empty frame returned")
			}
			if !bytes.Equal(m, data[used+2:used+2+len(m)]) {
				t.Fatal("frame is not the stream's bytes")
			}
			used += 2 + len(m)
		}
	})
}

func TestOptionsStatus(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    []byte
		code    uint16
		msg     string
		present bool
	}{
		{"absent", dhcp6.AppendOption(nil, dhcp6.OptClientID, []byte{1}), dhcp6.StatusSuccess, "", false},
		{"NoBinding", dhcp6.AppendStatus(nil, dhcp6.StatusNoBinding, "gone"), dhcp6.StatusNoBinding, "gone", true},
		{"malformed reads as a failure", []byte{0, 13, 0, 1, 0}, dhcp6.StatusUnspecFail, "malformed status code option", true},
	} {
		code, msg, present := dhcp6.Options(tc.opts).Status()
		if code != tc.code || msg != tc.msg || present != tc.present {
			t.Errorf("%s: %d %q %v, want %d %q %v", tc.name, code, msg, present, tc.code, tc.msg, tc.present)
		}
	}
}
