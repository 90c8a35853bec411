package daemon

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/pdrelay/pdrelay/control/api"
	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/config"
	"github.com/pdrelay/pdrelay/control/leasequery"
	"github.com/pdrelay/pdrelay/control/metrics"
	"github.com/pdrelay/pdrelay/control/neigh"
	"github.com/pdrelay/pdrelay/control/relay"
	"github.com/pdrelay/pdrelay/control/store"
	"github.com/pdrelay/pdrelay/fib"
	"github.com/pdrelay/pdrelay/internal/logw"
	"github.com/pdrelay/pdrelay/internal/version"
)

// RunFile loads the config at path and runs the relay until ctx ends.
// Logs go to logOut as text. SIGHUP, and `pdrelay reload` through the
// API, reload the file (reload.go).
func RunFile(ctx context.Context, path string, logOut io.Writer) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	level.Set(cfg.LogLevel)
	lw := logw.New(logOut)
	log := slog.New(slog.NewTextHandler(lw, &slog.HandlerOptions{Level: level}))
	// From now on SIGHUP is the reload's, not the default (terminate):
	// one that comes during a long restore waits for the relay to run.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	d, err := New(ctx, cfg, log)
	if err != nil {
		return err
	}
	d.path, d.level, d.hup = path, level, hup
	d.mgr.LogBatch = lw // a batch's binding lines in one write
	return d.Run(ctx)
}

// Run runs the relay described by cfg until ctx ends.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	d, err := New(ctx, cfg, log)
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

// Daemon is one relay: built by New, which opens everything (store,
// sockets, forwarding plane, kernel tables) and restores the bindings,
// then run by Run, which supervises its parts until its context ends and
// closes what New opened. Reload changes its config while it runs.
type Daemon struct {
	log   *slog.Logger
	level *slog.LevelVar   // the log level a reload may change; nil: fixed
	path  string           // the config file a reload reads; "": none
	hup   <-chan os.Signal // SIGHUP, when RunFile set it up; nil: runReloads does

	reloadMu sync.Mutex // one reload at a time
	cfg      *config.Config
	ports    map[string]fib.PortID // every port this process has numbered; only grows

	st       *store.Store
	relayID  []byte
	guard    *kernelGuard  // nil: nothing to guard
	kr       *kernelRoutes // nil unless dataplane.mode kernel
	adv      *advertiser   // nil without bgp
	ft       *fib.Table
	fw       *fibWriter
	fibLive  bool    // the FIB follows the bindings: the xdp modes
	mir      *mirror // nil: no route map (uplink.no_route drop)
	restored *fib.Snapshot
	addrs    portAddrs // the ports' addresses at start; the watcher follows them
	eng      *relay.Engine
	met      *metrics.Metrics
	table    *binding.Table
	mgr      *binding.Manager
	hops     *nextHops
	resolver *neigh.Resolver
	rel      *releasing
	lq       *leasequery.Requestor // nil: leasequery.servers empty
	fwd      *forwarding           // nil: no AF_XDP plane
	conn     *relay.Conn
	ready    chan struct{}   // closed once every part runs
	runCtx   context.Context // Run's: done when the relay stops; set before ready

	// closers undo New's steps, last first, when Run ends or New fails.
	closers []func()
}

// onClose registers f to run when the daemon closes.
func (d *Daemon) onClose(f func()) { d.closers = append(d.closers, f) }

func (d *Daemon) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
	d.closers = nil
}

// New builds the relay described by cfg: it opens the store, installs
// the kernel guard, restores the bindings into the table and the FIB,
// attaches the forwarding plane and opens the relay's sockets. Nothing
// runs until Run. ctx bounds what New starts that outlives it (the
// releaser's socket). On error, everything New opened is closed.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (_ *Daemon, err error) {
	d := &Daemon{log: log, cfg: cfg, ready: make(chan struct{})}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir %s: %w", cfg.StateDir, err)
	}
	st, err := store.Open(filepath.Join(cfg.StateDir, "bindings.db"), log)
	if err != nil {
		return nil, err
	}
	d.st = st
	d.onClose(func() {
		if err := st.Close(); err != nil {
			log.Error("close store", "err", err)
		}
	})
	if d.relayID, err = relayID(cfg, st, log); err != nil {
		return nil, err
	}

	d.ports = portIDs(cfg)
	// After the store: a second relay started by mistake waits on the
	// store's lock instead of replacing the running one's table.
	if d.guard, err = startGuard(cfg, log, realGuardKernel); err != nil {
		return nil, err
	}
	if d.guard != nil {
		d.onClose(d.guard.close)
	}
	if d.kr, err = startKernelRoutes(cfg, log, realRouteKernel); err != nil { // nil unless dataplane.mode kernel (kernel.go)
		return nil, err
	}
	if d.kr != nil {
		d.onClose(d.kr.close)
	}
	d.ft = fib.NewTable()
	for _, dl := range cfg.Downlinks {
		if err := d.ft.SetAllowedSources(d.ports[dl.Interface], dl.AllowedSources); err != nil {
			return nil, fmt.Errorf("downlinks %s allowed_sources: %w", dl.Interface, err)
		}
	}
	d.fw = &fibWriter{t: d.ft, ports: maps.Clone(d.ports), log: log, loop: clientLoopPolicies(cfg)}
	routes, err := newRouteMirror(cfg)
	if err != nil {
		return nil, err
	}
	if routes != nil {
		d.onClose(func() { routes.Close() })
		d.mir = &mirror{set: routes}
		if err := d.mir.beginFill(); err != nil {
			return nil, fmt.Errorf("xdp route map: %w", err)
		}
	}

	names := downlinkNames(cfg)
	d.addrs = readPortAddrs(cfg)
	if d.eng, err = relay.NewEngine(engineConfig(cfg, d.relayID, d.addrs)); err != nil {
		return nil, err
	}
	d.met = metrics.New(&d.eng.Counters, names)
	if d.adv, err = newAdvertiser(cfg, log); err != nil { // nil without bgp (bgp.go)
		return nil, err
	}

	d.table = binding.NewTable(defaultPortLimits, cfg.PortLimits())
	d.table.SetPolicy(bindingPolicy(cfg, d.addrs))
	// Restored bindings are not changes: restore builds the FIB beside the
	// table, and the gauges are read from it.
	if err := restore(d.table, st, d.fw, log, d.met.Refused); err != nil {
		return nil, err
	}
	d.met.Load(d.table.PortCount)
	d.restored = d.ft.Load()
	d.kr.restore(d.restored, d.ports)
	if d.mir != nil {
		d.fw.mirror = d.mir // from now on binding changes go to the map too
	}

	// Bindings learned or restored without a MAC get it from neighbour
	// discovery (resolve.go).
	d.hops, d.resolver = startNextHops(d.table, log)
	d.rel = &releasing{} // release.go
	// The dataplane's sinks take each batch first (the FIB, which is the
	// dataplane in xdp mode, the kernel's routes, then its source and loop
	// guard), so a new binding forwards as soon as it can; the store,
	// metrics, next-hop resolution, release triggers and BGP follow. Only
	// the AF_XDP plane reads the FIB: in kernel mode and with the
	// dataplane off the FIB serves the start alone (d.restored, for the
	// kernel's routes, the guard and BGP), and keeping it after would
	// cost every binding change for no reader.
	d.fibLive = cfg.Dataplane.Mode == config.DataplaneXDP || cfg.Dataplane.Mode == config.DataplaneXDPGeneric
	var fibSink []binding.Sink
	if d.fibLive {
		fibSink = []binding.Sink{d.fw.Sink}
	}
	sinks := d.guard.sinks(d.kr.sinks(fibSink))
	dataplane := len(sinks)
	sinks = append(sinks, storeSink(st), d.met.Sink, d.hops.Sink, d.rel.sink)
	d.mgr = binding.NewManager(d.table, nil, log, d.adv.sinks(sinks)...)
	d.mgr.OnRefused = d.met.Refused
	d.mgr.OnInstalled, d.mgr.DataplaneSinks = d.met.Installed, dataplane
	d.mgr.OnRefusedKey = d.rel.refused
	d.hops.mgr = d.mgr
	d.met.Registry.MustRegister(resolverMetrics{d.hops, d.resolver})
	d.lq = newRequestor(cfg, d.relayID, d.mgr, log) // nil without leasequery.servers (recover.go)
	if d.lq != nil {
		d.met.Registry.MustRegister(d.lq)
	}
	d.guard.register(d.met.Registry)

	// The forwarding plane: an attach failure stops the start with its
	// cause (dataplane.mode xdp asks for forwarding; running without it
	// would be a silent failure).
	if d.fwd, err = startForwarding(cfg, d.ports, routes, log); err != nil {
		return nil, err
	}
	if d.fwd != nil {
		d.met.Registry.MustRegister(d.fwd)
		d.onClose(func() { d.fwd.plane.Close() }) // detach on every way out
	}

	conn, err := relay.Listen(d.eng, relayConnConfig(cfg), log)
	if err != nil {
		return nil, err
	}
	d.conn = conn
	d.onClose(func() { conn.Close() })
	if err := d.rel.start(ctx, cfg, d.relayID, d.table, d.mgr, conn, d.met.Registry, log); err != nil {
		return nil, err
	}
	return d, nil
}

func downlinkNames(cfg *config.Config) []string {
	var names []string
	for _, d := range cfg.Downlinks {
		names = append(names, d.Interface)
	}
	return names
}

// Run runs the relay's parts until ctx ends or one fails, then closes
// everything New opened. It returns the first part's failure, or nil.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.close()
	cfg, log, mgr := d.cfg, d.log, d.mgr
	log.Info("pdrelay started", "mode", cfg.Dataplane.Mode, "version", version.Get().Version,
		"downlinks", downlinkNames(cfg), "uplink", cfg.Uplink.Interface,
		"servers", cfg.Servers, "bindings", d.table.Len(), "relay_id", fmt.Sprintf("%x", d.relayID))

	sup := newParts(ctx, log)
	defer sup.stop()
	ctx = sup.ctx // done when the relay stops or a part fails
	spawn := sup.spawn
	spawn("bindings", func() error { return mgr.Run(ctx) })
	spawn("next hop resolver", func() error { return runResolver(ctx, d.resolver, log) })
	if d.fibLive { // only the AF_XDP plane reads the FIB after the start
		spawn("fib dense blocks", func() error {
			// The restore published without them (PublishDeferred); a
			// publish after it makes them.
			start := time.Now()
			d.fw.Publish()
			log.Info("fib dense blocks made", "took", time.Since(start).Round(time.Millisecond))
			return nil
		})
	}
	if d.fwd != nil {
		spawn("dataplane", func() error { return d.fwd.run(ctx, d.ft.FIB()) })
		spawn("gateway", func() error { return watchGateway(ctx, cfg, d.fw, log) })
	}
	if d.mir != nil {
		spawn("xdp route map", func() error {
			start := time.Now()
			n, err := d.mir.fill(ctx, d.restored.Routes())
			switch {
			case err == nil:
				attrs := []any{"routes", n, "took", time.Since(start).Round(time.Millisecond)}
				if w, ok := d.mir.set.(interface{ Windows() (int, int) }); ok {
					// How much of the map the windows cover: a low
					// share means scattered pools, and a hash lookup a
					// frame for the rest.
					ws, in := w.Windows()
					attrs = append(attrs, "windows", ws, "in_windows", in)
				}
				log.Info("xdp route map filled", attrs...)
			case ctx.Err() == nil:
				// Not fatal: forwarding works; only transit traffic for
				// the kernel (no_route: pass) is dropped while ::/0 stays.
				log.Error("xdp route map fill failed: the uplink hands the kernel no transit traffic", "routes", n, "err", err)
			}
			return nil
		})
	}
	spawn("addresses", func() error {
		return watchAddrs(ctx, d.currentConfig, d.addrs, func(a portAddrs) {
			log.Info("port addresses changed", "addresses", a)
			pol := bindingPolicy(d.currentConfig(), a)
			mgr.Post(func(t *binding.Table) { t.SetPolicy(pol) })
		})
	})
	if d.guard != nil {
		spawn("kernel guard", func() error { return d.guard.run(ctx, d.restored, d.ports) })
	}
	if d.kr != nil {
		spawn("kernel routes", func() error { return d.kr.run(ctx) })
	}
	spawn("relay", func() error { return d.conn.Run(ctx, mgr) })
	spawn("release", func() error { return d.rel.run(ctx) })
	if d.lq != nil && cfg.Leasequery.OnStart {
		spawn("leasequery", func() error { recoverAtStart(ctx, d.lq, log); return nil })
	}
	apiSrv := api.NewServer(mgr, log)
	apiSrv.Releaser = d.rel.rel
	apiSrv.Reloader = d
	if d.lq != nil {
		apiSrv.Recoverer = d.lq
	}
	switch {
	case d.fwd != nil:
		apiSrv.Stats = d.guard.stats(d.fwd.stats)
	case d.guard != nil && d.guard.kernel:
		apiSrv.Stats = d.guard.kernelStats
	}
	d.adv.start(spawn, ctx, d.restored, d.met.Registry, apiSrv)
	// Every listener is bound before the API answers: a supervisor (or a
	// test) that sees the API up may scrape /metrics at once.
	if cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			sup.stop()
			sup.wait()
			return fmt.Errorf("metrics_listen %s: %w", cfg.MetricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", d.met.Handler())
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		spawn("metrics", func() error {
			go func() { <-ctx.Done(); hs.Close() }()
			if err := hs.Serve(mln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	ln, err := api.Listen(cfg.APISocket)
	if err != nil {
		sup.stop()
		sup.wait()
		return err
	}
	spawn("api", func() error { return apiSrv.ServeListener(ctx, ln) })
	spawn("reload", func() error { return d.runReloads(ctx) })
	d.runCtx = ctx
	close(d.ready)
	notify(log, sdReady)
	<-ctx.Done()
	notify(log, sdStopping)
	err = sup.wait() // nil when every part stopped cleanly
	log.Info("pdrelay stopping", "bindings", d.table.Len())
	return err
}

// currentConfig returns the config in force.
func (d *Daemon) currentConfig() *config.Config {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	return d.cfg
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
func restore(t *binding.Table, st *store.Store, fs *fibWriter, log *slog.Logger, onRefused func(port string, err error)) error {
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
