package daemon

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/config"
	"github.com/pdrelay/pdrelay/control/relay"
)

// relayConnConfig is the relay's I/O configuration from cfg.
func relayConnConfig(cfg *config.Config) relay.ConnConfig {
	cc := relay.ConnConfig{Uplink: cfg.Uplink.Interface, Servers: cfg.Servers, ServerPort: int(cfg.ServerPort)}
	for _, d := range cfg.Downlinks {
		cc.Rates = append(cc.Rates, relay.Rate{Rate: d.MaxClientRate, Burst: d.MaxClientBurst})
	}
	return cc
}

// defaultPortLimits are the limits of a port the config does not name
// (none does: every downlink has its own; a removed one's bindings stay).
var defaultPortLimits = binding.PortLimits{MaxPerClient: config.DefaultMaxPerClient, MaxDelegations: config.DefaultMaxDelegations}

// relayReload is what reloadRelay changes in a running relay.
type relayReload struct {
	conn    *relay.Conn
	mgr     *binding.Manager
	relayID []byte // the running relay's: relay_id cannot change at run time
	// addPorts, when set, makes the per-port metrics of ports added
	// (metrics.Metrics.AddPorts).
	addPorts func(ports ...string)
	log      *slog.Logger
}

// reloadRelay applies cfg's relay and binding-table parts to the running
// relay, once config.Diff has accepted cfg against the running config:
// the relay's ports (added, removed, changed), servers, trust and rates
// (relay.Conn.Reconfigure), and the binding table's per-port limits and
// delegation policy. The table's change is posted at the relay's switch
// point, so every binding learned under the new ports is checked against
// the new limits and policy, and every one learned before against the
// old. When a new port's sockets cannot be opened, nothing changes and
// the error names the port.
//
// The address watcher follows the new ports by itself: it reads the
// config in force (Daemon.currentConfig) at each poll.
func reloadRelay(ctx context.Context, r relayReload, cfg *config.Config) error {
	addrs := readPortAddrs(cfg)
	pol := bindingPolicy(cfg, addrs)
	limits := cfg.PortLimits()
	var names []string
	for _, d := range cfg.Downlinks {
		names = append(names, d.Interface)
	}
	err := r.conn.Reconfigure(ctx, engineConfig(cfg, r.relayID, addrs), relayConnConfig(cfg), func() {
		// On the relay's goroutine, between two messages: Post keeps the
		// order with the relay's own binding updates.
		r.mgr.Post(func(t *binding.Table) {
			for _, e := range t.SetLimits(defaultPortLimits, limits) {
				r.log.Warn("bindings over a lowered limit kept: no new ones until under it",
					"port", e.Port, "limit", e.Limit, "max", e.Max, "have", e.Have, "clients", e.Clients)
			}
			t.SetPolicy(pol)
		})
		if r.addPorts != nil {
			r.addPorts(names...)
		}
	})
	if err != nil {
		return fmt.Errorf("reload relay: %w", err)
	}
	return nil
}
