package dhcp6_test

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// solicitBytes is a minimal Solicit: header plus an Elapsed Time option.
var solicitBytes = []byte{
	1,                // msg-type SOLICIT
	0xaa, 0xbb, 0xcc, // transaction-id
	0, 8, // Elapsed Time option code
	0, 2, // option length
	0, 0, // elapsed time 0
}

func TestParseRelay(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    dhcp6.Relay
		wantErr error
	}{
		{
			name: "relay-forward ok",
			in: []byte{
				12,                                                         // msg-type RELAY-FORW
				1,                                                          // hop-count
				0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // link-address 2001:db8::1
				0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // peer-address fe80::2
				0, 18, // Interface-ID option code
				0, 4, // option length
				'e', 't', 'h', '0', // interface-id "eth0"
				0, 9, // Relay-Message option code
				0, 10, // option length
				1,                // inner msg-type SOLICIT
				0xaa, 0xbb, 0xcc, // inner transaction-id
				0, 8, // Elapsed Time option code
				0, 2, // option length
				0, 0, // elapsed time 0
			},
			want: dhcp6.Relay{
				Type:     dhcp6.MsgRelayForw,
				HopCount: 1,
				LinkAddr: netip.MustParseAddr("2001:db8::1"),
				PeerAddr: netip.MustParseAddr("fe80::2"),
				Inner:    solicitBytes,
			},
		},
		{
			name: "relay-reply ok, relay-message first, no other option",
			in: []byte{
				13,                                             // msg-type RELAY-REPL
				0,                                              // hop-count
				0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // link-address ::
				0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99, // peer-address fe80::99
				0, 9, // Relay-Message option code
				0, 4, // option length
				7,          // inner msg-type REPLY
				0, 0, 0x01, // inner transaction-id
			},
			want: dhcp6.Relay{
				Type:     dhcp6.MsgRelayRepl,
				LinkAddr: netip.IPv6Unspecified(),
				PeerAddr: netip.MustParseAddr("fe80::99"),
				Inner:    []byte{7, 0, 0, 1},
			},
		},
		{
			name: "empty relay-message is parsed (callers decide)",
			in: []byte{
				13,                                             // msg-type RELAY-REPL
				0,                                              // hop-count
				0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // link-address ::
				0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // peer-address ::
				0, 9, // Relay-Message option code
				0, 0, // option length 0
			},
			want: dhcp6.Relay{
				Type:     dhcp6.MsgRelayRepl,
				LinkAddr: netip.IPv6Unspecified(),
				PeerAddr: netip.IPv6Unspecified(),
				Inner:    []byte{},
			},
		},
		{
			name:    "empty",
			in:      []byte{},
			wantErr: dhcp6.ErrShort,
		},
		{
			name: "not a relay message",
			in: []byte{
				1,                // msg-type SOLICIT
				0xaa, 0xbb, 0xcc, // transaction-id
			},
			wantErr: dhcp6.ErrNotRelay,
		},
		{
			name: "header one byte short",
			in: []byte{
				12,                                             // msg-type RELAY-FORW
				0,                                              // hop-count
				0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // link-address ::
				0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // peer-address, 15 of 16 bytes
			},
			wantErr: dhcp6.ErrShort,
		},
		{
			name: "header only, no relay-message",
			in: []byte{
				12,                                             // msg-type RELAY-FORW
				0,                                              // hop-count
				0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // link-address ::
				0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // peer-address ::
			},
			wantErr: dhcp6.ErrNoRelayMessage,
		},
		{
			name: "options but no relay-message",
			in: []byte{
				12,                                             // msg-type RELAY-FORW
				0,                                              // hop-count
				0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // link-address ::
				0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // peer-address ::
				0, 18, // Interface-ID option code
				0, 1, // option length
				'x', // interface-id
			},
			wantErr: dhcp6.ErrNoRelayMessage,
		},
		{
			name: "truncated relay-message option",
			in: []byte{
				12,                                             // msg-type RELAY-FORW
				0,                                              // hop-count
				0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // link-address ::
				0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // peer-address ::
				0, 9, // Relay-Message option code
				0, 10, // option length 10, only 4 follow
				1, 0, 0, 1, // inner message, cut short
			},
			wantErr: dhcp6.ErrBadOption,
		},
		{
			name: "truncated option header after relay-message",
			in: []byte{
				12,                                             // msg-type RELAY-FORW
				0,                                              // hop-count
				0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // link-address ::
				0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // peer-address ::
				0, 9, // Relay-Message option code
				0, 4, // option length
				1, 0, 0, 1, // inner SOLICIT header
				0, 18, 0, // 3 trailing bytes: half an option header
			},
			wantErr: dhcp6.ErrBadOption,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := dhcp6.ParseRelay(tt.in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseRelay err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRelay: %v", err)
			}
			if got.Type != tt.want.Type || got.HopCount != tt.want.HopCount ||
				got.LinkAddr != tt.want.LinkAddr || got.PeerAddr != tt.want.PeerAddr {
				t.Errorf("header = %v %d %v %v, want %v %d %v %v", got.Type, got.HopCount, got.LinkAddr, got.PeerAddr,
					tt.want.Type, tt.want.HopCount, tt.want.LinkAddr, tt.want.PeerAddr)
			}
			if !bytes.Equal(got.Inner, tt.want.Inner) {
				t.Errorf("Inner = %x, want %x", got.Inner, tt.want.Inner)
			}
			if !bytes.Equal(got.Options, tt.in[dhcp6.RelayHeaderLen:]) {
				t.Errorf("Options = %x, want the bytes after the header", got.Options)
			}
		})
	}
}

func TestRelayInterfaceID(t *testing.T) {
	in := []byte{
		12,                                             // msg-type RELAY-FORW
		0,                                              // hop-count
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // link-address ::
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // peer-address ::
		0, 9, // Relay-Message option code
		0, 4, // option length
		1, 0, 0, 1, // inner SOLICIT header
		0, 18, // Interface-ID option code
		0, 3, // option length
		'p', 'o', 'n', // interface-id "pon"
	}
	r, err := dhcp6.ParseRelay(in)
	if err != nil {
		t.Fatal(err)
	}
	id, ok := r.InterfaceID()
	if !ok || string(id) != "pon" {
		t.Fatalf("InterfaceID = %q, %v; want \"pon\", true", id, ok)
	}
	r.Options = r.Options[:8] // only the relay-message
	if id, ok := r.InterfaceID(); ok {
		t.Fatalf("InterfaceID without the option = %q, true", id)
	}
}

func TestParseMessage(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    dhcp6.Message
		wantErr error
	}{
		{
			name: "solicit",
			in:   solicitBytes,
			want: dhcp6.Message{Type: dhcp6.MsgSolicit, XID: [3]byte{0xaa, 0xbb, 0xcc}, Options: dhcp6.Options(solicitBytes[4:])},
		},
		{
			name: "header only",
			in: []byte{
				7,                // msg-type REPLY
				0x01, 0x02, 0x03, // transaction-id
			},
			want: dhcp6.Message{Type: dhcp6.MsgReply, XID: [3]byte{1, 2, 3}, Options: dhcp6.Options{}},
		},
		{
			name: "unknown message type passes",
			in: []byte{
				200,     // msg-type 200, unassigned
				9, 9, 9, // transaction-id
				0xfe, 0xed, // option code 65261, unknown
				0, 1, // option length
				0x42, // option data
			},
			want: dhcp6.Message{Type: 200, XID: [3]byte{9, 9, 9}, Options: dhcp6.Options{0xfe, 0xed, 0, 1, 0x42}},
		},
		{
			name:    "three bytes",
			in:      []byte{1, 2, 3}, // msg-type and two of three transaction-id bytes
			wantErr: dhcp6.ErrShort,
		},
		{
			name: "relay-forward refused",
			in: []byte{
				12,      // msg-type RELAY-FORW
				0, 0, 0, // hop-count and the start of link-address
			},
			wantErr: dhcp6.ErrNotRelay,
		},
		{
			name: "relay-reply refused",
			in: []byte{
				13,      // msg-type RELAY-REPL
				0, 0, 0, // hop-count and the start of link-address
			},
			wantErr: dhcp6.ErrNotRelay,
		},
		{
			name: "option runs past the end",
			in: []byte{
				3,       // msg-type REQUEST
				1, 2, 3, // transaction-id
				0, 1, // Client ID option code
				0, 14, // option length 14, only 2 follow
				0, 1, // DUID type LLT
			},
			wantErr: dhcp6.ErrBadOption,
		},
		{
			name: "trailing byte",
			in: []byte{
				3,       // msg-type REQUEST
				1, 2, 3, // transaction-id
				0, // a lone byte: not an option header
			},
			wantErr: dhcp6.ErrBadOption,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := dhcp6.ParseMessage(tt.in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseMessage err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseMessage: %v", err)
			}
			if got.Type != tt.want.Type || got.XID != tt.want.XID || !bytes.Equal(got.Options, tt.want.Options) {
				t.Errorf("got %v %x %x, want %v %x %x", got.Type, got.XID, got.Options, tt.want.Type, tt.want.XID, tt.want.Options)
			}
		})
	}
}

func TestValidateOptions(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"empty", []byte{}, true},
		{"one empty option", []byte{
			0, 14, // Rapid Commit option code
			0, 0, // option length 0
		}, true},
		{"two options", []byte{
			0, 14, // Rapid Commit option code
			0, 0, // option length 0
			0, 8, // Elapsed Time option code
			0, 2, // option length
			0, 100, // elapsed time
		}, true},
		{"header cut", []byte{
			0, 14, // Rapid Commit option code
			0, // half an option length
		}, false},
		{"data cut", []byte{
			0, 8, // Elapsed Time option code
			0, 2, // option length 2
			0, // one byte of data
		}, false},
		{"max length, nothing behind", []byte{
			0, 8, // Elapsed Time option code
			0xff, 0xff, // option length 65535
		}, false},
	}
	for _, tt := range tests {
		err := dhcp6.ValidateOptions(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("%s: ValidateOptions = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, dhcp6.ErrBadOption) {
			t.Errorf("%s: err %v is not ErrBadOption", tt.name, err)
		}
	}
}

func TestOptionsNextGet(t *testing.T) {
	opts := dhcp6.Options{
		0, 1, // Client ID option code
		0, 2, // option length
		0xca, 0xfe, // DUID (short, opaque here)
		0, 14, // Rapid Commit option code
		0, 0, // option length 0
		0, 1, // a second Client ID option code
		0, 1, // option length
		0x99, // data
	}
	type opt struct {
		code uint16
		data string
	}
	var got []opt
	for o := opts; ; {
		code, data, rest, ok := o.Next()
		if !ok {
			if len(rest) != 0 {
				t.Fatalf("rest at end = %x", rest)
			}
			break
		}
		got = append(got, opt{code, string(data)})
		o = rest
	}
	want := []opt{{1, "\xca\xfe"}, {14, ""}, {1, "\x99"}}
	if len(got) != len(want) {
		t.Fatalf("walk = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("option %d = %+v, want %+v", i, got[i], want[i])
		}
	}

	if d, ok := opts.Get(dhcp6.OptClientID); !ok || !bytes.Equal(d, []byte{0xca, 0xfe}) {
		t.Errorf("Get(ClientID) = %x, %v; want the first one, cafe", d, ok)
	}
	if d, ok := opts.Get(dhcp6.OptRapidCommit); !ok || len(d) != 0 {
		t.Errorf("Get(RapidCommit) = %x, %v; want empty, true", d, ok)
	}
	if _, ok := opts.Get(dhcp6.OptServerID); ok {
		t.Error("Get(ServerID) found an option that is not there")
	}

	// A truncated tail ends the walk instead of panicking.
	trunc := dhcp6.Options{
		0, 14, // Rapid Commit option code
		0, 0, // option length 0
		0, 2, // Server ID option code
		0, 10, // option length 10, 1 byte follows
		0,
	}
	if _, ok := trunc.Get(dhcp6.OptServerID); ok {
		t.Error("Get found an option that runs past the end")
	}
	if _, ok := trunc.Get(dhcp6.OptRapidCommit); !ok {
		t.Error("Get missed the option before a truncated one")
	}
	for _, short := range []dhcp6.Options{nil, {}, {0}, {0, 1, 0}} {
		if _, _, _, ok := short.Next(); ok {
			t.Errorf("Next(%x) ok", []byte(short))
		}
	}
}

func TestAppendRelayHeaderRoundTrip(t *testing.T) {
	tests := []struct {
		name       string
		typ        dhcp6.MessageType
		hops       uint8
		link, peer netip.Addr
		wantLink   netip.Addr
		wantPeer   netip.Addr
	}{
		{"forward", dhcp6.MsgRelayForw, 0, netip.MustParseAddr("2001:db8:1::1"), netip.MustParseAddr("fe80::1"),
			netip.MustParseAddr("2001:db8:1::1"), netip.MustParseAddr("fe80::1")},
		{"reply hop 32", dhcp6.MsgRelayRepl, 32, netip.IPv6Unspecified(), netip.MustParseAddr("2001:db8::2"),
			netip.IPv6Unspecified(), netip.MustParseAddr("2001:db8::2")},
		{"zero addrs written as ::", dhcp6.MsgRelayForw, 3, netip.Addr{}, netip.Addr{},
			netip.IPv6Unspecified(), netip.IPv6Unspecified()},
		{"ipv4 written as ::", dhcp6.MsgRelayForw, 1, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"),
			netip.IPv6Unspecified(), netip.IPv6Unspecified()},
		{"zone dropped", dhcp6.MsgRelayForw, 1, netip.IPv6Unspecified(), netip.MustParseAddr("fe80::1%eth0"),
			netip.IPv6Unspecified(), netip.MustParseAddr("fe80::1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := dhcp6.AppendRelayHeader([]byte{0xde, 0xad}, tt.typ, tt.hops, tt.link, tt.peer)
			if len(b) != 2+dhcp6.RelayHeaderLen || b[0] != 0xde || b[1] != 0xad {
				t.Fatalf("AppendRelayHeader did not append 34 bytes to dst: %x", b)
			}
			b = b[2:]
			b = dhcp6.AppendOption(b, dhcp6.OptInterfaceID, []byte("ge-0/0/1"))
			b = dhcp6.AppendOption(b, dhcp6.OptRelayMsg, solicitBytes)
			r, err := dhcp6.ParseRelay(b)
			if err != nil {
				t.Fatal(err)
			}
			if r.Type != tt.typ || r.HopCount != tt.hops || r.LinkAddr != tt.wantLink || r.PeerAddr != tt.wantPeer {
				t.Errorf("round trip = %v %d %v %v", r.Type, r.HopCount, r.LinkAddr, r.PeerAddr)
			}
			if !bytes.Equal(r.Inner, solicitBytes) {
				t.Errorf("Inner = %x", r.Inner)
			}
			if id, _ := r.InterfaceID(); string(id) != "ge-0/0/1" {
				t.Errorf("InterfaceID = %q", id)
			}

			// The same relay message as insomniacslk encodes it.
			inner, err := dhcpv6.MessageFromBytes(solicitBytes)
			if err != nil {
				t.Fatal(err)
			}
			ref := &dhcpv6.RelayMessage{
				MessageType: dhcpv6.MessageType(tt.typ),
				HopCount:    tt.hops,
				LinkAddr:    net.IP(tt.wantLink.AsSlice()),
				PeerAddr:    net.IP(tt.wantPeer.AsSlice()),
			}
			ref.AddOption(dhcpv6.OptInterfaceID([]byte("ge-0/0/1")))
			ref.AddOption(dhcpv6.OptRelayMessage(inner))
			if want := ref.ToBytes(); !bytes.Equal(b, want) {
				t.Errorf("bytes differ from insomniacslk's encoding:\n got %x\nwant %x", b, want)
			}
		})
	}
}

func TestAppendOption(t *testing.T) {
	got := dhcp6.AppendOption([]byte{0xff}, dhcp6.OptRelayID, []byte{0, 3, 0, 1, 1, 2, 3, 4, 5, 6})
	want := []byte{
		0xff,  // what dst held
		0, 53, // Relay-ID option code
		0, 10, // option length
		0, 3, // DUID type LL
		0, 1, // hardware type Ethernet
		1, 2, 3, 4, 5, 6, // link-layer address
	}
	if !bytes.Equal(got, want) {
		t.Errorf("AppendOption = %x, want %x", got, want)
	}
	got = dhcp6.AppendOption(nil, dhcp6.OptRapidCommit, nil)
	if want := []byte{
		0, 14, // Rapid Commit option code
		0, 0, // option length 0
	}; !bytes.Equal(got, want) {
		t.Errorf("AppendOption(empty) = %x, want %x", got, want)
	}
}

func TestAppendClientLinkLayer(t *testing.T) {
	got := dhcp6.AppendClientLinkLayer(nil, [6]byte{0x02, 0x00, 0x5e, 0x10, 0x20, 0x30})
	want := []byte{
		0, 79, // Client Link-Layer Address option code
		0, 8, // option length
		0, 1, // link-layer type Ethernet
		0x02, 0x00, 0x5e, 0x10, 0x20, 0x30, // MAC
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendClientLinkLayer = %x, want %x", got, want)
	}
	// insomniacslk reads it back as the same address.
	var o dhcpv6.Options
	if err := o.FromBytes(got); err != nil {
		t.Fatal(err)
	}
	ro := dhcpv6.RelayOptions{Options: o}
	ht, mac := ro.ClientLinkLayerAddress()
	if ht != 1 || mac.String() != "02:00:5e:10:20:30" {
		t.Errorf("insomniacslk reads %v %v", ht, mac)
	}
}

func TestStatusCode(t *testing.T) {
	tests := []struct {
		name     string
		in       []byte
		wantCode uint16
		wantMsg  string
		wantErr  bool
	}{
		{"empty", []byte{}, 0, "", true},
		{"one byte", []byte{0}, 0, "", true},
		{"code only", []byte{
			0, 3, // status-code NoBinding
		}, dhcp6.StatusNoBinding, "", false},
		{"code and message", []byte{
			0, 6, // status-code NoPrefixAvail
			'n', 'o', 'n', 'e', // status-message "none"
		}, dhcp6.StatusNoPrefixAvail, "none", false},
	}
	for _, tt := range tests {
		code, msg, err := dhcp6.StatusCode(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: err = %v, want error %v", tt.name, err, tt.wantErr)
			continue
		}
		if err != nil && !errors.Is(err, dhcp6.ErrShort) {
			t.Errorf("%s: err %v is not ErrShort", tt.name, err)
		}
		if code != tt.wantCode || msg != tt.wantMsg {
			t.Errorf("%s: = %d %q, want %d %q", tt.name, code, msg, tt.wantCode, tt.wantMsg)
		}
	}
}

func TestMessageStatus(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want uint16
	}{
		{"absent is success", []byte{
			7,       // msg-type REPLY
			1, 2, 3, // transaction-id
		}, dhcp6.StatusSuccess},
		{"NoPrefixAvail", []byte{
			7,       // msg-type REPLY
			1, 2, 3, // transaction-id
			0, 13, // Status Code option code
			0, 2, // option length
			0, 6, // status-code NoPrefixAvail
		}, dhcp6.StatusNoPrefixAvail},
		{"malformed status counts as a failure", []byte{
			7,       // msg-type REPLY
			1, 2, 3, // transaction-id
			0, 13, // Status Code option code
			0, 1, // option length 1: too short for a code
			0, // half a status-code
		}, dhcp6.StatusUnspecFail},
	}
	for _, tt := range tests {
		m, err := dhcp6.ParseMessage(tt.in)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := m.Status(); got != tt.want {
			t.Errorf("%s: Status = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestMessageTypeString(t *testing.T) {
	tests := []struct {
		t    dhcp6.MessageType
		want string
	}{
		{dhcp6.MsgSolicit, "solicit"},
		{dhcp6.MsgRelayForw, "relay-forward"},
		{dhcp6.MsgRelayRepl, "relay-reply"},
		{dhcp6.MsgLeasequeryDone, "leasequery-done"},
		{dhcp6.MsgLeasequeryData, "leasequery-data"},
		{0, "type-0"},
		{18, "type-18"},
		{200, "type-200"},
		{255, "type-255"},
	}
	for _, tt := range tests {
		if got := tt.t.String(); got != tt.want {
			t.Errorf("MessageType(%d).String() = %q, want %q", uint8(tt.t), got, tt.want)
		}
	}
}

// nest wraps msg in n Relay-Forward headers with only a relay-message
// option each.
func nest(msg []byte, n int) []byte {
	for i := range n {
		b := dhcp6.AppendRelayHeader(nil, dhcp6.MsgRelayForw, uint8(i), netip.Addr{}, netip.MustParseAddr("fe80::1"))
		msg = dhcp6.AppendOption(b, dhcp6.OptRelayMsg, msg)
	}
	return msg
}

func TestInnermost(t *testing.T) {
	tests := []struct {
		name      string
		in        []byte
		wantMsg   []byte
		wantDepth int
		wantErr   bool
	}{
		{"not a relay", solicitBytes, solicitBytes, 0, false},
		{"empty", []byte{}, []byte{}, 0, false},
		{"one level", nest(solicitBytes, 1), solicitBytes, 1, false},
		{"three levels", nest(solicitBytes, 3), solicitBytes, 3, false},
		// Hop counts 0..32 make 33 relay levels, the deepest a server
		// can see; its Relay-Reply has as many.
		{"33 levels (hop-count 0..32)", nest(solicitBytes, dhcp6.HopCountLimit+1), solicitBytes, dhcp6.HopCountLimit + 1, false},
		{"34 levels too deep", nest(solicitBytes, dhcp6.HopCountLimit+2), nil, 0, true},
		{"1000 levels too deep", nest(solicitBytes, 1000), nil, 0, true},
		{"inner relay without relay-message", nest([]byte{
			12,                                             // msg-type RELAY-FORW
			0,                                              // hop-count
			0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // link-address ::
			0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // peer-address ::
		}, 2), nil, 0, true},
		{"empty relay-message", nest([]byte{}, 2), []byte{}, 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, depth, err := dhcp6.Innermost(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Innermost = %x depth %d, want error", msg, depth)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(msg, tt.wantMsg) || depth != tt.wantDepth {
				t.Errorf("Innermost = %x depth %d, want %x depth %d", msg, depth, tt.wantMsg, tt.wantDepth)
			}
		})
	}
}
