package release

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/dhcp6"
)

var (
	serverDUID = "\x00\x03\x00\x01\x02\x00\x00\x00\x00\xfe" // DUID-LL 02:00:00:00:00:fe
	relayDUID  = []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 0xee}    // DUID-LL 02:00:00:00:00:ee
	clientA    = "\x00\x03\x00\x01\x02\x00\x00\x00\x00\x0a" // DUID-LL 02:00:00:00:00:0a
	clientB    = "\x00\x03\x00\x01\x02\x00\x00\x00\x00\x0b" // DUID-LL 02:00:00:00:00:0b
)

func bnd(port, duid string, iaid uint32, prefix string) binding.Binding {
	return binding.Binding{
		Key:        binding.Key{Port: port, DUID: duid, IAID: iaid, Prefix: netip.MustParsePrefix(prefix)},
		NextHop:    netip.MustParseAddr("fe80::a"),
		MAC:        [6]byte{2, 0, 0, 0, 0, 0x0a},
		ServerDUID: serverDUID,
	}
}

func fixedXIDs(xs ...[3]byte) func() [3]byte {
	i := 0
	return func() [3]byte { x := xs[i%len(xs)]; i++; return x }
}

func ifidName(port string) []byte { return []byte(port) }

// TestBuildRequest: two clients on one port, one server, in one
// RELEASE-REQUEST (draft section 4.1.1).
func TestBuildRequest(t *testing.T) {
	bs := []binding.Binding{
		bnd("eth1", clientB, 1, "2001:db8:2::/56"),
		bnd("eth1", clientA, 1, "2001:db8:1::/56"),
		bnd("eth1", clientA, 2, "2001:db8:1:100::/60"),
	}
	msgs, bad := buildRequests(bs, 250, relayDUID, ifidName, DefaultMaxMessage, fixedXIDs([3]byte{0xa1, 0xb2, 0xc3}))
	if len(msgs) != 1 || len(bad) != 0 {
		t.Fatalf("%d messages, %d unsendable; want 1, 0", len(msgs), len(bad))
	}
	want := []byte{
		250,              // msg-type RELEASE-REQUEST (experimental, configured)
		0xa1, 0xb2, 0xc3, // transaction-id
		0, 2, 0, 10, // OPTION_SERVERID, length 10
		0, 3, 0, 1, 2, 0, 0, 0, 0, 0xfe, // the server's DUID-LL, as stored
		0, 53, 0, 10, // OPTION_RELAY_ID, length 10
		0, 3, 0, 1, 2, 0, 0, 0, 0, 0xee, // the relay's DUID
		0, 18, 0, 4, // OPTION_INTERFACE_ID, length 4
		'e', 't', 'h', '1', // the port's Interface-ID
		0, 45, 0, 72, // OPTION_CLIENT_DATA, length 14 + 2*29
		0, 1, 0, 10, // OPTION_CLIENTID, length 10
		0, 3, 0, 1, 2, 0, 0, 0, 0, 0x0a, // client A
		0, 26, 0, 25, // OPTION_IAPREFIX, length 25
		0, 0, 0, 0, // preferred-lifetime 0
		0, 0, 0, 0, // valid-lifetime 0
		56,                                                         // prefix-length
		0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // 2001:db8:1::
		0, 26, 0, 25, // OPTION_IAPREFIX, length 25
		0, 0, 0, 0, // preferred-lifetime 0
		0, 0, 0, 0, // valid-lifetime 0
		60,                                                         // prefix-length
		0x20, 0x01, 0x0d, 0xb8, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, // 2001:db8:1:100::
		0, 45, 0, 43, // OPTION_CLIENT_DATA, length 14 + 29
		0, 1, 0, 10, // OPTION_CLIENTID, length 10
		0, 3, 0, 1, 2, 0, 0, 0, 0, 0x0b, // client B
		0, 26, 0, 25, // OPTION_IAPREFIX, length 25
		0, 0, 0, 0, // preferred-lifetime 0
		0, 0, 0, 0, // valid-lifetime 0
		56,                                                         // prefix-length
		0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // 2001:db8:2::
	}
	if got := msgs[0].build(0); !bytes.Equal(got, want) {
		t.Errorf("RELEASE-REQUEST\n got %x\nwant %x", got, want)
	}
	if len(msgs[0].bindings) != 3 {
		t.Errorf("message carries %d bindings, want 3", len(msgs[0].bindings))
	}
}

// TestBuildRequestGroupsAndSplits: one message per server and port; a
// message over the size bound is split, each part within it, every
// binding in exactly one, each client data with the client id; a binding
// with no server DUID is not sent.
func TestBuildRequestGroupsAndSplits(t *testing.T) {
	var bs []binding.Binding
	for i := range 40 {
		p := netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(i)}), 56)
		b := bnd("eth1", clientA, 1, p.String())
		if i%2 == 1 {
			b.DUID = clientB
		}
		bs = append(bs, b)
	}
	other := bnd("eth2", clientA, 1, "2001:db8:ff::/56")
	otherServer := bnd("eth1", clientA, 1, "2001:db8:fe::/56")
	otherServer.ServerDUID = "\x00\x02other"
	noServer := bnd("eth1", clientA, 1, "2001:db8:fd::/56")
	noServer.ServerDUID = ""
	bs = append(bs, other, otherServer, noServer)
	const max = 300
	n := 0
	msgs, bad := buildRequests(bs, 250, relayDUID, ifidName, max, func() [3]byte { n++; return [3]byte{0, 0, byte(n)} })
	if len(bad) != 1 || bad[0].Binding.Key != noServer.Key || !errors.Is(bad[0].Err, ErrNoServerID) {
		t.Errorf("unsendable %+v, want the binding without server DUID", bad)
	}
	seen := map[binding.Key]int{}
	for _, m := range msgs {
		b := m.build(0)
		if len(b) > max {
			t.Errorf("message of %d bytes, bound %d", len(b), max)
		}
		msg, err := dhcp6.ParseMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		sid, _ := msg.Options.Get(dhcp6.OptServerID)
		ifid, _ := msg.Options.Get(dhcp6.OptInterfaceID)
		for _, mb := range m.bindings {
			if mb.ServerDUID != string(sid) || mb.Port != string(ifid) {
				t.Errorf("binding %v in a message for server %x port %s", mb.Key, sid, ifid)
			}
		}
		carried := map[binding.Key]bool{}
		for data := range msg.Options.Each(dhcp6.OptClientData) {
			cd, err := dhcp6.ParseClientData(data)
			if err != nil || cd.ClientID == nil || len(cd.Prefixes) == 0 {
				t.Fatalf("client data %x: %v", data, err)
			}
			for _, p := range cd.Prefixes {
				if p.Valid != 0 || p.Preferred != 0 {
					t.Errorf("prefix %s with lifetimes %d/%d", p.Prefix, p.Preferred, p.Valid)
				}
				for _, mb := range m.bindings {
					if mb.Prefix == p.Prefix && mb.DUID == string(cd.ClientID) {
						carried[mb.Key] = true
					}
				}
			}
		}
		for _, mb := range m.bindings {
			if !carried[mb.Key] {
				t.Errorf("binding %v listed but not in the bytes", mb.Key)
			}
			seen[mb.Key]++
		}
	}
	if len(msgs) < 4 {
		t.Errorf("%d messages: 40 prefixes in %d bytes should need several, plus one per other port and server", len(msgs), max)
	}
	for _, b := range bs[:len(bs)-1] {
		if seen[b.Key] != 1 {
			t.Errorf("binding %v sent %d times", b.Key, seen[b.Key])
		}
	}
}

// TestBuildClientRelease: a Release on client A's behalf (RFC 8415
// 18.2.7) for two IAs, one with two prefixes.
func TestBuildClientRelease(t *testing.T) {
	bs := []binding.Binding{
		bnd("eth1", clientA, 7, "2001:db8:1::/56"),
		bnd("eth1", clientA, 1, "2001:db8:2::/60"),
		bnd("eth1", clientA, 1, "2001:db8:3::/60"),
		bnd("eth2", clientA, 1, "2001:db8:4::/56"), // same client, other port: another Release
	}
	msgs, bad := buildClientReleases(bs, fixedXIDs([3]byte{1, 2, 3}, [3]byte{4, 5, 6}))
	if len(msgs) != 2 || len(bad) != 0 {
		t.Fatalf("%d Releases, %d unsendable; want 2, 0", len(msgs), len(bad))
	}
	if msgs[0].port != "eth1" || msgs[0].duid != clientA || len(msgs[0].bindings) != 3 || msgs[1].port != "eth2" {
		t.Errorf("grouping: %+v", msgs)
	}
	want := []byte{
		8,       // msg-type RELEASE
		1, 2, 3, // transaction-id
		0, 1, 0, 10, // OPTION_CLIENTID, length 10
		0, 3, 0, 1, 2, 0, 0, 0, 0, 0x0a, // client A's DUID
		0, 2, 0, 10, // OPTION_SERVERID, length 10
		0, 3, 0, 1, 2, 0, 0, 0, 0, 0xfe, // the stored server DUID
		0, 8, 0, 2, // OPTION_ELAPSED_TIME, length 2
		0, 150, // 1.5 s, in hundredths
		0, 25, 0, 70, // OPTION_IA_PD, length 12 + 2*29
		0, 0, 0, 1, // IAID 1
		0, 0, 0, 0, // T1 0
		0, 0, 0, 0, // T2 0
		0, 26, 0, 25, // OPTION_IAPREFIX, length 25
		0, 0, 0, 0, // preferred-lifetime 0
		0, 0, 0, 0, // valid-lifetime 0
		60,                                                         // prefix-length
		0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // 2001:db8:2::
		0, 26, 0, 25, // OPTION_IAPREFIX, length 25
		0, 0, 0, 0, // preferred-lifetime 0
		0, 0, 0, 0, // valid-lifetime 0
		60,                                                         // prefix-length
		0x20, 0x01, 0x0d, 0xb8, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // 2001:db8:3::
		0, 25, 0, 41, // OPTION_IA_PD, length 12 + 29
		0, 0, 0, 7, // IAID 7
		0, 0, 0, 0, // T1 0
		0, 0, 0, 0, // T2 0
		0, 26, 0, 25, // OPTION_IAPREFIX, length 25
		0, 0, 0, 0, // preferred-lifetime 0
		0, 0, 0, 0, // valid-lifetime 0
		56,                                                         // prefix-length
		0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // 2001:db8:1::
	}
	if got := msgs[0].build(150); !bytes.Equal(got, want) {
		t.Errorf("Release\n got %x\nwant %x", got, want)
	}
}

// replyBytes builds a RELEASE-REQUEST-REPLY or Reply from raw options.
func replyBytes(typ byte, xid [3]byte, opts ...[]byte) []byte {
	b := []byte{typ, xid[0], xid[1], xid[2]}
	for _, o := range opts {
		b = append(b, o...)
	}
	return b
}

func status(code uint16) []byte { return dhcp6.AppendStatus(nil, code, "") }

func clientData(duid string, opts ...[]byte) []byte {
	var d []byte
	d = dhcp6.AppendOption(d, dhcp6.OptClientID, []byte(duid))
	for _, o := range opts {
		d = append(d, o...)
	}
	return dhcp6.AppendOption(nil, dhcp6.OptClientData, d)
}

func iaprefix(p string, opts ...[]byte) []byte {
	var o []byte
	for _, x := range opts {
		o = append(o, x...)
	}
	return dhcp6.AppendIAPrefix(nil, dhcp6.IAPrefix{Prefix: netip.MustParsePrefix(p), Options: o})
}

func iapd(iaid uint32, opts ...[]byte) []byte {
	var o []byte
	for _, x := range opts {
		o = append(o, x...)
	}
	return dhcp6.AppendIAPD(nil, iaid, 0, 0, o)
}

// TestParseRequestReply: the draft's section 3.2.2 checks, over byte
// literals.
func TestParseRequestReply(t *testing.T) {
	xid := [3]byte{0xa1, 0xb2, 0xc3}
	for _, tc := range []struct {
		name string
		b    []byte
		err  error
	}{
		{"valid, success", []byte{
			251,              // msg-type RELEASE-REQUEST-REPLY
			0xa1, 0xb2, 0xc3, // transaction-id
			0, 13, 0, 2, // OPTION_STATUS_CODE, length 2
			0, 0, // Success
		}, nil},
		{"valid, client failed", []byte{
			251,              // msg-type RELEASE-REQUEST-REPLY
			0xa1, 0xb2, 0xc3, // transaction-id
			0, 13, 0, 2, // OPTION_STATUS_CODE, length 2
			0, 0, // Success
			0, 45, 0, 20, // OPTION_CLIENT_DATA, length 20
			0, 1, 0, 10, // OPTION_CLIENTID, length 10
			0, 3, 0, 1, 2, 0, 0, 0, 0, 0x0a, // client A
			0, 13, 0, 2, // OPTION_STATUS_CODE, length 2
			0, 1, // UnspecFail
		}, nil},
		{"wrong type", []byte{
			7,                // msg-type REPLY
			0xa1, 0xb2, 0xc3, // transaction-id
			0, 13, 0, 2, 0, 0, // Success
		}, ErrReplyType},
		{"no status", []byte{
			251,              // msg-type RELEASE-REQUEST-REPLY
			0xa1, 0xb2, 0xc3, // transaction-id
			0, 2, 0, 2, 0, 1, // OPTION_SERVERID only
		}, ErrReplyNoStatus},
		{"status in client data only", []byte{
			251, 0xa1, 0xb2, 0xc3,
			0, 45, 0, 6, // OPTION_CLIENT_DATA, length 6
			0, 13, 0, 2, 0, 0, // its status: not the message's
		}, ErrReplyNoStatus},
		{"option overruns", []byte{
			251, 0xa1, 0xb2, 0xc3,
			0, 13, 0, 9, 0, 0, // length 9, 2 bytes present
		}, ErrReplyMalformed},
		{"short status", []byte{
			251, 0xa1, 0xb2, 0xc3,
			0, 13, 0, 1, 0, // status code of 1 byte
		}, ErrReplyMalformed},
		{"bad client data", []byte{
			251, 0xa1, 0xb2, 0xc3,
			0, 13, 0, 2, 0, 0,
			0, 45, 0, 8, // OPTION_CLIENT_DATA, length 8
			0, 26, 0, 4, 0, 0, 0, 0, // an IAPREFIX of 4 bytes
		}, ErrReplyMalformed},
		{"header only", []byte{251, 0xa1, 0xb2}, ErrReplyMalformed},
	} {
		r, err := parseRequestReply(tc.b, 251)
		if tc.err == nil {
			if err != nil || r.xid != xid {
				t.Errorf("%s: %+v, %v", tc.name, r, err)
			}
			continue
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.err)
		}
	}
}

// TestRequestResults: the draft's section 4.4, binding by binding.
func TestRequestResults(t *testing.T) {
	a1 := bnd("eth1", clientA, 1, "2001:db8:1::/56")
	a2 := bnd("eth1", clientA, 2, "2001:db8:1:100::/60")
	a3 := bnd("eth1", clientA, 2, "2001:db8:1:200::/60")
	b1 := bnd("eth1", clientB, 1, "2001:db8:2::/56")
	bs := []binding.Binding{a1, a2, a3, b1}
	xid := [3]byte{1, 2, 3}
	for _, tc := range []struct {
		name  string
		reply []byte
		want  []uint16 // a1 a2 a3 b1
	}{
		{"all success", replyBytes(251, xid, status(0)), []uint16{0, 0, 0, 0}},
		{"message refused", replyBytes(251, xid, status(dhcp6.StatusNotAllowed), clientData(clientA, status(0))),
			[]uint16{10, 10, 10, 10}},
		{"message NoBinding", replyBytes(251, xid, status(dhcp6.StatusNoBinding)), []uint16{3, 3, 3, 3}},
		{"client failed", replyBytes(251, xid, status(0), clientData(clientB, status(dhcp6.StatusUnspecFail))),
			[]uint16{0, 0, 0, 1}},
		{"prefix NoBinding, client other", replyBytes(251, xid, status(0),
			clientData(clientA, status(dhcp6.StatusUnspecFail), iaprefix("2001:db8:1:100::/60", status(dhcp6.StatusNoBinding)))),
			[]uint16{1, 3, 1, 0}},
		{"IA_PD status, one prefix in it named", replyBytes(251, xid, status(0),
			clientData(clientA, iapd(2, status(dhcp6.StatusNoPrefixAvail), iaprefix("2001:db8:1:200::/60", status(0))))),
			[]uint16{0, 6, 0, 0}},
		{"prefix of another client not ours", replyBytes(251, xid, status(0),
			clientData(clientB, iaprefix("2001:db8:1::/56", status(dhcp6.StatusUnspecFail)))),
			[]uint16{0, 0, 0, 0}},
	} {
		r, err := parseRequestReply(tc.reply, 251)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		res := requestResults(bs, r)
		for i, w := range tc.want {
			if !res[i].Answered || res[i].Status != w || res[i].Binding.Key != bs[i].Key {
				t.Errorf("%s: binding %d: %+v, want status %d", tc.name, i, res[i], w)
			}
		}
	}
}

// TestClientResults: the Reply to a Release (RFC 8415 18.3.7), as Kea
// answers it.
func TestClientResults(t *testing.T) {
	a1 := bnd("eth1", clientA, 1, "2001:db8:1::/56")
	a2 := bnd("eth1", clientA, 2, "2001:db8:2::/56")
	a3 := bnd("eth1", clientA, 3, "2001:db8:3::/56")
	bs := []binding.Binding{a1, a2, a3}
	xid := [3]byte{1, 2, 3}
	for _, tc := range []struct {
		name  string
		reply []byte
		want  []uint16
	}{
		{"bare Reply", replyBytes(7, xid), []uint16{0, 0, 0}},
		{"Kea: released, unknown", replyBytes(7, xid, status(dhcp6.StatusNoBinding),
			iapd(1, status(0)), iapd(2, status(dhcp6.StatusNoBinding))), []uint16{0, 3, 3}},
		{"top-level failure, one IA fine", replyBytes(7, xid, status(dhcp6.StatusUnspecFail), iapd(3, status(0))),
			[]uint16{1, 1, 0}},
		{"prefix status inside IA", replyBytes(7, xid, iapd(2, status(0), iaprefix("2001:db8:2::/56", status(dhcp6.StatusUnspecFail)))),
			[]uint16{0, 1, 0}},
	} {
		m, err := dhcp6.ParseMessage(tc.reply)
		if err != nil {
			t.Fatal(err)
		}
		res := clientResults(bs, m)
		for i, w := range tc.want {
			if res[i].Status != w || !res[i].Answered {
				t.Errorf("%s: binding %d: status %d, want %d", tc.name, i, res[i].Status, w)
			}
		}
	}
}

// TestSchedule: RFC 8415 section 15 with MRT 0: doubling, jitter within
// RAND's bounds, MRC transmissions.
func TestSchedule(t *testing.T) {
	got := schedule(time.Second, 4, func() float64 { return 0 })
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
	if len(got) != len(want) {
		t.Fatalf("schedule %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("schedule %v, want %v", got, want)
		}
	}
	hi := schedule(time.Second, 3, func() float64 { return 0.1 })
	lo := schedule(time.Second, 3, func() float64 { return -0.1 })
	if hi[0] != 1100*time.Millisecond || hi[1] != 2310*time.Millisecond || lo[0] != 900*time.Millisecond || lo[2] != 3249*time.Millisecond {
		t.Errorf("jitter: hi %v lo %v", hi, lo)
	}
}
