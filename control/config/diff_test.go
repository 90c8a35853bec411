package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// edit returns yaml with each old string of pairs (old, new, old, new,
// ...) replaced by its new one; each old must occur exactly once.
func edit(t *testing.T, yaml string, pairs ...string) string {
	t.Helper()
	for i := 0; i < len(pairs); i += 2 {
		if n := strings.Count(yaml, pairs[i]); n != 1 {
			t.Fatalf("edit: %q occurs %d times", pairs[i], n)
		}
		yaml = strings.Replace(yaml, pairs[i], pairs[i+1], 1)
	}
	return yaml
}

// The downlinks of testdata/reference.yaml, as edits find them.
const (
	eth1Block  = "  - interface: eth1\n"
	eth2Block  = "  - interface: eth2\n"
	eth3Block  = "  - interface: eth3\n    max_delegations: 64\n"
	xdpMode    = "  mode: xdp-generic "
	kernelMode = "  mode: kernel "
)

// TestDiff compares testdata/reference.yaml (dataplane mode kernel, or
// xdp-generic where the case says) with an edited copy: what a running
// relay applies in place comes back in Changes, what needs a restart as an
// error naming every such key.
func TestDiff(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "reference.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	base := string(b)
	xdp := edit(t, base, kernelMode, xdpMode)
	eth2Tail := base[strings.Index(base, eth2Block):strings.Index(base, "\ndataplane:")]
	withoutEth2 := strings.Replace(base, eth2Tail, "", 1)

	type flags struct{ relay, limits, policy bool }
	for _, tc := range []struct {
		name     string
		old, new string
		keys     []string // Changes.Keys
		added    []string
		removed  []string
		changed  []DownlinkChange
		flags    flags
		check    func(*Changes) bool // the Changes booleans
		restarts []string            // the keys of the error; none: no error
	}{
		{name: "same", old: base, new: base},
		{name: "comments and layout only", old: base,
			new: edit(t, base, "log_level: info          # debug, info, warn or error", "log_level:   info", "server_port: 547\n", "")},
		{name: "downlinks reordered", old: base,
			new: strings.Replace(withoutEth2, eth1Block, strings.TrimPrefix(eth2Tail, "\n")+"\n"+eth1Block, 1)},
		{name: "downlink added", old: base, new: edit(t, base, eth1Block, eth3Block+eth1Block),
			keys: []string{"downlinks[eth3]"}, added: []string{"eth3"}, flags: flags{true, true, true}},
		{name: "downlink removed", old: base, new: withoutEth2,
			keys: []string{"downlinks[eth2]"}, removed: []string{"eth2"}, flags: flags{relay: true, policy: true}},
		{name: "downlink renamed: another downlink", old: withoutEth2, new: edit(t, withoutEth2, "interface: eth1", "interface: eth5"),
			keys: []string{"downlinks[eth5]", "downlinks[eth1]"}, added: []string{"eth5"}, removed: []string{"eth1"}, flags: flags{true, true, true}},
		{name: "limits lowered", old: base, new: edit(t, base, "max_delegations: 16 ", "max_delegations: 8 ", "max_per_client: 8 ", "max_per_client: 4 "),
			keys:    []string{"downlinks[eth1].max_delegations", "downlinks[eth1].max_per_client"},
			changed: []DownlinkChange{{"eth1", []string{"max_delegations", "max_per_client"}}}, flags: flags{limits: true}},
		{name: "unique_client", old: base, new: edit(t, base, "unique_client: false", "unique_client: true"),
			keys: []string{"downlinks[eth1].unique_client"}, changed: []DownlinkChange{{"eth1", []string{"unique_client"}}}, flags: flags{limits: true}},
		{name: "interface_id and trust", old: base, new: edit(t, base, "interface_id: port-1", "interface_id: port-9", "trust_relay_forward: false", "trust_relay_forward: true"),
			keys:    []string{"downlinks[eth1].interface_id", "downlinks[eth1].trust_relay_forward"},
			changed: []DownlinkChange{{"eth1", []string{"interface_id", "trust_relay_forward"}}}, flags: flags{relay: true}},
		{name: "client rate", old: base, new: edit(t, base, "max_client_rate: 100 ", "max_client_rate: 10 "),
			keys: []string{"downlinks[eth1].max_client_rate"}, changed: []DownlinkChange{{"eth1", []string{"max_client_rate"}}}, flags: flags{relay: true}},
		{name: "servers", old: base, new: edit(t, base, ", ff05::1:3]", ", 2001:db8:ffff::548]"),
			keys: []string{"servers"}, flags: flags{relay: true}, check: func(c *Changes) bool { return c.Servers }},
		{name: "server port", old: base, new: edit(t, base, "server_port: 547", "server_port: 1547"),
			keys: []string{"server_port"}, flags: flags{relay: true}, check: func(c *Changes) bool { return c.Servers }},
		{name: "trusted servers", old: base, new: edit(t, base, "[2001:db8:ffff::/64]", "[2001:db8:fffe::/64]"),
			keys: []string{"trusted_servers"}, flags: flags{relay: true}, check: func(c *Changes) bool { return c.TrustedServers }},
		{name: "delegation policy", old: base, new: edit(t, base, "delegated_lengths: 32-64", "delegated_lengths: 48-60", "[2001:db8:100::/40,", "[2001:db8:300::/40,"),
			keys: []string{"delegated_lengths", "delegated_pools"}, flags: flags{policy: true}, check: func(c *Changes) bool { return c.Delegation }},
		{name: "a downlink's pools", old: base, new: edit(t, base, "pools: [2001:db8:2000::/36]", "pools: [2001:db8:3000::/36]"),
			keys: []string{"downlinks[eth2].delegated_pools"}, changed: []DownlinkChange{{"eth2", []string{"delegated_pools"}}}, flags: flags{policy: true}},
		{name: "allowed sources, mode off", old: base, new: edit(t, base, "[2001:db8:200::/64]", "[2001:db8:201::/64]"),
			keys: []string{"downlinks[eth2].allowed_sources"}, changed: []DownlinkChange{{"eth2", []string{"allowed_sources"}}}, flags: flags{policy: true}},
		{name: "loop policy, mode off", old: base, new: edit(t, base, "    loop_policy: drop\n    loop_overrides:", "    loop_policy: forward\n    loop_overrides:", "loop_icmp: false", "loop_icmp: true"),
			keys:    []string{"downlinks[eth1].loop_icmp", "downlinks[eth2].loop_policy"},
			changed: []DownlinkChange{{"eth1", []string{"loop_icmp"}}, {"eth2", []string{"loop_policy"}}}},
		{name: "log level", old: base, new: edit(t, base, "log_level: info", "log_level: debug"),
			keys: []string{"log_level"}, check: func(c *Changes) bool { return c.LogLevel }},

		// Only a restart applies these.
		{name: "leasequery", old: base, new: edit(t, base, "conn_timeout: 30s", "conn_timeout: 10s"),
			restarts: []string{"leasequery.conn_timeout"}},
		{name: "release", old: base, new: edit(t, base, "  timeout: 1s ", "  timeout: 2s "),
			restarts: []string{"release.timeout"}},
		{name: "state_dir", old: base, new: edit(t, base, "state_dir: /var/lib/pdrelay ", "state_dir: /srv/pdrelay "),
			restarts: []string{"state_dir"}},
		{name: "api_socket, metrics_listen, relay_id, with a reloadable change", old: base,
			new: edit(t, base, "api_socket: /run/pdrelay/pdrelay.sock", "api_socket: /run/pdrelay/other.sock",
				`metrics_listen: "[::1]:9547"`, `metrics_listen: "[::1]:9548"`,
				`relay_id: "00:03:00:01:02:00:5e:00:53:01"`, `relay_id: "00:03:00:01:02:00:5e:00:53:02"`,
				"log_level: info", "log_level: debug"),
			restarts: []string{"api_socket", "metrics_listen", "relay_id"}},
		{name: "relay_id left out (generated)", old: base, new: edit(t, base, `relay_id: "00:03:00:01:02:00:5e:00:53:01"`, ""),
			restarts: []string{"relay_id"}},
		{name: "uplink interface", old: base, new: edit(t, base, "interface: eth0", "interface: eth9"),
			restarts: []string{"uplink.interface", "uplink.gateway"}}, // the gateway's zone is the uplink
		{name: "uplink no_route", old: base, new: edit(t, base, "no_route: pass ", "no_route: drop "),
			restarts: []string{"uplink.no_route"}},
		{name: "dataplane mode", old: base, new: xdp, restarts: []string{"dataplane.mode"}},
		{name: "dataplane keys", old: base, new: edit(t, base, "queues: 1 ", "queues: 4 ", "icmp_rate: 100 ", "icmp_rate: 10 "),
			restarts: []string{"dataplane.queues", "dataplane.icmp_rate"}},
		{name: "xdp: downlink added", old: xdp, new: edit(t, xdp, eth1Block, eth3Block+eth1Block),
			restarts: []string{"downlinks[eth3]"}},
		{name: "xdp: downlink removed", old: xdp, new: strings.Replace(xdp, eth2Tail, "", 1),
			restarts: []string{"downlinks[eth2]"}},
		{name: "xdp: a port's forwarding keys", old: xdp,
			new:      edit(t, xdp, "    link_type: multi-access\n", "", "[2001:db8:200::/64]", "[2001:db8:201::/64]", "loop_icmp: false", "loop_icmp: true"),
			restarts: []string{"downlinks[eth1].loop_icmp", "downlinks[eth2].link_type", "downlinks[eth2].allowed_sources"}},
		{name: "xdp: limits and relay keys", old: xdp, new: edit(t, xdp, "max_delegations: 16 ", "max_delegations: 8 ", "interface_id: port-1", "interface_id: port-9"),
			keys:    []string{"downlinks[eth1].interface_id", "downlinks[eth1].max_delegations"},
			changed: []DownlinkChange{{"eth1", []string{"interface_id", "max_delegations"}}}, flags: flags{relay: true, limits: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, err := Parse([]byte(tc.old))
			if err != nil {
				t.Fatalf("old config: %v", err)
			}
			cfg, err := Parse([]byte(tc.new))
			if err != nil {
				t.Fatalf("new config: %v", err)
			}
			c, err := Diff(old, cfg)
			if len(tc.restarts) > 0 {
				if err == nil {
					t.Fatalf("no error; changes %+v", c)
				}
				if !errors.Is(err, ErrNeedsRestart) {
					t.Errorf("%v is not ErrNeedsRestart", err)
				}
				var keys []string
				for _, e := range unjoin(err) {
					var re *RestartError
					if !errors.As(e, &re) {
						t.Fatalf("%v is not a *RestartError", e)
					}
					if !strings.Contains(e.Error(), re.Key) || !strings.Contains(e.Error(), "needs a restart") {
						t.Errorf("error %q does not name %s and say it needs a restart", e, re.Key)
					}
					keys = append(keys, re.Key)
				}
				if !slices.Equal(keys, tc.restarts) {
					t.Errorf("restart keys %v, want %v\n%v", keys, tc.restarts, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.Keys, tc.keys) || !slices.Equal(c.Added, tc.added) || !slices.Equal(c.Removed, tc.removed) ||
				!reflect.DeepEqual(c.Changed, tc.changed) {
				t.Errorf("changes\n got keys %q added %q removed %q changed %+v\nwant keys %q added %q removed %q changed %+v",
					c.Keys, c.Added, c.Removed, c.Changed, tc.keys, tc.added, tc.removed, tc.changed)
			}
			if got := (flags{c.Relay(), c.Limits(), c.Policy()}); got != tc.flags {
				t.Errorf("Relay, Limits, Policy = %+v, want %+v", got, tc.flags)
			}
			if c.Empty() != (len(tc.keys) == 0) {
				t.Errorf("Empty() = %v", c.Empty())
			}
			// Exactly the booleans the case names are set.
			set := c.Servers || c.TrustedServers || c.Delegation || c.LogLevel || c.BGP
			if tc.check != nil && !tc.check(c) || tc.check == nil && set {
				t.Errorf("flags %+v", *c)
			}
		})
	}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// TestDiffRestartErrorText: the error names the key and both values as
// the config writes them.
func TestDiffRestartErrorText(t *testing.T) {
	for _, tc := range []struct {
		err  *RestartError
		want string
	}{
		{&RestartError{Key: "state_dir", Old: show("/a"), New: show("/b")}, `config: state_dir: "/a" changed to "/b": needs a restart`},
		{&RestartError{Key: "relay_id", Old: show([]byte{0, 3}), New: show([]byte(nil))}, `config: relay_id: 0003 changed to "": needs a restart`},
		{&RestartError{Key: "dataplane.mode", Old: show(DataplaneOff), New: show(DataplaneXDP)}, `config: dataplane.mode: "off" changed to "xdp": needs a restart`},
		{&RestartError{Key: "downlinks[eth3]", Why: "added: the xdp forwarding plane cannot add a port at run time"},
			`config: downlinks[eth3]: needs a restart (added: the xdp forwarding plane cannot add a port at run time)`},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("got  %s\nwant %s", got, tc.want)
		}
	}
}

// TestDiffKnowsEveryField: every field of Config and Downlink is classed
// by Diff (a key added to the config must say whether a reload applies
// it), and the key Diff names for each is the config's own.
func TestDiffKnowsEveryField(t *testing.T) {
	tags := func(t reflect.Type) map[string]bool {
		m := map[string]bool{}
		for i := range t.NumField() {
			m[strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]] = true
		}
		return m
	}
	for _, tc := range []struct {
		typ, raw reflect.Type
		known    func(string) bool
	}{
		{reflect.TypeFor[Config](), reflect.TypeFor[rawConfig](), func(f string) bool { _, ok := topKeys[f]; return ok }},
		{reflect.TypeFor[Downlink](), reflect.TypeFor[rawDownlink](), func(f string) bool { return downlinkKeys[f] }},
		{reflect.TypeFor[Uplink](), reflect.TypeFor[rawUplink](), func(string) bool { return true }},
		{reflect.TypeFor[Dataplane](), reflect.TypeFor[rawDataplane](), func(string) bool { return true }},
	} {
		keys := tags(tc.raw)
		for i := range tc.typ.NumField() {
			f := tc.typ.Field(i).Name
			if !tc.known(f) {
				t.Errorf("%s.%s: config.Diff does not know whether a reload applies it (topKeys, downlinkKeys)", tc.typ.Name(), f)
			}
			if !keys[yamlKey(f)] {
				t.Errorf("%s.%s: Diff would name it %q, not a key of the config", tc.typ.Name(), f, yamlKey(f))
			}
		}
	}
	// The downlink key lists name real keys.
	keys := tags(reflect.TypeFor[rawDownlink]())
	for _, k := range slices.Concat(relayDownlinkKeys, limitDownlinkKeys, policyDownlinkKeys, planeDownlinkKeys) {
		if !keys[k] {
			t.Errorf("%q is not a downlink key", k)
		}
	}
}
