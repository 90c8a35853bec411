package lqserver

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

var (
	fe80_1 = []byte{0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	fe80_a = []byte{0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xa}
	fd_1_1 = []byte{0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1}
	zero16 = make([]byte, 16)
)

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestAppendClientData(t *testing.T) {
	p := netip.MustParsePrefix("2001:db8:1::/56")
	grant := []prefixGrant{{p, 7, 300, 600}}
	oneRelay := &Lease{DUID: duid(1), Relays: []Relay{{
		Hop: 0, Link: linkA, Peer: netip.MustParseAddr("fe80::1"),
		Options: cat(
			[]byte{0, 18, 0, 3, 'd', 'l', '0'},             // Interface-ID "dl0"
			[]byte{0, 53, 0, 7, 0, 2, 0, 0, 0xab, 0xcd, 1}, // Relay-ID
		),
	}}}
	twoRelays := &Lease{DUID: duid(1), Relays: []Relay{
		{Hop: 1, Link: netip.IPv6Unspecified(), Peer: netip.MustParseAddr("fe80::a"), Options: []byte{0, 18, 0, 2, 'u', 'p'}},
		{Hop: 0, Link: linkA, Peer: netip.MustParseAddr("fe80::1")},
	}}
	head := cat(
		[]byte{0, 1, 0, 10, 0, 3, 0, 1, 2, 0, 0, 0, 0, 1},                      // Client-ID
		[]byte{0, 26, 0, 25},                                                   // IAPREFIX, 25 bytes
		[]byte{0, 0, 1, 44, 0, 0, 2, 88},                                       // preferred 300, valid 600
		[]byte{56, 0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, // /56 2001:db8:1::
		[]byte{0, 46, 0, 4, 0, 0, 0, 10},                                       // CLT_TIME 10 s
	)
	cases := []struct {
		name string
		l    *Lease
		want []byte
	}{
		{"no relay data", &Lease{DUID: duid(1)}, cat(
			[]byte{0, 45, 0, 51}, // OPTION_CLIENT_DATA, 51 bytes
			head,
		)},
		{"one relay", oneRelay, cat(
			[]byte{0, 45, 0, 123}, // OPTION_CLIENT_DATA, 123 bytes
			head,
			[]byte{0, 47, 0, 68}, // OPTION_LQ_RELAY_DATA, 68 bytes
			fe80_1,               // peer-address: the relay's peer (the client)
			[]byte{12, 0},        // Relay-Forward, hop-count 0
			fd_1_1, fe80_1,       // link-address, peer-address
			[]byte{0, 18, 0, 3, 'd', 'l', '0'},             // Interface-ID
			[]byte{0, 53, 0, 7, 0, 2, 0, 0, 0xab, 0xcd, 1}, // Relay-ID; no relay-message
		)},
		{"two relays nested", twoRelays, cat(
			[]byte{0, 45, 0, 149}, // OPTION_CLIENT_DATA, 149 bytes
			head,
			[]byte{0, 47, 0, 94}, // OPTION_LQ_RELAY_DATA, 94 bytes
			fe80_1,               // peer-address: the innermost relay's peer
			[]byte{12, 1},        // outer Relay-Forward, hop-count 1
			zero16, fe80_a,       // link-address ::, peer-address fe80::a
			[]byte{0, 18, 0, 2, 'u', 'p'}, // its Interface-ID
			[]byte{0, 9, 0, 34},           // OPTION_RELAY_MSG, 34 bytes
			[]byte{12, 0},                 // inner Relay-Forward, hop-count 0
			fd_1_1, fe80_1,                // link-address, peer-address; no options
		)},
	}
	for _, c := range cases {
		got := appendClientData(nil, c.l, grant, 10, true)
		if !bytes.Equal(got, c.want) {
			t.Errorf("%s:\n got %x\nwant %x", c.name, got, c.want)
		}
		cd, err := dhcp6.ParseClientData(got[4:])
		if err != nil || len(cd.Prefixes) != 1 || cd.CLTTime != 10 {
			t.Errorf("%s: does not parse back: %+v %v", c.name, cd, err)
		}
	}
}

// TestAppendClientDataIAPD: by default the prefixes of each IA_PD are
// wrapped in it, so the requestor learns the IAID.
func TestAppendClientDataIAPD(t *testing.T) {
	grants := []prefixGrant{
		{netip.MustParsePrefix("2001:db8:1::/56"), 7, 300, 600},
		{netip.MustParsePrefix("2001:db8:2::/56"), 7, 300, 600},
		{netip.MustParsePrefix("2001:db8:3::/60"), 9, 30, 60},
	}
	got := appendClientData(nil, &Lease{DUID: duid(1)}, grants, 10, false)
	want := cat(
		[]byte{0, 45, 0, 141},                                                  // OPTION_CLIENT_DATA, 141 bytes
		[]byte{0, 1, 0, 10, 0, 3, 0, 1, 2, 0, 0, 0, 0, 1},                      // Client-ID
		[]byte{0, 25, 0, 70},                                                   // IA_PD, 70 bytes
		[]byte{0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0},                             // IAID 7, T1 0, T2 0
		[]byte{0, 26, 0, 25, 0, 0, 1, 44, 0, 0, 2, 88},                         // IAPREFIX, preferred 300, valid 600
		[]byte{56, 0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, // /56 2001:db8:1::
		[]byte{0, 26, 0, 25, 0, 0, 1, 44, 0, 0, 2, 88},                         // IAPREFIX, preferred 300, valid 600
		[]byte{56, 0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, // /56 2001:db8:2::
		[]byte{0, 25, 0, 41},                                                   // IA_PD, 41 bytes
		[]byte{0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0},                             // IAID 9, T1 0, T2 0
		[]byte{0, 26, 0, 25, 0, 0, 0, 30, 0, 0, 0, 60},                         // IAPREFIX, preferred 30, valid 60
		[]byte{60, 0x20, 0x01, 0x0d, 0xb8, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, // /60 2001:db8:3::
		[]byte{0, 46, 0, 4, 0, 0, 0, 10},                                       // CLT_TIME 10 s
	)
	if !bytes.Equal(got, want) {
		t.Errorf("\n got %x\nwant %x", got, want)
	}
	cd, err := dhcp6.ParseClientData(got[4:])
	if err != nil || len(cd.Prefixes) != 0 || len(cd.IAPDs) != 2 || cd.IAPDs[0].IAID != 7 || cd.IAPDs[1].IAID != 9 {
		t.Errorf("does not parse back: %+v %v", cd, err)
	}
}

// allPrefixes returns a client data's prefixes, bare or in IA_PDs.
func allPrefixes(cd dhcp6.ClientData) []dhcp6.IAPrefix {
	out := append([]dhcp6.IAPrefix(nil), cd.Prefixes...)
	for _, ia := range cd.IAPDs {
		for d := range ia.Options.Each(dhcp6.OptIAPrefix) {
			if p, err := dhcp6.ParseIAPrefix(d); err == nil {
				out = append(out, p)
			}
		}
	}
	return out
}

func TestFrames(t *testing.T) {
	q := &query{xid: [3]byte{0, 0, 1}, clientID: testClientID}
	r := &responder{s: &Server{opt: Options{ServerID: testServerID}}, q: q}
	r.reply(dhcp6.StatusSuccess, "")
	r.done(dhcp6.StatusQueryTerminated, "x")
	r.reply(dhcp6.StatusNotConfigured, "")
	want := cat(
		[]byte{0, 31},                    // frame: 31 bytes
		[]byte{15, 0, 0, 1},              // LEASEQUERY-REPLY, xid 1
		[]byte{0, 2, 0, 9}, testServerID, // Server-ID
		[]byte{0, 1, 0, 10}, testClientID, // the query's Client-ID; no status, no client data
		[]byte{0, 11},                    // frame: 11 bytes
		[]byte{16, 0, 0, 1},              // LEASEQUERY-DONE, xid 1
		[]byte{0, 13, 0, 3, 0, 11, 'x'},  // Status Code QueryTerminated "x"
		[]byte{0, 37},                    // frame: 37 bytes
		[]byte{15, 0, 0, 1},              // LEASEQUERY-REPLY
		[]byte{0, 2, 0, 9}, testServerID, // Server-ID
		[]byte{0, 1, 0, 10}, testClientID, // Client-ID
		[]byte{0, 13, 0, 2, 0, 9}, // Status Code NotConfigured
	)
	if !bytes.Equal(r.buf, want) {
		t.Errorf("\n got %x\nwant %x", r.buf, want)
	}
	// A successful DONE carries Status Success too (Wireshark 4.0 calls a
	// DONE without options malformed).
	r.buf = r.buf[:0]
	r.done(dhcp6.StatusSuccess, "")
	if want := cat(
		[]byte{0, 10},             // frame: 10 bytes
		[]byte{16, 0, 0, 1},       // LEASEQUERY-DONE, xid 1
		[]byte{0, 13, 0, 2, 0, 0}, // Status Code Success
	); !bytes.Equal(r.buf, want) {
		t.Errorf("DONE\n got %x\nwant %x", r.buf, want)
	}
	r.buf = append(r.buf[:0], want...)
	// A message too large for a frame is taken back whole.
	big := append(r.buf[:0:0], r.buf...)
	b, at := beginFrame(big, dhcp6.MsgLeasequeryData, q.xid)
	b = append(b, make([]byte, dhcp6.MaxFrame)...)
	if b, ok := endFrame(b, at); ok || !bytes.Equal(b, want) {
		t.Errorf("oversized frame kept (%v), %d bytes", ok, len(b))
	}
}
