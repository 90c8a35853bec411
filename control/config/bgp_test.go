package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// bgpBase is a valid bgp section each case below changes.
const bgpBase = `bgp:
  asn: 65001
  router_id: 192.0.2.1
  neighbors:
    - address: fd00:53::2
      asn: 65000
`

func TestBGPValid(t *testing.T) {
	for _, tc := range []struct {
		name  string
		yaml  string
		check func(*BGP) bool
	}{
		{"no bgp key", "", func(b *BGP) bool { return b == nil }},
		{"empty bgp key is none", "bgp:\n", func(b *BGP) bool { return b == nil }},
		{"defaults", bgpBase, func(b *BGP) bool {
			return reflect.DeepEqual(b, &BGP{
				ASN: 65001, RouterID: netip.MustParseAddr("192.0.2.1"),
				Neighbors:   []BGPNeighbor{{Address: netip.MustParseAddr("fd00:53::2"), ASN: 65000, Port: 179}},
				RestartTime: 120 * time.Second, ListenPort: 179,
			})
		}},
		{"everything", bgpBase + "      passive: true\n      password: s3cret\n      port: 1179\n" +
			"    - {address: 192.0.2.9, asn: 4200000000}\n" +
			"  next_hop: 2001:db8::1\n  communities: ['65001:100', '0:0', '65535:65535']\n" +
			"  aggregates: [2001:db8:8000::/40, 2001:db8:9000::/36]\n  graceful_restart_time: 5m\n  listen_port: 1790\n",
			func(b *BGP) bool {
				return reflect.DeepEqual(b, &BGP{
					ASN: 65001, RouterID: netip.MustParseAddr("192.0.2.1"),
					Neighbors: []BGPNeighbor{
						{Address: netip.MustParseAddr("fd00:53::2"), ASN: 65000, Passive: true, Password: "s3cret", Port: 1179},
						{Address: netip.MustParseAddr("192.0.2.9"), ASN: 4200000000, Port: 179},
					},
					NextHop:     netip.MustParseAddr("2001:db8::1"),
					Communities: []uint32{65001<<16 | 100, 0, 0xffffffff},
					Aggregates:  []netip.Prefix{netip.MustParsePrefix("2001:db8:8000::/40"), netip.MustParsePrefix("2001:db8:9000::/36")},
					RestartTime: 5 * time.Minute, ListenPort: 1790,
				})
			}},
		{"connect only", bgpBase + "  listen_port: 0\n", func(b *BGP) bool { return b.ListenPort == 0 }},
		{"IPv4-mapped neighbour is IPv4", strings.Replace(bgpBase, "fd00:53::2", "'::ffff:192.0.2.9'", 1),
			func(b *BGP) bool { return b.Neighbors[0].Address == netip.MustParseAddr("192.0.2.9") }},
		{"loopback neighbour (FRR on the same router)", strings.Replace(bgpBase, "fd00:53::2", "'::1'", 1),
			func(b *BGP) bool { return b.Neighbors[0].Address == netip.IPv6Loopback() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(base + tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c.BGP) {
				t.Errorf("unexpected bgp config %+v", c.BGP)
			}
		})
	}
}

func TestBGPErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want string // the full error line expected among the errors
	}{
		{"missing asn", strings.Replace(bgpBase, "  asn: 65001\n", "", 1),
			`config: bgp.asn: required`},
		{"asn 0", strings.Replace(bgpBase, "asn: 65001", "asn: 0", 1),
			`config: bgp.asn: 0 is not an AS number (1..4294967294)`},
		{"asn too big", strings.Replace(bgpBase, "asn: 65001", "asn: 4294967296", 1),
			`config: bgp.asn: 4294967296 is not an AS number (1..4294967294)`},
		{"asn AS_TRANS", strings.Replace(bgpBase, "asn: 65001", "asn: 23456", 1),
			`config: bgp.asn: 23456 is reserved (RFC 6793, RFC 7300)`},
		{"asn 65535", strings.Replace(bgpBase, "asn: 65001", "asn: 65535", 1),
			`config: bgp.asn: 65535 is reserved (RFC 6793, RFC 7300)`},
		{"neighbor asn 0", strings.Replace(bgpBase, "asn: 65000", "asn: 0", 1),
			`config: bgp.neighbors[0].asn: 0 is not an AS number (1..4294967294)`},
		{"asn not a number", strings.Replace(bgpBase, "asn: 65001", "asn: AS65001", 1),
			`config: bgp.asn: "AS65001" is not an integer`},
		{"missing router_id", strings.Replace(bgpBase, "  router_id: 192.0.2.1\n", "", 1),
			`config: bgp.router_id: required`},
		{"IPv6 router_id", strings.Replace(bgpBase, "192.0.2.1", "fd00::1", 1),
			`config: bgp.router_id: "fd00::1" is not an IPv4 address`},
		{"zero router_id", strings.Replace(bgpBase, "192.0.2.1", "0.0.0.0", 1),
			`config: bgp.router_id: "0.0.0.0" cannot identify a BGP speaker`},
		{"no neighbors", "bgp: {asn: 65001, router_id: 192.0.2.1}\n",
			`config: bgp.neighbors: at least one neighbor is required`},
		{"neighbor without address", bgpBase + "    - asn: 65000\n",
			`config: bgp.neighbors[1].address: required`},
		{"neighbor without asn", bgpBase + "    - address: fd00:53::3\n",
			`config: bgp.neighbors[1].asn: required`},
		{"neighbor bad address", strings.Replace(bgpBase, "fd00:53::2", "router1", 1),
			`config: bgp.neighbors[0].address: "router1" is not an IPv6 or IPv4 address`},
		{"neighbor link-local", strings.Replace(bgpBase, "fd00:53::2", "fe80::2", 1),
			`config: bgp.neighbors[0].address: "fe80::2" is link-local; peer with a global (or ULA) address`},
		{"neighbor multicast", strings.Replace(bgpBase, "fd00:53::2", "ff02::2", 1),
			`config: bgp.neighbors[0].address: "ff02::2" is not a unicast address`},
		{"duplicate neighbor", bgpBase + "    - {address: 'fd00:53:0::2', asn: 65002}\n",
			`config: bgp.neighbors[1].address: "fd00:53:0::2" is also bgp.neighbors[0]`},
		{"neighbor bad port", bgpBase + "      port: 0\n",
			`config: bgp.neighbors[0].port: 0 is not a TCP port (1..65535)`},
		{"password too long", bgpBase + "      password: " + strings.Repeat("k", 81) + "\n",
			`config: bgp.neighbors[0].password: 81 bytes; a TCP MD5 key is at most 80`},
		{"passive without listening", bgpBase + "      passive: true\n  listen_port: 0\n",
			`config: bgp.neighbors[0].passive: true, but bgp.listen_port is 0`},
		{"passive not a bool", bgpBase + "      passive: maybe\n",
			`config: bgp.neighbors[0].passive: "maybe" is not true or false`},
		{"unknown neighbor key", bgpBase + "      remote_as: 65000\n",
			`config: bgp.neighbors[0].remote_as: unknown key (known keys: address, asn, passive, password, port)`},
		{"next_hop IPv4", bgpBase + "  next_hop: 192.0.2.1\n",
			`config: bgp.next_hop: "192.0.2.1" is not an IPv6 address`},
		{"next_hop link-local", bgpBase + "  next_hop: fe80::1\n",
			`config: bgp.next_hop: "fe80::1" is not a global unicast address: the peers must reach it`},
		{"community without colon", bgpBase + "  communities: ['65001']\n",
			`config: bgp.communities[0]: "65001" is not a community (write ASN:VALUE, for example 65001:100)`},
		{"community out of range", bgpBase + "  communities: ['65001:100', '65536:1']\n",
			`config: bgp.communities[1]: "65536:1" is not a community: both parts are numbers 0..65535`},
		{"community repeated", bgpBase + "  communities: ['65001:100', '65001:0100']\n",
			`config: bgp.communities[1]: "65001:0100" is also bgp.communities[0]`},
		{"aggregate IPv4", bgpBase + "  aggregates: [192.0.2.0/24]\n",
			`config: bgp.aggregates[0]: "192.0.2.0/24" is not an IPv6 prefix`},
		{"aggregate not masked", bgpBase + "  aggregates: ['2001:db8::1/40']\n",
			`config: bgp.aggregates[0]: "2001:db8::1/40" has bits set past the prefix length; did you mean 2001:db8::/40?`},
		{"aggregate default route", bgpBase + "  aggregates: ['::/0']\n",
			`config: bgp.aggregates[0]: "::/0" would announce a default route`},
		{"aggregate repeated", bgpBase + "  aggregates: ['2001:db8::/40', '2001:db8:0::/40']\n",
			`config: bgp.aggregates[1]: "2001:db8:0::/40" is also bgp.aggregates[0]`},
		{"restart time without unit", bgpBase + "  graceful_restart_time: 120\n",
			`config: bgp.graceful_restart_time: "120" has no unit; write 120s for seconds`},
		{"restart time too long", bgpBase + "  graceful_restart_time: 2h\n",
			`config: bgp.graceful_restart_time: 2h0m0s is above 1h8m15s, the most the capability carries`},
		{"restart time fractional", bgpBase + "  graceful_restart_time: 1500ms\n",
			`config: bgp.graceful_restart_time: 1.5s is not a whole number of seconds (1s..1h8m15s)`},
		{"bad listen_port", bgpBase + "  listen_port: 70000\n",
			`config: bgp.listen_port: 70000 is not a TCP port (0 to listen on none, 1..65535)`},
		{"unknown bgp key", bgpBase + "  local_as: 65001\n",
			`config: bgp.local_as: unknown key (known keys: aggregates, asn, communities, graceful_restart_time, listen_port, neighbors, next_hop, router_id)`},
		{"neighbors not a list", "bgp: {asn: 65001, router_id: 192.0.2.1, neighbors: fd00:53::2}\n",
			`config: bgp.neighbors: expected a list, got "fd00:53::2"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(base + tc.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", c.BGP)
			}
			found := false
			for line := range strings.SplitSeq(err.Error(), "\n") {
				if strings.HasPrefix(line, tc.want) {
					found = true
				}
			}
			if !found {
				t.Errorf("Parse error:\n%v\nwant a line starting with:\n%s", err, tc.want)
			}
		})
	}
}

func TestParseCommunity(t *testing.T) {
	for s, want := range map[string]uint32{"0:0": 0, "65001:100": 0xfde90064, "65535:65535": 0xffffffff, "1:2": 0x10002} {
		if got, err := ParseCommunity(s); err != nil || got != want {
			t.Errorf("ParseCommunity(%q) = %#x, %v; want %#x", s, got, err, want)
		}
	}
	for _, s := range []string{"", ":", "1:", ":1", "1:2:3", "-1:2", "1:65536", "a:b", "65001", " 1:2"} {
		if got, err := ParseCommunity(s); err == nil {
			t.Errorf("ParseCommunity(%q) = %#x, want an error", s, got)
		}
	}
}

// FuzzParseBGP checks that whatever bgp section Parse accepts is valid by
// the rules it enforces.
func FuzzParseBGP(f *testing.F) {
	f.Add([]byte(bgpBase))
	f.Add([]byte(bgpBase + "      passive: true\n      password: k\n      port: 1179\n    - {address: 192.0.2.9, asn: 4200000000}\n" +
		"  next_hop: 2001:db8::1\n  communities: ['65001:100']\n  aggregates: [2001:db8:8000::/40]\n  graceful_restart_time: 5m\n  listen_port: 0\n"))
	f.Add([]byte("bgp: {asn: 1, router_id: 10.0.0.1, neighbors: [{address: '::1', asn: 2}], communities: ['0:0']}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse([]byte(base + string(data)))
		if err != nil || c.BGP == nil {
			return
		}
		b := c.BGP
		if b.ASN == 0 || b.ASN == 23456 || b.ASN == 65535 || b.ASN == 4294967295 || !b.RouterID.Is4() || b.RouterID.IsUnspecified() {
			t.Fatalf("accepted asn %d, router_id %v", b.ASN, b.RouterID)
		}
		if len(b.Neighbors) == 0 || b.ListenPort < 0 || b.ListenPort > 65535 {
			t.Fatalf("accepted %d neighbors, listen_port %d", len(b.Neighbors), b.ListenPort)
		}
		seen := map[netip.Addr]bool{}
		for _, n := range b.Neighbors {
			a := n.Address
			if !a.IsValid() || a.Zone() != "" || a.Is4In6() || a.IsLinkLocalUnicast() || a.IsMulticast() || seen[a] ||
				n.ASN == 0 || n.Port < 1 || n.Port > 65535 || len(n.Password) > MaxBGPPassword || (n.Passive && b.ListenPort == 0) {
				t.Fatalf("accepted neighbor %+v", n)
			}
			seen[a] = true
		}
		if b.NextHop.IsValid() && (!b.NextHop.Is6() || !b.NextHop.IsGlobalUnicast() || b.NextHop.IsLinkLocalUnicast() || b.NextHop.Zone() != "") {
			t.Fatalf("accepted next_hop %v", b.NextHop)
		}
		for _, p := range b.Aggregates {
			if !p.Addr().Is6() || p.Addr().Is4In6() || p != p.Masked() || p.Bits() == 0 {
				t.Fatalf("accepted aggregate %v", p)
			}
		}
		if b.RestartTime < time.Second || b.RestartTime > MaxBGPRestartTime || b.RestartTime%time.Second != 0 {
			t.Fatalf("accepted restart time %v", b.RestartTime)
		}
	})
}
