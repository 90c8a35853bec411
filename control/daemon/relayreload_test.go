package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/config"
	"github.com/pdrelay/pdrelay/control/relay"
)

// inRRNS runs fn with the test goroutine's thread in a new network
// namespace of its own, deleted after (inNewNS, guard_test.go).
func inRRNS(t *testing.T, fn func()) {
	t.Helper()
	inNewNS(t, func(int) { fn() })
}

func relayYAML(downlinks string) string {
	return `state_dir: /nonexistent
servers: [2001:db8:ffff::547]
uplink: {interface: up0}
downlinks:
` + downlinks
}

// TestReloadRelay: reloadRelay adds a port to a running relay and sets
// the binding table's limits and policy for it (and the changed ones of
// the port that stays); a reload naming a port that does not exist fails
// naming it and changes nothing.
func TestReloadRelay(t *testing.T) {
	inRRNS(t, func() {
		for _, p := range []string{"up0", "dla", "dlb"} {
			if out, err := exec.Command("ip", "link", "add", p, "type", "veth", "peer", "name", p+"p").CombinedOutput(); err != nil {
				t.Fatalf("%v %s", err, out)
			}
			for _, l := range []string{p, p + "p"} {
				if out, err := exec.Command("ip", "link", "set", l, "up").CombinedOutput(); err != nil {
					t.Fatalf("%v %s", err, out)
				}
			}
		}
		cfg1, err := config.Parse([]byte(relayYAML(`  - {interface: dla, max_delegations: 4, delegated_pools: [2001:db8:100::/40]}
`)))
		if err != nil {
			t.Fatal(err)
		}
		cfg2, err := config.Parse([]byte(relayYAML(`  - {interface: dla, max_delegations: 2, delegated_pools: [2001:db8:100::/40]}
  - {interface: dlb, max_per_client: 1, interface_id: port-b, delegated_pools: [2001:db8:200::/40]}
`)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := config.Diff(cfg1, cfg2); err != nil {
			t.Fatal(err)
		}
		log := slog.New(slog.DiscardHandler)
		relayID := []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 1}
		addrs := readPortAddrs(cfg1)
		eng, err := relay.NewEngine(engineConfig(cfg1, relayID, addrs))
		if err != nil {
			t.Fatal(err)
		}
		conn, err := relay.Listen(eng, relayConnConfig(cfg1), log)
		if err != nil {
			t.Fatal(err)
		}
		table := binding.NewTable(defaultPortLimits, cfg1.PortLimits())
		table.SetPolicy(bindingPolicy(cfg1, addrs))
		mgr := binding.NewManager(table, nil, log)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{}, 2)
		go func() { mgr.Run(ctx); done <- struct{}{} }()
		go func() { conn.Run(ctx, mgr); done <- struct{}{} }()
		defer func() { cancel(); <-done; <-done }()

		var added []string
		r := relayReload{conn: conn, mgr: mgr, relayID: relayID, addPorts: func(p ...string) { added = p }, log: log}
		if err := reloadRelay(ctx, r, cfg2); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, p := range eng.Ports() {
			names = append(names, p.Name+"="+string(p.InterfaceID))
		}
		if !slices.Equal(names, []string{"dla=dla", "dlb=port-b"}) {
			t.Errorf("relay ports %v", names)
		}
		if !slices.Equal(added, []string{"dla", "dlb"}) {
			t.Errorf("metrics ports %v", added)
		}
		check := func(want map[string]binding.PortLimits, refused, allowed binding.Key) {
			t.Helper()
			err := mgr.Do(ctx, func(tb *binding.Table) {
				for p, l := range want {
					if got := tb.Limits(p); got != l {
						t.Errorf("limits of %s: %+v, want %+v", p, got, l)
					}
				}
				var re *binding.RefusedError
				if err := tb.Check(refused); !errors.As(err, &re) || re.Reason != binding.RefusePool {
					t.Errorf("Check %s on %s: %v, want refused (pool)", refused.Prefix, refused.Port, err)
				}
				if err := tb.Check(allowed); err != nil {
					t.Errorf("Check %s on %s: %v", allowed.Prefix, allowed.Port, err)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		key := func(port, p string) binding.Key {
			return binding.Key{Port: port, DUID: "c", IAID: 1, Prefix: netip.MustParsePrefix(p)}
		}
		after := map[string]binding.PortLimits{
			"dla": {MaxPerClient: 8, MaxDelegations: 2},
			"dlb": {MaxPerClient: 1, MaxDelegations: config.DefaultMaxDelegations},
		}
		check(after, key("dlb", "2001:db8:100::/56"), key("dlb", "2001:db8:200::/56"))

		// A port that does not exist: refused, naming it; the table keeps
		// the limits and policy of cfg2.
		cfg3, err := config.Parse([]byte(relayYAML(`  - {interface: dla, max_delegations: 1, delegated_pools: [2001:db8:100::/40]}
  - {interface: nosuch0, delegated_pools: [2001:db8:300::/40]}
`)))
		if err != nil {
			t.Fatal(err)
		}
		if err := reloadRelay(ctx, r, cfg3); err == nil || !strings.Contains(err.Error(), "nosuch0") {
			t.Errorf("reload with a missing port: %v, want an error naming nosuch0", err)
		}
		check(after, key("dlb", "2001:db8:300::/56"), key("dlb", "2001:db8:200::/56"))
		if len(eng.Ports()) != 2 {
			t.Errorf("relay ports after the refused reload: %d", len(eng.Ports()))
		}
	})
}
