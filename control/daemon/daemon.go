package daemon

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/pdrelay/pdrelay/control/api"
	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/config"
	"github.com/pdrelay/pdrelay/control/metrics"
	"github.com/pdrelay/pdrelay/control/relay"
	"github.com/pdrelay/pdrelay/control/store"
	"github.com/pdrelay/pdrelay/fib"
)

// RunFile loads the config at path and runs the relay until ctx ends.
// Logs go to logOut as text.
func RunFile(ctx context.Context, path string, logOut io.Writer) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: cfg.LogLevel}))
	return Run(ctx, cfg, log)
}

// Run runs the relay described by cfg until ctx ends.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("state_dir %s: %w", cfg.StateDir, err)
	}
	st, err := store.Open(filepath.Join(cfg.StateDir, "bindings.db"), log)
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("close store", "err", err)
		}
	}()
	relayID, err := relayID(cfg, st, log)
	if err != nil {
		return err
	}

	ports := portIDs(cfg)
	// After the store: a second relay started by mistake waits on the
	// store's lock instead of replacing the running one's table.
	guard, err := startGuard(cfg, log, realGuardKernel) // nil: nothing to guard
	if err != nil {
		return err
	}
	if guard != nil {
		defer guard.close()
	}
	ft := fib.NewTable()
	for _, d := range cfg.Downlinks {
		if err := ft.SetAllowedSources(ports[d.Interface], d.AllowedSources); err != nil {
			return fmt.Errorf("downlinks %s allowed_sources: %w", d.Interface, err)
		}
	}
	fs := &fibSink{t: ft, ports: ports, log: log, loop: clientLoopPolicies(cfg)}
	routes, err := newRouteMirror(cfg)
	if err != nil {
		return err
	}
	var mir *mirror
	if routes != nil {
		defer routes.Close()
		mir = &mirror{set: routes}
		if err := mir.beginFill(); err != nil {
			return fmt.Errorf("xdp route map: %w", err)
		}
	}

	var names []string
	for _, d := range cfg.Downlinks {
		names = append(names, d.Interface)
	}
	addrs := readPortAddrs(cfg)
	eng, err := relay.NewEngine(engineConfig(cfg, relayID, addrs))
	if err != nil {
		return err
	}
	met := metrics.New(&eng.Counters, names)
	adv, err := newAdvertiser(cfg, log) // nil without bgp (bgp.go)
	if err != nil {
		return err
	}

	table := binding.NewTable(binding.PortLimits{MaxPerClient: config.DefaultMaxPerClient, MaxDelegations: config.DefaultMaxDelegations}, cfg.PortLimits())
	table.SetPolicy(bindingPolicy(cfg, addrs))
	// Restored bindings are not changes: restore builds the FIB beside the
	// table, and the gauges are read from it.
	if err := restore(table, st, fs, log, met.Refused); err != nil {
		return err
	}
	met.Load(table.PortCount)
	restored := ft.Load()
	if mir != nil {
		fs.mirror = mir // from now on binding changes go to the map too
	}
	toStore := storeSink(st)

	// Bindings learned or restored without a MAC get it from neighbour
	// discovery (resolve.go).
	hops, resolver := startNextHops(table, log)
	rel := &releasing{} // release.go
	mgr := binding.NewManager(table, nil, log, adv.sinks(guard.sinks([]binding.Sink{toStore, fs.Sink, met.Sink, hops.Sink, rel.sink}))...)
	mgr.OnRefused = met.Refused
	mgr.OnRefusedKey = rel.refused
	hops.mgr = mgr
	met.Registry.MustRegister(resolverMetrics{hops, resolver})
	lq := newRequestor(cfg, relayID, mgr, log) // nil without leasequery.servers (recover.go)
	if lq != nil {
		met.Registry.MustRegister(lq)
	}
	guard.register(met.Registry)

	// The forwarding plane: an attach failure stops the start with its
	// cause (dataplane.mode xdp asks for forwarding; running without it
	// would be a silent failure).
	fwd, err := startForwarding(cfg, ports, routes, log)
	if err != nil {
		return err
	}
	if fwd != nil {
		met.Registry.MustRegister(fwd)
		defer fwd.plane.Close() // detach on every way out; Run closes it too
	}

	var rates []relay.Rate
	for _, d := range cfg.Downlinks {
		rates = append(rates, relay.Rate{Rate: d.MaxClientRate, Burst: d.MaxClientBurst})
	}
	conn, err := relay.Listen(eng, relay.ConnConfig{
		Uplink: cfg.Uplink.Interface, Servers: cfg.Servers, ServerPort: int(cfg.ServerPort), Rates: rates,
	}, log)
	if err != nil {
		return err
	}
	if err := rel.start(ctx, cfg, relayID, table, mgr, conn, met.Registry, log); err != nil {
		conn.Close()
		return err
	}
	log.Info("pdrelay started", "downlinks", names, "uplink", cfg.Uplink.Interface,
		"servers", cfg.Servers, "bindings", table.Len(), "relay_id", fmt.Sprintf("%x", relayID))

	sup := newParts(ctx, log)
	defer sup.stop()
	ctx = sup.ctx // done when the relay stops or a part fails
	spawn := sup.spawn
	spawn("bindings", func() error { return mgr.Run(ctx) })
	spawn("next hop resolver", func() error { return runResolver(ctx, resolver, log) })
	spawn("fib dense blocks", func() error {
		// The restore published without them (PublishDeferred); the
		// FIB's owner publishes again, making them.
		start := time.Now()
		if err := mgr.Do(ctx, func(*binding.Table) { ft.Publish() }); err != nil {
			return nil // stopping
		}
		log.Info("fib dense blocks made", "took", time.Since(start).Round(time.Millisecond))
		return nil
	})
	if fwd != nil {
		spawn("dataplane", func() error { return fwd.run(ctx, ft.FIB()) })
		spawn("gateway", func() error { return watchGateway(ctx, cfg, mgr, ft, log) })
	}
	if mir != nil {
		spawn("xdp route map", func() error {
			start := time.Now()
			n, err := mir.fill(ctx, restored.Routes())
			switch {
			case err == nil:
				log.Info("xdp route map filled", "routes", n, "took", time.Since(start).Round(time.Millisecond))
			case ctx.Err() == nil:
				// Not fatal: forwarding works; only transit traffic for
				// the kernel (no_route: pass) is dropped while ::/0 stays.
				log.Error("xdp route map fill failed: the uplink hands the kernel no transit traffic", "routes", n, "err", err)
			}
			return nil
		})
	}
	spawn("addresses", func() error {
		return watchAddrs(ctx, cfg, addrs, func(a portAddrs) {
			log.Info("port addresses changed", "addresses", a)
			pol := bindingPolicy(cfg, a)
			mgr.Post(func(t *binding.Table) { t.SetPolicy(pol) })
		})
	})
	if guard != nil {
		spawn("kernel guard", func() error { return guard.run(ctx, restored, ports) })
	}
	spawn("relay", func() error { return conn.Run(ctx, mgr) })
	spawn("release", func() error { return rel.run(ctx) })
	if lq != nil && cfg.Leasequery.OnStart {
		spawn("leasequery", func() error { recoverAtStart(ctx, lq, log); return nil })
	}
	apiSrv := api.NewServer(mgr, log)
	apiSrv.Releaser = rel.rel
	if lq != nil {
		apiSrv.Recoverer = lq
	}
	if fwd != nil {
		apiSrv.Stats = guard.stats(fwd.stats)
	}
	adv.start(spawn, ctx, restored, met.Registry, apiSrv)
	spawn("api", func() error { return apiSrv.Serve(ctx, cfg.APISocket) })
	if cfg.MetricsListen != "" {
		ln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			sup.stop()
			sup.wait()
			return fmt.Errorf("metrics_listen %s: %w", cfg.MetricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", met.Handler())
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		spawn("metrics", func() error {
			go func() { <-ctx.Done(); hs.Close() }()
			if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	<-ctx.Done()
	err = sup.wait() // nil when every part stopped cleanly
	log.Info("pdrelay stopping", "bindings", table.Len())
	return err
}

// portIDs numbers the ports for the FIB: the uplink 0, downlinks from 1 in
// config order.
func portIDs(cfg *config.Config) map[string]fib.PortID {
	m := map[string]fib.PortID{cfg.Uplink.Interface: 0}
	for i, d := range cfg.Downlinks {
		m[d.Interface] = fib.PortID(i + 1)
	}
	return m
}

func engineConfig(cfg *config.Config, relayID []byte, addrs portAddrs) relay.Config {
	rc := relay.Config{
		Servers:            cfg.Servers,
		TrustedServers:     cfg.TrustedServers,
		RelayID:            relayID,
		ReleaseRequestType: cfg.Release.Types.Request,
		AddrSource: func(port string) []netip.Addr {
			return addrsOf(readAddrs(port))
		},
	}
	for _, d := range cfg.Downlinks {
		p := relay.Port{
			Name:                d.Interface,
			LinkAddr:            d.LinkAddress,
			InterfaceID:         []byte(d.InterfaceID),
			TrustReleaseRequest: d.TrustReleaseRequest,
			TrustRelayForward:   d.TrustRelayForward,
			Addrs:               addrsOf(addrs[d.Interface]),
		}
		if !p.LinkAddr.IsValid() {
			p.LinkAddr = globalAddr(d.Interface)
		}
		rc.Ports = append(rc.Ports, p)
	}
	return rc
}

// globalAddr returns a global unicast address of the interface, or the
// zero Addr (the engine then sends ::).
func globalAddr(name string) (a netip.Addr) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return a
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return a
	}
	for _, ad := range addrs {
		ipn, ok := ad.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		ip = ip.Unmap()
		if ok && ip.Is6() && !ip.Is4In6() && ip.IsGlobalUnicast() && !ip.IsLinkLocalUnicast() {
			return ip
		}
	}
	return a
}

// relayID returns the configured Relay-ID, or the persisted one, or a new
// DUID-LL made from the uplink's MAC (a random DUID-UUID when it has
// none) that is then persisted. A DUID-LL has no time in it, so a relay
// that loses its state directory makes the same one again from the same
// NIC, and Bulk Leasequery by Relay-ID still finds its bindings; on other
// hardware only a configured relay_id does.
func relayID(cfg *config.Config, st *store.Store, log *slog.Logger) ([]byte, error) {
	if len(cfg.RelayID) > 0 {
		return cfg.RelayID, nil
	}
	id, err := st.RelayID()
	if err == nil && len(id) > 0 {
		return id, nil
	}
	if err != nil && !errors.Is(err, store.ErrNoRelayID) {
		return nil, fmt.Errorf("read relay id: %w", err)
	}
	id = newDUID(cfg.Uplink.Interface)
	if err := st.SetRelayID(id); err != nil {
		return nil, fmt.Errorf("persist relay id: %w", err)
	}
	if err := st.Flush(); err != nil {
		return nil, fmt.Errorf("persist relay id: %w", err)
	}
	log.Info("generated relay id", "relay_id", fmt.Sprintf("%x", id))
	if len(cfg.Leasequery.Servers) > 0 && cfg.Leasequery.Query == config.QueryRelayID && id[1] != 3 {
		log.Warn("relay_id is not configured and the uplink has no MAC to make a stable one from: "+
			"Bulk Leasequery by relay-id cannot find this relay's bindings once state_dir is lost; set relay_id",
			"relay_id", fmt.Sprintf("%x", id))
	}
	return id, nil
}

// newDUID makes a DUID-LL (RFC 8415 11.4) from the interface's Ethernet
// address, or a DUID-UUID (RFC 6355) from random bytes when it has none.
func newDUID(ifname string) []byte {
	if ifi, err := net.InterfaceByName(ifname); err == nil && len(ifi.HardwareAddr) == 6 {
		b := binary.BigEndian.AppendUint16(nil, 3) // DUID-LL
		b = binary.BigEndian.AppendUint16(b, 1)    // hardware type Ethernet
		return append(b, ifi.HardwareAddr...)
	}
	b := binary.BigEndian.AppendUint16(nil, 4) // DUID-UUID
	u := make([]byte, 16)
	rand.Read(u)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return append(b, u...)
}

// restore loads the store into the table, dropping (and deleting) what
// expired while the relay was down, and builds the FIB from the restored
// bindings as they come: a second goroutine applies them to fs in table
// order, so at 1M bindings the two halves of a restart overlap on two cores.
func restore(t *binding.Table, st *store.Store, fs *fibSink, log *slog.Logger, onRefused func(port string, err error)) error {
	now := time.Now()
	n, err := st.Len()
	if err != nil {
		return fmt.Errorf("load bindings: %w", err)
	}
	t.BeginRestore(n)
	defer t.EndRestore()

	feed := make(chan []fibOp, 4)
	built := make(chan struct{})
	go func() {
		defer close(built)
		for ops := range feed {
			for _, op := range ops {
				if op.removed != nil {
					fs.remove(op.removed)
				} else {
					fs.add(op.add, true)
				}
			}
		}
	}()
	const batchLen = 4096
	batch := make([]fibOp, 0, batchLen)
	var expired, refusedN int
	skipped, err := st.Load(func(b binding.Binding) error {
		b.Source = binding.SourceStore
		ref, refused := t.RestoreRef(now, b)
		for _, c := range t.TakeChanges() { // an older record of the same prefix or key
			batch = append(batch, fibOp{removed: &c.Binding})
			st.Delete(c.Binding.Key)
		}
		if ref != nil {
			if batch = append(batch, fibOp{add: ref}); len(batch) == batchLen {
				feed <- batch
				batch = make([]fibOp, 0, batchLen)
			}
			return nil
		}
		if refused != nil {
			// The policy (delegated_lengths, delegated_pools, the relay's
			// own subnets, nesting) refuses what a Reply could not install
			// either; the client's next Renew is checked afresh.
			refusedN++
			if onRefused != nil {
				onRefused(b.Port, refused)
			}
			log.Warn("binding refused", "port", b.Port, "client", b.DUIDHex(), "iaid", b.IAID,
				"prefix", b.Prefix, "source", "store", "reason", refused)
			st.Delete(b.Key)
			return nil
		}
		reason := binding.ReasonSuperseded // a newer record holds the prefix
		if !b.Valid(now) {
			reason = binding.ReasonRestoreOld
			expired++
		}
		log.Info("binding removed", "port", b.Port, "client", b.DUIDHex(), "iaid", b.IAID,
			"prefix", b.Prefix, "reason", reason, "valid_until", b.Expires.Format(time.RFC3339))
		st.Delete(b.Key)
		return nil
	})
	feed <- batch
	close(feed)
	<-built
	// Serve at once; the FIB's dense blocks come with the next Publish
	// (Run asks for one as soon as the relay runs).
	fs.t.PublishDeferred()
	if err != nil {
		return fmt.Errorf("load bindings: %w", err)
	}
	if skipped > 0 {
		log.Warn("store records skipped: undecodable", "count", skipped)
	}
	log.Info("bindings restored", "count", t.Len(), "expired", expired, "refused", refusedN)
	return nil
}

// fibOp is one step of the FIB build during a restore.
type fibOp struct {
	add     *binding.Binding
	removed *binding.Binding
}

// storeSink writes every change behind (at most one flush interval).
func storeSink(st *store.Store) binding.Sink {
	return func(changes []binding.Change) {
		for _, c := range changes {
			if c.Op == binding.Removed {
				st.Delete(c.Binding.Key)
			} else {
				st.Put(c.Binding)
			}
		}
	}
}
