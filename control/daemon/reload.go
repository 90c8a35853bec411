package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/pdrelay/pdrelay/control/api"
	"github.com/pdrelay/pdrelay/control/config"
	"github.com/pdrelay/pdrelay/fib"
)

// runReloads reloads the config file on each SIGHUP until ctx ends. A
// relay run without a file (Run) ignores SIGHUP rather than dying of it.
func (d *Daemon) runReloads(ctx context.Context) error {
	hup := d.hup
	if hup == nil {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGHUP)
		defer signal.Stop(ch)
		hup = ch
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			d.log.Info("SIGHUP: reloading the config", "file", d.path)
			_, _ = d.Reload(ctx) // logged either way
		}
	}
}

// Reload reads the config file again and applies it (api.Reloader). A
// file that does not load or validate, or that changes what needs a
// restart, is refused (api.ErrReloadRefused) and the relay keeps its
// config.
func (d *Daemon) Reload(ctx context.Context) (api.ReloadReport, error) {
	if d.path == "" {
		return api.ReloadReport{}, fmt.Errorf("%w: the relay was started without a config file", api.ErrReloadRefused)
	}
	notify(d.log, sdReloading)
	defer notify(d.log, sdReady)
	cfg, err := config.Load(d.path)
	if err != nil {
		d.log.Error("reload refused: the relay keeps its config", "file", d.path, "err", err)
		return api.ReloadReport{}, fmt.Errorf("%w: %w", api.ErrReloadRefused, err)
	}
	return d.ReloadConfig(ctx, cfg)
}

// ReloadConfig applies cfg to the running relay without losing a
// binding or a forwarded packet:
//   - downlinks added are numbered, guarded and routed, then listened on;
//     downlinks removed are no longer listened on, but their bindings
//     keep their routes and sources until they expire or are cleared;
//   - servers, trusted servers, trust flags, rates, Interface-IDs and
//     link-addresses go to the relay between two messages;
//   - limits and policies go to the binding table (bindings over a
//     lowered limit stay; new ones are refused);
//   - allowed_sources go to the FIB and the kernel's tables;
//   - the log level changes at once.
//
// What needs a restart is refused by config.Diff, with the key.
func (d *Daemon) ReloadConfig(ctx context.Context, cfg *config.Config) (api.ReloadReport, error) {
	select {
	case <-d.ready:
	case <-ctx.Done():
		return api.ReloadReport{}, ctx.Err()
	}
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	old := d.cfg
	ch, err := config.Diff(old, cfg)
	if err != nil {
		d.log.Error("reload refused: the relay keeps its config", "err", err)
		return api.ReloadReport{}, fmt.Errorf("%w: %w", api.ErrReloadRefused, err)
	}
	if ch.BGP && (d.adv == nil) != (cfg.BGP == nil) {
		err := &config.RestartError{Key: "bgp", Why: "the BGP speaker is started or stopped with the relay"}
		d.log.Error("reload refused: the relay keeps its config", "err", err)
		return api.ReloadReport{}, fmt.Errorf("%w: %w", api.ErrReloadRefused, err)
	}
	rep := api.ReloadReport{Changed: ch.Keys}
	if ch.Empty() {
		d.log.Info("config reloaded: nothing changed")
		return rep, nil
	}
	// Once begun, a reload is finished even if its caller goes away
	// (`pdrelay reload` interrupted): only the relay's stop cuts it short.
	if err := d.apply(d.runCtx, old, cfg, ch); err != nil {
		d.log.Error("reload failed: the relay keeps its config", "err", err)
		return api.ReloadReport{}, err
	}
	d.cfg = cfg
	d.log.Info("config reloaded", "changed", rep.Changed)
	return rep, nil
}

// apply makes the running parts follow cfg. The steps that can fail come
// first and are undone if a later one fails; from the relay's switch on,
// nothing fails.
func (d *Daemon) apply(ctx context.Context, old, cfg *config.Config, ch *config.Changes) error {
	// Number new downlinks; a port keeps its number for the life of the
	// process (bindings of a removed port keep their routes).
	ports := maps.Clone(d.ports)
	next := fib.PortID(0)
	for _, id := range ports {
		next = max(next, id+1)
	}
	for _, name := range ch.Added {
		if _, ok := ports[name]; !ok {
			ports[name] = next
			next++
		}
	}
	// BGP first: the one step that may fail and then must be undone.
	if ch.BGP {
		if err := d.adv.reconfigure(ctx, cfg); err != nil {
			return err
		}
	}
	undoBGP := func(err error) error {
		if ch.BGP {
			if rerr := d.adv.reconfigure(ctx, old); rerr != nil {
				err = errors.Join(err, fmt.Errorf("bgp back to the old config: %w", rerr))
			}
		}
		return err
	}
	// The kernel's tables next: a new port is guarded and routed before
	// the relay can learn a binding on it.
	if err := d.kr.reconfigure(cfg); err != nil {
		return undoBGP(fmt.Errorf("kernel routes: %w", err))
	}
	if d.guard != nil {
		if err := d.guard.reconfigure(cfg); err != nil {
			return undoBGP(fmt.Errorf("kernel guard: %w", err))
		}
	}
	err := reloadRelay(ctx, relayReload{conn: d.conn, mgr: d.mgr, relayID: d.relayID, addPorts: d.met.AddPorts, log: d.log}, cfg)
	if err != nil {
		if d.guard != nil {
			if rerr := d.guard.reconfigure(old); rerr != nil {
				err = errors.Join(err, fmt.Errorf("kernel guard back to the old config: %w", rerr))
			}
		}
		return undoBGP(err)
	}
	d.ports = ports

	sources := map[string][]netip.Prefix{}
	for _, dl := range old.Downlinks {
		sources[dl.Interface] = nil // a removed port's allowed_sources go
	}
	for _, dl := range cfg.Downlinks {
		sources[dl.Interface] = dl.AllowedSources
	}
	if d.fibLive {
		if err := d.fw.reconfigure(ports, sources, clientLoopPolicies(cfg)); err != nil {
			return err // validated by config.Load: not expected
		}
	}
	if d.guard != nil && slices.ContainsFunc(ch.Changed, func(c config.DownlinkChange) bool { return c.Has("loop_overrides") }) {
		// A client's own policy is given per binding: give them all again.
		if err := d.mgr.Do(ctx, d.guard.redelegate); err != nil {
			return err
		}
	}
	if d.level != nil {
		d.level.Set(cfg.LogLevel)
	}
	for _, name := range ch.Added {
		d.log.Info("downlink added", "interface", name, "port", ports[name])
	}
	for _, name := range ch.Removed {
		d.log.Info("downlink removed: its bindings keep their routes until they expire or are cleared", "interface", name)
	}
	return nil
}
