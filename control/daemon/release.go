package daemon

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/config"
	"github.com/pdrelay/pdrelay/control/relay"
	"github.com/pdrelay/pdrelay/control/release"
)

// releasing wires relay-initiated release (control/release): the
// Releaser that `pdrelay clear --release` and the triggers use, and the
// triggers, fed by the binding manager. sink and refused are handed to
// the manager before the triggers exist; they do nothing until start.
type releasing struct {
	rel *release.Releaser
	tr  *release.Triggers // nil: mode off
}

func (r *releasing) sink(c []binding.Change) {
	if r.tr != nil {
		r.tr.Sink(c)
	}
}

func (r *releasing) refused(k binding.Key, source string, err error) {
	if r.tr != nil {
		r.tr.Refused(k, source, err)
	}
}

// start builds the Releaser (in mode release-request it opens its socket
// to release.server on the uplink; in client-release it sends through
// conn) and the triggers the config enables, seeded with the restored
// table. It runs before the manager does.
func (r *releasing) start(ctx context.Context, cfg *config.Config, relayID []byte, table *binding.Table,
	mgr *binding.Manager, conn *relay.Conn, reg prometheus.Registerer, log *slog.Logger) error {
	met := release.NewMetrics()
	reg.MustRegister(met)
	rel, err := release.New(ctx, release.ConfigFrom(cfg, relayID), mgr, met, log)
	if err != nil {
		return err
	}
	r.rel = rel
	if cfg.Release.Mode == config.ReleaseClient {
		rel.SetOriginator(conn)
		conn.OnOriginatedReply(rel.HandleReply)
	}
	if cfg.Release.Mode == config.ReleaseOff {
		return nil
	}
	tc := release.TriggerConfig{
		Replaced:     cfg.Release.Triggers.ClientReplaced,
		Moved:        cfg.Release.Triggers.ClientMoved,
		Unavailable:  cfg.Release.Triggers.ClientUnavailable,
		PointToPoint: map[string]bool{},
	}
	for _, d := range cfg.Downlinks {
		if d.LinkType == config.PointToPoint {
			tc.PointToPoint[d.Interface] = true
		}
	}
	if tc.Unavailable > 0 {
		tc.Prober = release.NewNeighProber()
	}
	r.tr = release.NewTriggers(tc, rel.ReleaseFor, mgr, met, log)
	r.tr.Seed(table)
	log.Info("relay-initiated release", "mode", cfg.Release.Mode, "operator", cfg.Release.Triggers.Operator,
		"client_replaced", tc.Replaced, "client_moved", tc.Moved, "client_unavailable", tc.Unavailable)
	return nil
}

// run runs the triggers until ctx ends, then closes the Releaser.
func (r *releasing) run(ctx context.Context) error {
	defer r.rel.Close()
	if r.tr == nil {
		<-ctx.Done()
		return nil
	}
	return r.tr.Run(ctx)
}
