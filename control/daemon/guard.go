package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pdrelay/pdrelay/control/api"
	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/config"
	"github.com/pdrelay/pdrelay/dataplane/nftguard"
	"github.com/pdrelay/pdrelay/fib"
)

// kernelGuard is the nf_tables guard (dataplane/nftguard) of the xdp
// modes: frames the XDP program passes to the kernel are forwarded by
// the kernel when IPv6 forwarding is on, and the guard drops those whose
// source the downlink may not use. It follows the bindings as a sink,
// with the same sources as the FIB: a binding's prefix on its port, and
// each downlink's allowed_sources.
type kernelGuard struct {
	g   *nftguard.Guard
	log *slog.Logger
	// In kernel mode the table is the router's whole anti-spoofing and
	// loop check, and the sink also tells it each binding's
	// MAC and loop policy (Delegate).
	kernel bool
	keep   bool // kernel mode: the table stays at Close
	// loop gives a client's own loop policy; replaced by a reload, read
	// by the sink.
	loop atomic.Pointer[func(port, duid string) fib.LoopPolicy]
	// ports are the guarded ports (reconfigure): the configured ones and,
	// in kernel mode, those a reload removed, which stay guarded while
	// their bindings keep their routes.
	ports []nftguard.Port
}

// guardKernel is how startGuard installs a guard; tests replace it.
type guardKernel struct {
	install    func(nftguard.Config) (*nftguard.Guard, error)
	forwarding func(downlinks []string) ([]string, error)
}

var realGuardKernel = guardKernel{install: nftguard.New, forwarding: forwardingOn}

// startGuard installs the guard's table with every downlink's chain and
// allowed_sources (no binding yet: their traffic through the kernel is
// dropped until the fill), replacing one a crashed relay left, in the
// xdp modes and in kernel mode (where the kernel forwards everything).
// With dataplane.mode off there is nothing to guard: pdrelay forwards
// nothing and the XDP program is not attached. If nf_tables cannot be used, the
// start fails when IPv6 forwarding is on (the kernel would forward
// spoofed sources) and goes on with a warning when it is off.
func startGuard(cfg *config.Config, log *slog.Logger, k guardKernel) (*kernelGuard, error) {
	if cfg.Dataplane.Mode == config.DataplaneOff {
		return nil, nil
	}
	gc := guardConfig(cfg, log, nil)
	names := downlinkNames(cfg)
	g, err := k.install(gc)
	if err == nil {
		kg := &kernelGuard{g: g, log: log, kernel: gc.Kernel, keep: gc.Keep, ports: gc.Ports}
		loop := clientLoopPolicies(cfg)
		kg.loop.Store(&loop)
		if gc.Kernel {
			log.Info("kernel guard installed: the kernel forwards nothing from a downlink whose source the port may not use, "+
				"and drops or answers loops", "table", "ip6 "+nftguard.DefaultTable, "downlinks", len(names), "keep_on_stop", gc.Keep)
		} else {
			log.Info("kernel guard installed: the kernel forwards nothing from a downlink whose source the port may not use",
				"table", "ip6 "+nftguard.DefaultTable, "downlinks", len(names))
		}
		return kg, nil
	}
	if cfg.Dataplane.Mode == config.DataplaneKernel {
		// The kernel forwards everything here: without the table it
		// would forward spoofed sources and loops.
		return nil, fmt.Errorf("dataplane.mode kernel: the nftables table (anti-spoofing, loops): %w", err)
	}
	on, ferr := k.forwarding(names)
	if ferr != nil {
		return nil, fmt.Errorf("kernel guard: %w; and reading whether IPv6 forwarding is on failed: %w", err, ferr)
	}
	if len(on) > 0 {
		return nil, fmt.Errorf("kernel guard: %w. IPv6 forwarding is on (%s): the kernel would forward the frames the XDP program passes to it "+
			"(DHCPv6 ports, hop-by-hop, ND types) from any source. Set net.ipv6.conf.all.forwarding=0 "+
			"(pdrelay forwards in user space), or give pdrelay nf_tables", err, strings.Join(on, ", "))
	}
	log.Warn("kernel guard not installed; IPv6 forwarding is off, so the kernel forwards nothing from the downlinks. "+
		"Turning forwarding on while pdrelay runs would forward spoofed sources", "err", err)
	return nil, nil
}

// guardConfig is the guard's config for cfg. retired are ports a reload
// removed that stay guarded (kernel mode), appended after cfg's.
func guardConfig(cfg *config.Config, log *slog.Logger, retired []nftguard.Port) nftguard.Config {
	kernel := cfg.Dataplane.Mode == config.DataplaneKernel
	gc := nftguard.Config{Log: log, Kernel: kernel}
	if kernel {
		gc.Keep = !cfg.Kernel.FlushOnStop
		gc.Uplink = cfg.Uplink.Interface
		gc.ICMPRate = cfg.Dataplane.ICMPRate
	}
	for _, d := range cfg.Downlinks {
		p := nftguard.Port{Name: d.Interface, AllowedSources: d.AllowedSources}
		if kernel {
			p.MultiAccess = d.LinkType == config.MultiAccess
			p.Loop = d.LoopPolicy.FIB()
			p.LoopICMP = d.LoopICMP
			for _, o := range d.LoopOverrides {
				if o.Prefix.IsValid() {
					p.LoopOverrides = append(p.LoopOverrides, nftguard.LoopOverride{Prefix: o.Prefix, Policy: o.Policy.FIB()})
				}
			}
		}
		gc.Ports = append(gc.Ports, p)
	}
	gc.Ports = append(gc.Ports, retired...)
	return gc
}

// forwardingOn returns the IPv6 forwarding sysctls that are on: all, and
// the downlinks' forwarding and force_forwarding (the latter only on
// kernels that have it), as "net.ipv6.conf.X.Y=1".
func forwardingOn(downlinks []string) ([]string, error) {
	var on []string
	check := func(iface, key string, must bool) error {
		b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + iface + "/" + key)
		if errors.Is(err, os.ErrNotExist) && !must {
			return nil
		}
		if err != nil {
			return err
		}
		if v := strings.TrimSpace(string(b)); v != "0" {
			on = append(on, fmt.Sprintf("net.ipv6.conf.%s.%s=%s", strings.ReplaceAll(iface, ".", "/"), key, v))
		}
		return nil
	}
	if err := check("all", "forwarding", true); err != nil {
		return nil, err
	}
	for _, d := range downlinks {
		// A downlink that does not exist yet has no sysctls: it
		// inherits the defaults when it appears.
		if err := check(d, "forwarding", false); err != nil {
			return nil, err
		}
		if err := check(d, "force_forwarding", false); err != nil {
			return nil, err
		}
	}
	return on, nil
}

// sinks adds the guard's binding sink to s; no guard, no sink. From here
// on the guard counts changes on top of the restored bindings, which run
// hands it.
func (k *kernelGuard) sinks(s []binding.Sink) []binding.Sink {
	if k == nil {
		return s
	}
	k.g.BeginRestore()
	return append(s, k.Sink)
}

// Sink follows binding changes: an added binding allows its prefix as a
// source on its port, a removed one takes that back; an update changes
// only the next hop or MAC. One netlink transaction per batch.
func (k *kernelGuard) Sink(changes []binding.Change) {
	n := 0
	loop := k.loopFn()
	for _, c := range changes {
		b := &c.Binding
		switch c.Op {
		case binding.Added:
			if k.g.Add(b.Port, b.Prefix) {
				n++
			}
			if k.kernel && k.g.Delegate(k.delegation(b, loop)) {
				n++
			}
		case binding.Updated:
			if k.kernel && c.RouteChanged && k.g.Delegate(k.delegation(b, loop)) { // a new MAC
				n++
			}
		case binding.Removed:
			if k.g.Delete(b.Port, b.Prefix) {
				n++
			}
			if k.kernel && k.g.Undelegate(b.Port, b.Prefix) {
				n++
			}
		}
	}
	if n > 0 {
		_ = k.g.Flush() // logged by the guard, which rebuilds its table
	}
}

// loopFn returns the client loop policies in force; nil: none.
func (k *kernelGuard) loopFn() func(port, duid string) fib.LoopPolicy {
	if p := k.loop.Load(); p != nil {
		return *p
	}
	return nil
}

// delegation is what kernel mode's loop check needs of a binding.
func (k *kernelGuard) delegation(b *binding.Binding, loop func(port, duid string) fib.LoopPolicy) nftguard.Delegation {
	d := nftguard.Delegation{Port: b.Port, Prefix: b.Prefix, MAC: b.MAC}
	if loop != nil {
		d.Loop = loop(b.Port, b.DUID)
	}
	return d
}

// run fills the guard from the restored bindings (the FIB's routes at
// start: after a restore each prefix has one binding, on the port its
// route leaves by) beside the running relay, then keeps its table whole
// until ctx ends.
func (k *kernelGuard) run(ctx context.Context, restored *fib.Snapshot, ports map[string]fib.PortID) error {
	names := make(map[fib.PortID]string, len(ports))
	for name, id := range ports {
		names[id] = name
	}
	if k.kernel {
		// Sources and loop entries together; an adopted table (a
		// restart) switches to them in one transaction.
		k.g.RestoreDelegations(func(yield func(nftguard.Delegation) bool) {
			for r := range restored.Routes() {
				if !yield(nftguard.Delegation{Port: names[r.Port], Prefix: r.Prefix, MAC: r.MAC, Loop: r.Loop}) {
					return
				}
			}
		})
		return k.g.Run(ctx)
	}
	k.g.Restore(func(yield func(string, netip.Prefix) bool) {
		for r := range restored.Routes() {
			if !yield(names[r.Port], r.Prefix) {
				return
			}
		}
	})
	return k.g.Run(ctx)
}

// close removes the guard's table on the way out, or leaves it in
// force (kernel mode without kernel.flush_on_stop: traffic keeps flowing,
// checked, across a restart).
func (k *kernelGuard) close() {
	if err := k.g.Close(); err != nil {
		k.log.Error("kernel guard", "err", err)
		return
	}
	if k.keep {
		k.log.Info("kernel guard left in force for the next start", "table", "ip6 "+nftguard.DefaultTable)
		return
	}
	k.log.Info("kernel guard removed")
}

var descGuardDrops = prometheus.NewDesc("pdrelay_kernel_guard_drops_total",
	"Frames from a downlink with a source the port may not use that the kernel would have forwarded (IPv6 forwarding on) and the kernel guard dropped.",
	[]string{"interface"}, nil)

// Describe and Collect make the guard's drop counters a Prometheus
// collector.
// In kernel mode the table's counters are the forwarding counters, under
// the xdp mode's metric and reasons (pdrelay_dataplane_packets_total).
func (k *kernelGuard) Describe(ch chan<- *prometheus.Desc) {
	if k.kernel {
		ch <- descPackets
		return
	}
	ch <- descGuardDrops
}

func (k *kernelGuard) Collect(ch chan<- prometheus.Metric) {
	if k.kernel {
		c, err := k.g.Counters()
		if err != nil {
			k.log.Debug("kernel guard counters", "err", err)
			return
		}
		for port, rs := range c {
			for r, n := range rs {
				ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(n), port, r)
			}
		}
		return
	}
	d, err := k.g.Drops()
	if err != nil {
		k.log.Debug("kernel guard counters", "err", err)
		return
	}
	for port, n := range d {
		ch <- prometheus.MustNewConstMetric(descGuardDrops, prometheus.CounterValue, float64(n), port)
	}
}

// register adds the collector to reg; no guard, nothing.
func (k *kernelGuard) register(reg *prometheus.Registry) {
	if k != nil {
		reg.MustRegister(k)
	}
}

// stats adds each downlink's guard drops to `pdrelay stats` as the reason
// kernel_spoofed; no guard, src unchanged.
func (k *kernelGuard) stats(src api.StatsSource) api.StatsSource {
	if k == nil || src == nil {
		return src
	}
	return func() []api.PortStatsJSON {
		st := src()
		d, err := k.g.Drops()
		if err != nil {
			return st
		}
		for i := range st {
			if n, ok := d[st[i].Interface]; ok {
				if st[i].Packets == nil {
					st[i].Packets = map[string]uint64{}
				}
				st[i].Packets[guardReason] = n
			}
		}
		return st
	}
}

// kernelStats gives `pdrelay stats` in kernel mode: the table's counters
// by port and reason (spoofed, loop, icmp_sent, icmp_rate_limited,
// forwarded on the output port). The kernel's own interface counters
// are `ip -s link`'s.
func (k *kernelGuard) kernelStats() []api.PortStatsJSON {
	c, err := k.g.Counters()
	if err != nil {
		k.log.Debug("kernel guard counters", "err", err)
		return nil
	}
	out := make([]api.PortStatsJSON, 0, len(c))
	for port, rs := range c {
		out = append(out, api.PortStatsJSON{Interface: port, Packets: maps.Clone(rs)})
	}
	slices.SortFunc(out, func(a, b api.PortStatsJSON) int { return strings.Compare(a.Interface, b.Interface) })
	return out
}

// guardReason is the guard's drops in `pdrelay stats`.
const guardReason = "kernel_spoofed"

// reconfigure follows a reload: ports added, settings changed, in one
// transaction (the other ports stay guarded throughout). In kernel mode
// a port the reload removed stays guarded, without its allowed_sources,
// while its bindings keep their routes. In the xdp modes config.Diff
// refuses every change the guard holds, and this rewrites the same table.
func (k *kernelGuard) reconfigure(cfg *config.Config) error {
	var retired []nftguard.Port
	if k.kernel {
		now := map[string]bool{}
		for _, d := range cfg.Downlinks {
			now[d.Interface] = true
		}
		for _, p := range k.ports {
			if !now[p.Name] {
				p.AllowedSources = nil
				retired = append(retired, p)
			}
		}
	}
	gc := guardConfig(cfg, k.log, retired)
	if err := k.g.Reconfigure(gc); err != nil {
		return err
	}
	k.ports = gc.Ports
	loop := clientLoopPolicies(cfg)
	k.loop.Store(&loop)
	return nil
}

// redelegate gives kernel mode's loop check every binding again, with
// the client loop policies now in force (a reload changed
// loop_overrides). It runs on the binding manager's goroutine.
func (k *kernelGuard) redelegate(t *binding.Table) {
	if !k.kernel {
		return
	}
	loop := k.loopFn()
	for b := range t.All() {
		k.g.Delegate(k.delegation(b, loop))
	}
	_ = k.g.Flush() // logged by the guard, which repairs its table
}
