package daemon

import (
	"context"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/api"
	"github.com/pdrelay/pdrelay/control/bgp"
	"github.com/pdrelay/pdrelay/control/config"
)

func TestSpeakerConfig(t *testing.T) {
	cfg, err := config.Parse([]byte(`state_dir: /s
servers: [2001:db8::547]
uplink: {interface: up0}
downlinks: [{interface: dl0}]
bgp:
  asn: 65001
  router_id: 192.0.2.1
  neighbors:
    - {address: fd00:53::2, asn: 65000, passive: true, password: k}
    - {address: 192.0.2.9, asn: 65002, port: 1179}
  communities: ['65001:100']
  aggregates: [2001:db8:8000::/40]
  graceful_restart_time: 30s
`))
	if err != nil {
		t.Fatal(err)
	}
	uplink := netip.MustParseAddr("fd00:53::1")
	asked := ""
	got, err := speakerConfig(cfg, func(ifname string) netip.Addr { asked = ifname; return uplink })
	if err != nil {
		t.Fatal(err)
	}
	want := bgp.Config{
		ASN: 65001, RouterID: netip.MustParseAddr("192.0.2.1"), NextHop: uplink,
		Neighbors: []bgp.Neighbor{
			{Address: netip.MustParseAddr("fd00:53::2"), ASN: 65000, Passive: true, Password: "k", Port: 179},
			{Address: netip.MustParseAddr("192.0.2.9"), ASN: 65002, Port: 1179},
		},
		Communities: []uint32{65001<<16 | 100}, Aggregates: []netip.Prefix{netip.MustParsePrefix("2001:db8:8000::/40")},
		RestartTime: 30 * time.Second, ListenPort: 179,
	}
	if asked != "up0" || !reflect.DeepEqual(got, want) {
		t.Errorf("speakerConfig asked %q:\n got %+v\nwant %+v", asked, got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("the Speaker refuses it: %v", err)
	}

	// A configured next hop is used as is; listen_port 0 listens nowhere.
	cfg.BGP.NextHop = netip.MustParseAddr("2001:db8::1")
	cfg.BGP.ListenPort = 0
	cfg.BGP.Neighbors[0].Passive = false
	got, err = speakerConfig(cfg, func(string) netip.Addr { t.Error("uplink asked"); return netip.Addr{} })
	if err != nil || got.NextHop != cfg.BGP.NextHop || got.ListenPort != -1 {
		t.Errorf("got %+v, %v; want next hop %s, listen port -1", got, err, cfg.BGP.NextHop)
	}

	// No next hop anywhere: the start fails with the key.
	cfg.BGP.NextHop = netip.Addr{}
	_, err = speakerConfig(cfg, func(string) netip.Addr { return netip.Addr{} })
	if err == nil || !strings.HasPrefix(err.Error(), "bgp.next_hop: not set, and the uplink up0 has no global IPv6 address") {
		t.Errorf("err = %v", err)
	}
}

func TestBGPStatusJSON(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	st := bgp.Status{ASN: 65001, RouterID: netip.MustParseAddr("192.0.2.1"), NextHop: netip.MustParseAddr("fd00::1"),
		Prefixes: 3, Delegated: 2, Sessions: []bgp.Session{
			{Peer: netip.MustParseAddr("fd00::2"), PeerASN: 65000, State: "established", Since: now.Add(-time.Hour),
				PrefixesSent: 3, PrefixesReceived: 1, UpdatesSent: 5, UpdatesReceived: 2, GracefulRestart: true},
			{Peer: netip.MustParseAddr("fd00::3"), PeerASN: 65000, State: "idle", Since: now.Add(-time.Minute), Flaps: 1, LastError: "read_failed"},
			{Peer: netip.MustParseAddr("fd00::4"), PeerASN: 65000, State: "active"},
		}}
	up, down := now.Add(-time.Hour), now.Add(-time.Minute)
	want := api.BGPStatusJSON{ASN: 65001, RouterID: "192.0.2.1", NextHop: "fd00::1", Prefixes: 3, Delegated: 2,
		Sessions: []api.BGPSessionJSON{
			{Peer: "fd00::2", PeerASN: 65000, State: "established", Since: &up, UptimeSeconds: 3600,
				PrefixesSent: 3, PrefixesReceived: 1, UpdatesSent: 5, UpdatesReceived: 2, GracefulRestart: true},
			{Peer: "fd00::3", PeerASN: 65000, State: "idle", Since: &down, Flaps: 1, LastError: "read_failed"},
			{Peer: "fd00::4", PeerASN: 65000, State: "active"},
		}}
	if got := bgpStatusJSON(st, now); !reflect.DeepEqual(got, want) {
		t.Errorf("bgpStatusJSON:\n got %+v\nwant %+v", got, want)
	}
}

// A nil advertiser (no bgp key) adds no sink and no part, and a reload
// may not add or remove the section.
func TestNoAdvertiser(t *testing.T) {
	var a *advertiser
	if s := a.sinks(nil); len(s) != 0 {
		t.Errorf("%d sinks", len(s))
	}
	a.start(func(string, func() error) { t.Error("a part was spawned") }, context.Background(), nil, nil, nil)
	if err := a.reconfigure(context.Background(), &config.Config{}); err != nil {
		t.Error(err)
	}
	if err := a.reconfigure(context.Background(), &config.Config{BGP: &config.BGP{}}); err == nil {
		t.Error("adding bgp on reload accepted")
	}
}
