package lqserver

import (
	"bytes"
	"errors"
	"io/fs"
	"net/netip"
	"testing"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// keaLeaseJSON is a lease as Kea 2.2 (Debian kea-dhcp6-server) printed it
// in lease6-get-page, for a Solicit with Rapid Commit relayed with
// Interface-ID "dl0", Remote-ID (enterprise 9, "ri0") and a Relay-ID.
const keaLeaseJSON = `{"cltt":1796293925,"duid":"00:03:00:01:02:00:00:99:00:00","fqdn-fwd":false,"fqdn-rev":false,"hostname":"","hw-address":"02:00:00:99:00:00","iaid":1,"ip-address":"2001:db8:100::","preferred-lft":30,"prefix-len":56,"state":0,"subnet-id":1,"type":"IA_PD","user-context":{"ISC":{"relays":[{"hop":0,"link":"fd00:0:0:1::1","options":"0x00120003646C3000250007000000097269300035000700020000ABCD01","peer":"fe80::99"}]}},"valid-lft":40}`

func TestDecodeLease(t *testing.T) {
	l, err := DecodeLease([]byte(keaLeaseJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := Lease{
		Type: TypePD, Prefix: netip.MustParsePrefix("2001:db8:100::/56"),
		DUID: []byte{0, 3, 0, 1, 2, 0, 0, 0x99, 0, 0}, IAID: 1, SubnetID: 1, CLTT: 1796293925,
		Valid: 40, Preferred: 30,
	}
	if l.Type != want.Type || l.Prefix != want.Prefix || !bytes.Equal(l.DUID, want.DUID) || l.IAID != 1 ||
		l.SubnetID != 1 || l.CLTT != want.CLTT || l.Valid != 40 || l.Preferred != 30 || l.State != 0 {
		t.Errorf("lease %+v", l)
	}
	if len(l.Relays) != 1 {
		t.Fatalf("relays %+v", l.Relays)
	}
	r := l.Relays[0]
	if r.Hop != 0 || r.Link != linkA || r.Peer != netip.MustParseAddr("fe80::99") || l.Link() != linkA {
		t.Errorf("relay %+v", r)
	}
	if !l.RelayOption(dhcp6.OptRelayID, []byte{0, 2, 0, 0, 0xab, 0xcd, 1}) ||
		!l.RelayOption(dhcp6.OptRemoteID, []byte{0, 0, 0, 9, 'r', 'i', '0'}) ||
		!l.RelayOption(dhcp6.OptInterfaceID, []byte("dl0")) || l.RelayOption(dhcp6.OptRelayID, []byte{0, 2}) {
		t.Errorf("relay options %x", r.Options)
	}
	// Kea 2.4+ spells the list "relay-info".
	l2, err := DecodeLease(bytes.Replace([]byte(keaLeaseJSON), []byte(`"relays"`), []byte(`"relay-info"`), 1))
	if err != nil || len(l2.Relays) != 1 {
		t.Errorf("relay-info: %+v %v", l2.Relays, err)
	}
}

func TestDecodeLeaseErrors(t *testing.T) {
	cases := []struct{ name, json string }{
		{"not json", `{`},
		{"bad address", `{"ip-address":"2001:db8::zz","type":"IA_PD","prefix-len":56}`},
		{"ipv4 address", `{"ip-address":"192.0.2.1","type":"IA_NA"}`},
		{"prefix length 0", `{"ip-address":"2001:db8::","type":"IA_PD","prefix-len":0}`},
		{"prefix length 129", `{"ip-address":"2001:db8::","type":"IA_PD","prefix-len":129}`},
		{"bad duid", `{"ip-address":"2001:db8::","type":"IA_PD","prefix-len":56,"duid":"0g"}`},
		{"bad relay link", `{"ip-address":"2001:db8::","type":"IA_PD","prefix-len":56,"user-context":{"ISC":{"relays":[{"link":"x"}]}}}`},
		{"ipv4 peer", `{"ip-address":"2001:db8::","type":"IA_PD","prefix-len":56,"user-context":{"ISC":{"relays":[{"peer":"1.2.3.4"}]}}}`},
		{"odd options hex", `{"ip-address":"2001:db8::","type":"IA_PD","prefix-len":56,"user-context":{"ISC":{"relays":[{"options":"0x001"}]}}}`},
		{"truncated options", `{"ip-address":"2001:db8::","type":"IA_PD","prefix-len":56,"user-context":{"ISC":{"relays":[{"options":"0x00120009"}]}}}`},
		{"hop 256", `{"ip-address":"2001:db8::","type":"IA_PD","prefix-len":56,"user-context":{"ISC":{"relays":[{"hop":256}]}}}`},
	}
	for _, c := range cases {
		if _, err := DecodeLease([]byte(c.json)); !errors.Is(err, ErrLeaseJSON) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	// Other user-context content is left alone; an IA_NA is a /128.
	l, err := DecodeLease([]byte(`{"ip-address":"2001:db8::5","type":"IA_NA","prefix-len":128,"duid":"01","user-context":{"mine":[1,2],"ISC":{"other":true}}}`))
	if err != nil || l.Prefix.Bits() != 128 || l.Relays != nil {
		t.Errorf("IA_NA with other context: %+v %v", l, err)
	}
}

func TestServerID(t *testing.T) {
	t.Parallel()
	yes, no := true, false
	file := func(content string) func(string) ([]byte, error) {
		return func(p string) ([]byte, error) {
			if p != "/kea/data/kea-dhcp6-serverid" {
				return nil, fs.ErrNotExist
			}
			return []byte(content), nil
		}
	}
	persisted := "00:01:00:01:32:a4:01:a5:02:00:00:00:ff:01" // as Kea 2.2 wrote it
	cases := []struct {
		name string
		sid  *KeaServerID
		read func(string) ([]byte, error)
		want string // hex; "" means ErrServerIDUnknown
	}{
		{"persisted LLT (Kea's default)", &KeaServerID{Type: "LLT", Persist: &yes}, file(persisted), "0001000132a401a5020000 00ff01"},
		{"no server-id map, persisted", nil, file(persisted + "\n"), "0001000132a401a5020000 00ff01"},
		{"fixed LL", &KeaServerID{Type: "LL", HType: 1, Identifier: "02:00:00:00:00:fe"}, file(persisted), "00030001020000 0000fe"},
		{"fixed LLT", &KeaServerID{Type: "LLT", HType: 1, Time: 0x01020304, Identifier: "020000000001"}, nil, "000100010102030 4020000000001"},
		{"fixed EN", &KeaServerID{Type: "EN", EnterpriseID: 2495, Identifier: "abcd"}, nil, "00020000 09bfabcd"},
		{"LLT without time falls back to the file", &KeaServerID{Type: "LLT", HType: 1, Identifier: "02"}, file(persisted), "0001000132a401a5020000 00ff01"},
		{"file of another type", &KeaServerID{Type: "LL"}, file(persisted), ""},
		{"not persisted: the file is stale", &KeaServerID{Type: "LLT", Persist: &no}, file(persisted), ""},
		{"no file", &KeaServerID{Type: "LLT"}, file(""), ""},
		{"garbage file", nil, file("hello"), ""},
	}
	for _, c := range cases {
		cfg := &KeaConfig{DataDirectory: "/kea/data", ServerID: c.sid}
		if c.name == "no file" {
			cfg.DataDirectory = "/elsewhere"
		}
		got, src, err := ServerID(cfg, c.read)
		want, _ := ParseHex(string(bytes.ReplaceAll([]byte(c.want), []byte(" "), nil)))
		switch {
		case c.want == "" && !errors.Is(err, ErrServerIDUnknown):
			t.Errorf("%s: got %x (%s) %v, want ErrServerIDUnknown", c.name, got, src, err)
		case c.want != "" && (err != nil || !bytes.Equal(got, want)):
			t.Errorf("%s: got %x %v, want %x", c.name, got, err, want)
		}
	}
}
