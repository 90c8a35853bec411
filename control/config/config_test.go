package config

import (
	"encoding/hex"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
)

// TestLoadExample loads the README's example: what it sets, and the
// defaults it leaves to the rest.
func TestLoadExample(t *testing.T) {
	c, err := Load(filepath.Join("testdata", "example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != "/var/lib/pdrelay" || c.APISocket != DefaultAPISocket || len(c.Servers) != 1 ||
		c.Uplink.Gateway != netip.MustParseAddr("fe80::1%eth0") || c.Dataplane.Mode != DataplaneKernel {
		t.Errorf("example: %+v", c)
	}
	if len(c.Downlinks) != 2 || c.Downlinks[0].LinkType != PointToPoint || c.Downlinks[1].LinkType != MultiAccess ||
		c.Downlinks[1].MaxDelegations != 1024 || c.Downlinks[1].InterfaceID != "eth2" {
		t.Errorf("example's downlinks: %+v", c.Downlinks)
	}
	if len(c.Leasequery.Servers) != 1 || !c.Leasequery.OnStart || c.BGP == nil || len(c.BGP.Neighbors) != 1 {
		t.Errorf("example's leasequery and bgp: %+v %+v", c.Leasequery, c.BGP)
	}
}

func TestLoadReference(t *testing.T) {
	c, err := Load(filepath.Join("testdata", "reference.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		StateDir:      "/var/lib/pdrelay",
		APISocket:     "/run/pdrelay/pdrelay.sock",
		MetricsListen: "[::1]:9547",
		RelayID:       []byte{0x00, 0x03, 0x00, 0x01, 0x02, 0x00, 0x5e, 0x00, 0x53, 0x01},
		Servers: []netip.Addr{
			netip.MustParseAddr("2001:db8:ffff::547"),
			netip.MustParseAddr("ff05::1:3"),
		},
		ServerPort:       547,
		TrustedServers:   []netip.Prefix{netip.MustParsePrefix("2001:db8:ffff::/64")},
		DelegatedLengths: LengthRange{32, 64},
		DelegatedPools:   []netip.Prefix{netip.MustParsePrefix("2001:db8:100::/40"), netip.MustParsePrefix("2001:db8:2000::/36")},
		Uplink:           Uplink{Interface: "eth0", Gateway: netip.MustParseAddr("fe80::1%eth0"), NoRoute: NoRoutePass},
		Downlinks: []Downlink{{
			Interface:      "eth1",
			LinkAddress:    netip.MustParseAddr("2001:db8:100::1"),
			InterfaceID:    "port-1",
			LinkType:       PointToPoint,
			MaxDelegations: 16,
			MaxPerClient:   8,
			LoopPolicy:     LoopDrop,
			MaxClientRate:  100,
			MaxClientBurst: 200,
		}, {
			Interface:      "eth2",
			InterfaceID:    "eth2",
			LinkType:       MultiAccess,
			MaxDelegations: 1024,
			MaxPerClient:   8,
			LoopPolicy:     LoopDrop,
			MaxClientRate:  DefaultMaxClientRate,
			MaxClientBurst: DefaultMaxClientBurst,
			DelegatedPools: []netip.Prefix{netip.MustParsePrefix("2001:db8:2000::/36")},
			AllowedSources: []netip.Prefix{netip.MustParsePrefix("2001:db8:200::/64")},
			LoopOverrides: []LoopOverride{
				{Client: []byte{0x00, 0x01, 0x00, 0x01, 0x5f, 0x00, 0x00, 0x01, 0x02, 0x00, 0x5e, 0x00, 0x53, 0x02}, Policy: LoopForward},
				{Prefix: netip.MustParsePrefix("2001:db8:2400::/40"), Policy: LoopForward},
				{Prefix: netip.MustParsePrefix("2001:db8:2400:ff00::/56"), Policy: LoopDrop},
			},
		}},
		Dataplane: Dataplane{Mode: DataplaneKernel, Queues: 1, FrameSize: 2048, ICMPRate: 100},
		Kernel:    Kernel{Table: 100},
		Leasequery: Leasequery{
			Servers: []netip.AddrPort{netip.MustParseAddrPort("[2001:db8:ffff::547]:547")},
			Query:   QueryRelayID, OnStart: true,
			ConnTimeout: 30 * time.Second, DataTimeout: 30 * time.Second, MaxRetry: time.Minute,
		},
		Release: Release{
			Mode: ReleaseRequest, Server: netip.MustParseAddrPort("[2001:db8:ffff::547]:547"),
			Timeout: time.Second, MaxRC: 4,
			Triggers: ReleaseTriggers{Operator: true, ClientReplaced: true, ClientMoved: true},
			Types:    ReleaseTypes{Request: 250, Reply: 251},
		},
		LogLevel: slog.LevelInfo,
		BGP: &BGP{
			ASN: 65001, RouterID: netip.MustParseAddr("192.0.2.1"),
			Neighbors:   []BGPNeighbor{{Address: netip.MustParseAddr("2001:db8:ffff::1"), ASN: 65000, Port: 179}},
			NextHop:     netip.MustParseAddr("2001:db8:ffff::2"),
			Communities: []uint32{65001<<16 | 100},
			Aggregates:  []netip.Prefix{netip.MustParsePrefix("2001:db8:100::/40")},
			RestartTime: 120 * time.Second, ListenPort: 179,
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Load(reference.yaml):\n got %+v\nwant %+v", c, want)
	}
	lim := c.PortLimits()
	if got := lim["eth1"]; got != (binding.PortLimits{MaxPerClient: 8, MaxDelegations: 16}) {
		t.Errorf("PortLimits()[eth1] = %+v", got)
	}
}

const minimal = `
state_dir: /var/lib/pdrelay
servers: [fe80::547]
uplink: {interface: up0}
downlinks:
  - interface: down0
`

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		StateDir:   "/var/lib/pdrelay",
		APISocket:  DefaultAPISocket,
		Servers:    []netip.Addr{netip.MustParseAddr("fe80::547%up0")}, // zone from the uplink
		ServerPort: DefaultServerPort,
		Uplink:     Uplink{Interface: "up0", NoRoute: NoRoutePass},
		Downlinks: []Downlink{{Interface: "down0", InterfaceID: "down0", LinkType: PointToPoint, MaxDelegations: DefaultMaxDelegations, MaxPerClient: 8, LoopPolicy: LoopDrop,
			MaxClientRate: DefaultMaxClientRate, MaxClientBurst: DefaultMaxClientBurst}},
		DelegatedLengths: DefaultDelegatedLengths,
		Dataplane:        Dataplane{Mode: DataplaneKernel, Queues: DefaultQueues, FrameSize: DefaultFrameSize, ICMPRate: DefaultICMPRate},
		Kernel:           Kernel{Table: TableMain},
		Leasequery:       Leasequery{Query: QueryRelayID, ConnTimeout: 30 * time.Second, DataTimeout: 30 * time.Second, MaxRetry: time.Minute},
		Release: Release{Mode: ReleaseOff, Server: netip.MustParseAddrPort("[fe80::547%up0]:547"), Timeout: time.Second, MaxRC: 4,
			Triggers: ReleaseTriggers{Operator: true, ClientReplaced: true, ClientMoved: true}, Types: ReleaseTypes{250, 251}},
		LogLevel: slog.LevelInfo,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Parse(minimal):\n got %+v\nwant %+v", c, want)
	}
}

func TestValid(t *testing.T) {
	for _, tc := range []struct {
		name  string
		yaml  string
		check func(*Config) bool
	}{
		{"explicit zero limits mean unlimited", minimal + "    max_delegations: 0\n    max_per_client: 0\n",
			func(c *Config) bool { return c.Downlinks[0].MaxDelegations == 0 && c.Downlinks[0].MaxPerClient == 0 }},
		{"relay_id plain hex", minimal + "relay_id: 000300010200005e0001\n",
			func(c *Config) bool { return len(c.RelayID) == 10 }},
		{"relay_id with colons, unquoted", minimal + "relay_id: 00:03:00:01\n",
			func(c *Config) bool { return string(c.RelayID) == "\x00\x03\x00\x01" }},
		{"link-local multicast server", strings.Replace(minimal, "[fe80::547]", "[ff02::1:2]", 1) + "trusted_servers: [fe80::/64]\n",
			func(c *Config) bool {
				return c.Servers[0] == netip.MustParseAddr("ff02::1:2%up0") &&
					reflect.DeepEqual(c.TrustedServers, []netip.Prefix{netip.MustParsePrefix("fe80::/64")})
			}},
		{"one delegated length", minimal + "delegated_lengths: 56\n",
			func(c *Config) bool { return c.DelegatedLengths == LengthRange{56, 56} }},
		{"delegated lengths up to 128", minimal + "delegated_lengths: ' 48 - 128 '\n",
			func(c *Config) bool { return c.DelegatedLengths == LengthRange{48, 128} }},
		{"pools and per-port pools", minimal + "    delegated_pools: [2001:db8:100::/40]\ndelegated_pools: [fc00::/7]\n",
			func(c *Config) bool {
				d := &c.Downlinks[0]
				return reflect.DeepEqual(c.Pools(d), []netip.Prefix{netip.MustParsePrefix("2001:db8:100::/40")}) &&
					reflect.DeepEqual(c.DelegatedPools, []netip.Prefix{netip.MustParsePrefix("fc00::/7")})
			}},
		{"global pools apply to a port without its own", minimal + "delegated_pools: [2001:db8::/32]\n",
			func(c *Config) bool {
				return reflect.DeepEqual(c.Pools(&c.Downlinks[0]), []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")})
			}},
		{"trust and rate keys", minimal + "    trust_relay_forward: true\n    max_client_rate: 0\n",
			func(c *Config) bool {
				d := c.Downlinks[0]
				return d.TrustRelayForward && d.MaxClientRate == 0 && d.MaxClientBurst == 0
			}},
		{"rate sets the default burst", minimal + "    max_client_rate: 1000\n",
			func(c *Config) bool {
				return c.Downlinks[0].MaxClientRate == 1000 && c.Downlinks[0].MaxClientBurst == 2000
			}},
		{"burst given", minimal + "    max_client_burst: 5\n",
			func(c *Config) bool { return c.Downlinks[0].MaxClientRate == 100 && c.Downlinks[0].MaxClientBurst == 5 }},
		{"relay_id all digits stays a string", minimal + "relay_id: 0001000100\n",
			func(c *Config) bool { return string(c.RelayID) == "\x00\x01\x00\x01\x00" }},
		{"empty value is the default", minimal + "server_port:\n",
			func(c *Config) bool { return c.ServerPort == 547 }},
		{"log level", minimal + "log_level: debug\n",
			func(c *Config) bool { return c.LogLevel == slog.LevelDebug }},
		{"release types above the assigned range", minimal + "release: {message_types: {request: 38, reply: 255}}\n",
			func(c *Config) bool { return c.Release.Types == ReleaseTypes{38, 255} }},
		{"release defaults", minimal,
			func(c *Config) bool {
				r := c.Release
				return r.Mode == ReleaseOff && r.Server == netip.MustParseAddrPort("[fe80::547%up0]:547") &&
					r.Timeout == time.Second && r.MaxRC == 4 && r.Triggers == ReleaseTriggers{true, true, true, 0} &&
					r.Types == ReleaseTypes{250, 251}
			}},
		{"release client-release with unavailable trigger", minimal + "release: {mode: client-release, triggers: {client_replaced: false, client_unavailable: 30m}}\n",
			func(c *Config) bool {
				return c.Release.Mode == ReleaseClient && c.Release.Triggers == ReleaseTriggers{true, false, true, 30 * time.Minute}
			}},
		{"leasequery defaults off", minimal,
			func(c *Config) bool {
				lq := c.Leasequery
				return lq.Servers == nil && !lq.OnStart && lq.Query == QueryRelayID && lq.ConnTimeout == 30*time.Second
			}},
		{"leasequery servers and ports", minimal + "leasequery: {servers: [2001:db8::547, \"[2001:db8::1]:5470\", fe80::1], port: 1547, on_start: false, query: remote-id, remote_id: 00000009ab}\n",
			func(c *Config) bool {
				lq := c.Leasequery
				return len(lq.Servers) == 3 && lq.Servers[0] == netip.MustParseAddrPort("[2001:db8::547]:1547") &&
					lq.Servers[1] == netip.MustParseAddrPort("[2001:db8::1]:5470") &&
					lq.Servers[2] == netip.MustParseAddrPort("[fe80::1%up0]:1547") &&
					!lq.OnStart && lq.Query == QueryRemoteID && string(lq.RemoteID) == "\x00\x00\x00\x09\xab"
			}},
		{"no_route drop", strings.Replace(minimal, "{interface: up0}", "{interface: up0, no_route: drop}", 1),
			func(c *Config) bool { return c.Uplink.NoRoute == NoRouteDrop }},
		{"dataplane sizes", minimal + "dataplane: {mode: xdp, queues: 4, frame_size: 4096, icmp_rate: 0}\n",
			func(c *Config) bool {
				return c.Dataplane == Dataplane{Mode: DataplaneXDP, Queues: 4, FrameSize: 4096, ICMPRate: 0}
			}},
		{"dataplane mode kernel", minimal + "dataplane: {mode: kernel}\n",
			func(c *Config) bool {
				return c.Dataplane.Mode == DataplaneKernel && c.Kernel == Kernel{Table: TableMain}
			}},
		{"kernel table by name", minimal + "kernel: {table: main, flush_on_stop: true}\n",
			func(c *Config) bool { return c.Kernel == Kernel{Table: 254, FlushOnStop: true} }},
		{"kernel table by number", minimal + "kernel: {table: 4294967295}\n",
			func(c *Config) bool { return c.Kernel == Kernel{Table: 1<<32 - 1} }},
		{"kernel table quoted", minimal + "kernel: {table: '100'}\n",
			func(c *Config) bool { return c.Kernel.Table == 100 }},
		{"kernel keys left empty are the defaults", minimal + "kernel: {table: , flush_on_stop: }\n",
			func(c *Config) bool { return c.Kernel == Kernel{Table: TableMain} }},
		{"dataplane keys left empty are the defaults", minimal + "dataplane: {queues: , frame_size: , icmp_rate: }\n",
			func(c *Config) bool {
				return c.Dataplane == Dataplane{Mode: DataplaneKernel, Queues: 1, FrameSize: 2048, ICMPRate: 100}
			}},
		{"loop overrides", minimal + "    loop_overrides:\n      - {client: 00:01:aa:bb, policy: forward}\n      - {prefix: 2001:db8::/32, policy: drop}\n      - {prefix: '2001:db8::/48', client: , policy: forward}\n",
			func(c *Config) bool {
				return reflect.DeepEqual(c.Downlinks[0].LoopOverrides, []LoopOverride{
					{Client: []byte{0, 1, 0xaa, 0xbb}, Policy: LoopForward},
					{Prefix: netip.MustParsePrefix("2001:db8::/32"), Policy: LoopDrop},
					{Prefix: netip.MustParsePrefix("2001:db8::/48"), Policy: LoopForward},
				})
			}},
		{"same client on two ports", base + "    loop_overrides: [{client: '0001', policy: forward}]\n  - interface: d2\n    loop_overrides: [{client: '00:01', policy: drop}]\n",
			func(c *Config) bool {
				return len(c.Downlinks[1].LoopOverrides) == 1 && len(c.Downlinks[2].LoopOverrides) == 1
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Errorf("unexpected config %+v", c)
			}
		})
	}
	t.Run("merge key", func(t *testing.T) {
		c, err := Parse([]byte(`
state_dir: /s
servers: [2001:db8::1]
uplink: {interface: up0}
downlinks:
  - &port {interface: d0, link_type: multi-access, max_per_client: 2}
  - <<: *port
    interface: d1
`))
		if err != nil {
			t.Fatal(err)
		}
		if d := c.Downlinks[1]; d.Interface != "d1" || d.LinkType != MultiAccess || d.MaxPerClient != 2 {
			t.Errorf("merged downlink = %+v", d)
		}
	})
}

// base is a valid config in which each error case changes one thing.
const base = `state_dir: /var/lib/pdrelay
servers: [2001:db8::547]
uplink:
  interface: up0
downlinks:
  - interface: d0
  - interface: d1
`

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want string // the full error line expected among the errors
	}{
		{"unknown top key", base + "state_dri: /x\n",
			`config: state_dri: unknown key (known keys: api_socket, `},
		{"unknown downlink key", strings.Replace(base, "- interface: d1", "- interface: d1\n    max_delegation: 3", 1),
			`config: downlinks[1].max_delegation: unknown key`},
		{"unknown uplink key", strings.Replace(base, "interface: up0", "interface: up0\n  gw: fe80::1", 1),
			`config: uplink.gw: unknown key`},
		{"bad link_type", strings.Replace(base, "- interface: d1", "- interface: d1\n    link_type: p2p", 1),
			`config: downlinks[1].link_type: "p2p" is not one of point-to-point, multi-access`},
		{"bad loop_policy", strings.Replace(base, "- interface: d1", "- interface: d1\n    loop_policy: reflect", 1),
			`config: downlinks[1].loop_policy: "reflect" is not one of drop, forward`},
		{"bad server address", strings.Replace(base, "2001:db8::547", "2001:db8::547::1", 1),
			`config: servers[0]: "2001:db8::547::1" is not an IPv6 address`},
		{"IPv4 server", strings.Replace(base, "2001:db8::547", "192.0.2.1", 1),
			`config: servers[0]: "192.0.2.1" is not an IPv6 address`},
		{"zone on a global server", strings.Replace(base, "2001:db8::547", "2001:db8::547%up0", 1),
			`config: servers[0]: "2001:db8::547%up0" has a zone but is not link-local`},
		{"duplicate server", strings.Replace(base, "[2001:db8::547]", "[2001:db8::547, 2001:db8:0::547]", 1),
			`config: servers[1]: "2001:db8:0::547" is also servers[0]`},
		{"bad gateway", strings.Replace(base, "interface: up0", "interface: up0\n  gateway: ff02::1", 1),
			`config: uplink.gateway: "ff02::1" is not a unicast address`},
		{"gateway zone not the uplink", strings.Replace(base, "interface: up0", "interface: up0\n  gateway: fe80::1%d0", 1),
			`config: uplink.gateway: "fe80::1%d0": the zone is not the uplink interface "up0"`},
		{"link-local link_address", strings.Replace(base, "- interface: d1", "- interface: d1\n    link_address: fe80::1", 1),
			`config: downlinks[1].link_address: "fe80::1" is not a global unicast address`},
		{"duplicate link_address", base + "    link_address: 2001:db8::1\n  - interface: d2\n    link_address: 2001:db8::1\n",
			`config: downlinks[2].link_address: "2001:db8::1" is also downlinks[1].link_address`},
		{"duplicate interface", base + "  - interface: d0\n",
			`config: downlinks[2].interface: "d0" is also downlinks[0].interface`},
		{"downlink is the uplink", base + "  - interface: up0\n",
			`config: downlinks[2].interface: "up0" is the uplink interface`},
		{"duplicate interface_id", base + "    interface_id: port-1\n  - interface: d2\n    interface_id: port-1\n",
			`config: downlinks[2].interface_id: "port-1" is also the interface_id of downlinks[1]`},
		{"interface_id clashes with a default", strings.Replace(base, "- interface: d0", "- interface: d0\n    interface_id: d1", 1),
			`config: downlinks[1].interface_id: "d1" (the default: the interface name) is also the interface_id of downlinks[0]`},
		{"empty interface_id", base + "    interface_id: ''\n",
			`config: downlinks[1].interface_id: must not be empty`},
		{"interface name too long", strings.Replace(base, "interface: d1", "interface: a-very-long-name-0", 1),
			`config: downlinks[1].interface: "a-very-long-name-0" is longer than 15 characters`},
		{"interface name with slash", strings.Replace(base, "interface: d1", "interface: d/1", 1),
			`config: downlinks[1].interface: "d/1" is not a valid interface name`},
		{"missing interface", base + "  - link_type: multi-access\n",
			`config: downlinks[2].interface: required`},
		{"missing uplink", strings.Replace(base, "uplink:\n  interface: up0\n", "", 1),
			`config: uplink.interface: required`},
		{"missing servers", strings.Replace(base, "servers: [2001:db8::547]\n", "", 1),
			`config: servers: at least one server address is required`},
		{"empty servers", strings.Replace(base, "[2001:db8::547]", "[]", 1),
			`config: servers: at least one server address is required`},
		{"servers not a list", strings.Replace(base, "[2001:db8::547]", "2001:db8::547", 1),
			`config: servers: expected a list, got "2001:db8::547"`},
		{"missing downlinks", strings.Split(base, "downlinks:")[0],
			`config: downlinks: at least one downlink is required`},
		{"missing state_dir", strings.Replace(base, "state_dir: /var/lib/pdrelay\n", "", 1),
			`config: state_dir: required`},
		{"bad relay_id", base + "relay_id: 00:01:zz\n",
			`config: relay_id: "00:01:zz" is not a DUID in hex: "zz" is not a hex byte`},
		{"odd relay_id", base + "relay_id: 0001f\n",
			`config: relay_id: "0001f" is not a DUID in hex: odd number of hex digits`},
		{"short relay_id", base + "relay_id: '00'\n",
			`config: relay_id: "00" is not a DUID in hex: 1 bytes; a DUID is 2 to 130`},
		{"long relay_id", base + "relay_id: " + strings.Repeat("ab", 131) + "\n",
			`config: relay_id: "` + strings.Repeat("ab", 131) + `" is not a DUID in hex: 131 bytes`},
		{"bad dataplane.mode", base + "dataplane: {mode: dpdk}\n",
			`config: dataplane.mode: "dpdk" is not one of kernel, xdp, xdp-generic, off`},
		{"kernel.table a name other than main", base + "kernel: {table: local}\n",
			`config: kernel.table: "local" is not a routing table: "main" or a number from 1 to 4294967295`},
		{"kernel.table zero", base + "kernel: {table: 0}\n",
			`config: kernel.table: "0" is not a routing table`},
		{"kernel.table too large", base + "kernel: {table: 4294967296}\n",
			`config: kernel.table: "4294967296" is not a routing table`},
		{"kernel.table negative", base + "kernel: {table: -1}\n",
			`config: kernel.table: "-1" is not a routing table`},
		{"kernel.table the local table", base + "kernel: {table: 255}\n",
			`config: kernel.table: "255" is the kernel's local table, no place for delegated routes`},
		{"kernel.table the default table", base + "kernel: {table: 253}\n",
			`config: kernel.table: "253" is the kernel's default table`},
		{"kernel.table a list", base + "kernel: {table: [1]}\n",
			`config: kernel.table: expected a single value, got a list`},
		{"kernel.flush_on_stop not a bool", base + "kernel: {flush_on_stop: sometimes}\n",
			`config: kernel.flush_on_stop: "sometimes" is not true or false`},
		{"unknown kernel key", base + "kernel: {protocol: 42}\n",
			`config: kernel.protocol: unknown key (known keys: flush_on_stop, table)`},
		{"release type collides with relay-reply", base + "release: {message_types: {request: 13}}\n",
			`config: release.message_types.request: 13 is assigned by IANA (relay-reply); choose an unassigned type, 38..255`},
		{"release type out of range", base + "release: {message_types: {reply: 256}}\n",
			`config: release.message_types.reply: 256 is not a message type (1..255)`},
		{"release types equal", base + "release: {message_types: {request: 240, reply: 240}}\n",
			`config: release.message_types.reply: 240 is also the request type`},
		{"old release_request key", base + "release_request: {message_type: 240}\n",
			`config: release_request: this key moved: it is now release.message_types (request, reply)`},
		{"bad release mode", base + "release: {mode: always}\n",
			`config: release.mode: "always" is not one of off, release-request, client-release`},
		{"bad release server", base + "release: {server: \"[ff02::1:2]:547\"}\n",
			`config: release.server: "[ff02::1:2]:547" is not a unicast address`},
		{"bad release timeout", base + "release: {timeout: 5}\n",
			`config: release.timeout: "5" has no unit; write 5s for seconds`},
		{"bad release max_rc", base + "release: {max_rc: 0}\n",
			`config: release.max_rc: 0 is not a number of transmissions (1..100)`},
		{"bad unavailable trigger", base + "release: {triggers: {client_unavailable: soon}}\n",
			`config: release.triggers.client_unavailable: "soon" is not a duration such as 30s or 2m`},
		{"bad leasequery query", base + "leasequery: {servers: [2001:db8::547], query: by-mac}\n",
			`config: leasequery.query: "by-mac" is not one of relay-id, link-address, remote-id`},
		{"remote-id query without remote_id", base + "leasequery: {servers: [2001:db8::547], query: remote-id}\n",
			`config: leasequery.remote_id: required with query remote-id`},
		{"short remote_id", base + "leasequery: {remote_id: 0001}\n",
			`config: leasequery.remote_id: "0001" is too short`},
		{"multicast leasequery server", base + "leasequery: {servers: [ff05::1:3]}\n",
			`config: leasequery.servers[0]: "ff05::1:3" is not a unicast server address`},
		{"duplicate leasequery server", base + "leasequery: {servers: [2001:db8::547, \"[2001:db8::547]:547\"]}\n",
			`config: leasequery.servers[1]: "[2001:db8::547]:547" is also leasequery.servers[0]`},
		{"per_link needs link addresses", base + "leasequery: {servers: [2001:db8::547], per_link: true}\n",
			`config: downlinks[0].link_address: required with leasequery.query link-address or per_link`},
		{"link-address query needs link addresses", base + "leasequery: {servers: [2001:db8::547], query: link-address}\n",
			`config: downlinks[0].link_address: required with leasequery.query link-address or per_link`},
		{"bad leasequery port", base + "leasequery: {port: 0}\n",
			`config: leasequery.port: 0 is not a TCP port (1..65535)`},
		{"multicast server without trusted_servers", strings.Replace(base, "[2001:db8::547]", "[2001:db8::547, ff05::1:3]", 1),
			`config: servers[1]: "ff05::1:3" is a multicast group, and trusted_servers is not set`},
		{"trusted_servers everything", base + "trusted_servers: ['::/0']\n",
			`config: trusted_servers[0]: "::/0" would trust every address`},
		{"trusted_servers multicast", base + "trusted_servers: ['ff05::/16']\n",
			`config: trusted_servers[0]: "ff05::/16" is multicast`},
		{"trusted_servers not a prefix", base + "trusted_servers: [2001:db8::1]\n",
			`config: trusted_servers[0]: "2001:db8::1" is not an IPv6 prefix`},
		{"bad delegated_lengths", base + "delegated_lengths: 64-48\n",
			`config: delegated_lengths: "64-48" runs backwards; write MIN-MAX`},
		{"delegated_lengths out of range", base + "delegated_lengths: 0-64\n",
			`config: delegated_lengths: "0-64" is outside 1..128`},
		{"delegated_lengths garbage", base + "delegated_lengths: big\n",
			`config: delegated_lengths: "big" is not a prefix length or a range of them`},
		{"pool in reserved space", base + "delegated_pools: ['64:ff9b::/96']\n",
			`config: delegated_pools[0]: "64:ff9b::/96" overlaps ::/8, which is never delegated`},
		{"multicast pool on a port", base + "    delegated_pools: ['ff00::/8']\n",
			`config: downlinks[1].delegated_pools[0]: "ff00::/8" overlaps ff00::/8, which is never delegated`},
		{"pool longer than every delegation", base + "delegated_pools: ['2001:db8::/80']\n",
			`config: delegated_pools[0]: "2001:db8::/80" is longer than the longest delegated length (delegated_lengths 32-64)`},
		{"pool with host bits", base + "delegated_pools: ['2001:db8::1/48']\n",
			`config: delegated_pools[0]: "2001:db8::1/48" has bits set past the prefix length; did you mean 2001:db8::/48?`},
		{"negative max_client_rate", base + "    max_client_rate: -1\n",
			`config: downlinks[1].max_client_rate: -1 is not a rate of 0..1000000 messages a second (0: no limit)`},
		{"zero max_client_burst", base + "    max_client_burst: 0\n",
			`config: downlinks[1].max_client_burst: 0 is not a burst of 1..1000000 messages`},
		{"trust_relay_forward not a bool", base + "    trust_relay_forward: maybe\n",
			`config: downlinks[1].trust_relay_forward: "maybe" is not`},
		{"negative max_delegations", base + "    max_delegations: -1\n",
			`config: downlinks[1].max_delegations: -1 is negative; use 0 for unlimited`},
		{"negative max_per_client", base + "    max_per_client: -8\n",
			`config: downlinks[1].max_per_client: -8 is negative; use 0 for unlimited`},
		{"limit not a number", base + "    max_per_client: eight\n",
			`config: downlinks[1].max_per_client: "eight" is not an integer`},
		{"bool not a bool", base + "    loop_icmp: maybe\n",
			`config: downlinks[1].loop_icmp: "maybe" is not true or false`},
		{"downlink not a mapping", base + "  - d2\n",
			`config: downlinks[2]: expected a mapping of keys, got "d2"`},
		{"repeated key", base + "state_dir: /other\n",
			`config: state_dir: given twice (first at line 1)`},
		{"bad server_port", base + "server_port: 0\n",
			`config: server_port: 0 is not a UDP port (1..65535)`},
		{"bad metrics_listen", base + "metrics_listen: localhost\n",
			`config: metrics_listen: "localhost" is not host:port`},
		{"bad log_level", base + "log_level: verbose\n",
			`config: log_level: "verbose" is not one of debug, info, warn, error`},
		{"allowed source not a prefix", base + "    allowed_sources: [2001:db8::1]\n",
			`config: downlinks[1].allowed_sources[0]: "2001:db8::1" is not an IPv6 prefix`},
		{"allowed source with host bits", base + "    allowed_sources: [2001:db8::1/64]\n",
			`config: downlinks[1].allowed_sources[0]: "2001:db8::1/64" has bits set past the prefix length; did you mean 2001:db8::/64?`},
		{"socket path too long", base + "api_socket: /" + strings.Repeat("s", 107) + "\n",
			`config: api_socket: "/` + strings.Repeat("s", 107) + `" is longer than a unix socket path may be (107 bytes)`},
		{"bad no_route", strings.Replace(base, "interface: up0", "interface: up0\n  no_route: kernel", 1),
			`config: uplink.no_route: "kernel" is not one of pass, drop`},
		{"zero queues", base + "dataplane: {queues: 0}\n",
			`config: dataplane.queues: 0 is not a number of queues (1..1024)`},
		{"too many queues", base + "dataplane: {queues: 1025}\n",
			`config: dataplane.queues: 1025 is not a number of queues (1..1024)`},
		{"queues not a number", base + "dataplane: {queues: all}\n",
			`config: dataplane.queues: "all" is not an integer`},
		{"bad frame_size", base + "dataplane: {frame_size: 3000}\n",
			`config: dataplane.frame_size: 3000 is not one of 2048, 4096`},
		{"negative icmp_rate", base + "dataplane: {icmp_rate: -1}\n",
			`config: dataplane.icmp_rate: -1 is not a rate of 0..1000000 per second (0 sends none)`},
		{"huge icmp_rate", base + "dataplane: {icmp_rate: 1000001}\n",
			`config: dataplane.icmp_rate: 1000001 is not a rate of 0..1000000 per second`},
		{"unknown dataplane key", base + "dataplane: {queue: 2}\n",
			`config: dataplane.queue: unknown key (known keys: frame_size, icmp_rate, mode, queues)`},
		{"override with neither", base + "    loop_overrides: [{client: '0001', policy: drop}, {policy: drop}]\n",
			`config: downlinks[1].loop_overrides[1]: needs exactly one of client, prefix`},
		{"override with both", base + "    loop_overrides: [{client: '0001', prefix: 2001:db8::/32, policy: drop}]\n",
			`config: downlinks[1].loop_overrides[0]: needs exactly one of client, prefix`},
		{"override policy missing", base + "    loop_overrides: [{prefix: 2001:db8::/32}]\n",
			`config: downlinks[1].loop_overrides[0].policy: required: drop or forward`},
		{"override policy bad", base + "    loop_overrides: [{prefix: 2001:db8::/32, policy: maybe}]\n",
			`config: downlinks[1].loop_overrides[0].policy: "maybe" is not one of drop, forward`},
		{"override client not hex", base + "    loop_overrides: [{client: 00:0g, policy: drop}]\n",
			`config: downlinks[1].loop_overrides[0].client: "00:0g" is not a DUID in hex: "0g" is not a hex byte`},
		{"override client empty", base + "    loop_overrides: [{client: '', policy: drop}]\n",
			`config: downlinks[1].loop_overrides[0].client: "" is not a DUID in hex: 0 bytes; a DUID is 2 to 130`},
		{"override client repeated", base + "    loop_overrides: [{client: '000100', policy: drop}, {client: '00:01:00', policy: forward}]\n",
			`config: downlinks[1].loop_overrides[1].client: "00:01:00" is also loop_overrides[0].client`},
		{"override prefix not a prefix", base + "    loop_overrides: [{prefix: 2001:db8::1, policy: drop}]\n",
			`config: downlinks[1].loop_overrides[0].prefix: "2001:db8::1" is not an IPv6 prefix`},
		{"override prefix IPv4", base + "    loop_overrides: [{prefix: 192.0.2.0/24, policy: drop}]\n",
			`config: downlinks[1].loop_overrides[0].prefix: "192.0.2.0/24" is not an IPv6 prefix`},
		{"override prefix not masked", base + "    loop_overrides: [{prefix: 2001:db8::1/56, policy: drop}]\n",
			`config: downlinks[1].loop_overrides[0].prefix: "2001:db8::1/56" has bits set past the prefix length; did you mean 2001:db8::/56?`},
		{"override prefix repeated", base + "    loop_overrides: [{prefix: 2001:db8::/56, policy: drop}, {client: '0001', policy: drop}, {prefix: '2001:db8:0::/56', policy: forward}]\n",
			`config: downlinks[1].loop_overrides[2].prefix: "2001:db8:0::/56" is also loop_overrides[0].prefix`},
		{"unknown override key", base + "    loop_overrides: [{prefix: 2001:db8::/56, policy: drop, icmp: true}]\n",
			`config: downlinks[1].loop_overrides[0].icmp: unknown key (known keys: client, policy, prefix)`},
		{"overrides not a list", base + "    loop_overrides: {prefix: 2001:db8::/56, policy: drop}\n",
			`config: downlinks[1].loop_overrides: expected a list, got a mapping`},
		{"two documents", base + "---\nstate_dir: /x\n",
			`config: more than one YAML document (line 8)`},
		{"not a mapping", "- a\n- b\n",
			`config: expected a mapping of keys, got a list`},
		{"yaml syntax", "state_dir: [\n",
			`config: yaml: line 1: did not find expected node content`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", c)
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

func TestErrorsCollected(t *testing.T) {
	_, err := Parse([]byte(`
servers: [nope]
uplink: {interface: up0}
downlinks:
  - {interface: d0, link_type: p2p, max_per_client: -1}
`))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v is not a *config.Error", err)
	}
	for _, key := range []string{"state_dir", "servers[0]", "downlinks[0].link_type", "downlinks[0].max_per_client"} {
		if !strings.Contains(err.Error(), "config: "+key+": ") {
			t.Errorf("error does not name %s:\n%v", key, err)
		}
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
}

func TestParseDUID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // hex, or "" for an error
	}{
		{"0001", "0001"},
		{"00:01:AB", "0001ab"},
		{"0:01", ""},
		{"00::01", ""},
		{"00:01:", ""},
		{"", ""},
		{"0x0001", ""},
	} {
		b, err := ParseDUID(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseDUID(%q) = %x, want an error", tc.in, b)
			}
			continue
		}
		if err != nil || hex.EncodeToString(b) != tc.want {
			t.Errorf("ParseDUID(%q) = %x, %v; want %s", tc.in, b, err, tc.want)
		}
	}
}

func TestAliasBlowUp(t *testing.T) {
	var b strings.Builder
	b.WriteString(base + "    allowed_sources: &s [")
	for i := range 2000 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("x")
	}
	b.WriteString("]\n")
	for range 2000 {
		b.WriteString("  - {allowed_sources: *s}\n")
	}
	_, err := Parse([]byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "more than 65536 values") {
		t.Errorf("Parse(alias blow-up) = %.300v", err)
	}
	if n := strings.Count(err.Error(), "\n"); n > maxErrors {
		t.Errorf("%d error lines", n)
	}
}
