package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"

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
	gc := nftguard.Config{Log: log}
	var names []string
	for _, d := range cfg.Downlinks {
		gc.Ports = append(gc.Ports, nftguard.Port{Name: d.Interface, AllowedSources: d.AllowedSources})
		names = append(names, d.Interface)
	}
	g, err := k.install(gc)
	if err == nil {
		log.Info("kernel guard installed: the kernel forwards nothing from a downlink whose source the port may not use",
			"table", "ip6 "+nftguard.DefaultTable, "downlinks", len(names))
		return &kernelGuard{g: g, log: log}, nil
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
	for _, c := range changes {
		b := &c.Binding
		switch c.Op {
		case binding.Added:
			if k.g.Add(b.Port, b.Prefix) {
				n++
			}
		case binding.Removed:
			if k.g.Delete(b.Port, b.Prefix) {
				n++
			}
		}
	}
	if n > 0 {
		_ = k.g.Flush() // logged by the guard, which rebuilds its table
	}
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
	k.g.Restore(func(yield func(string, netip.Prefix) bool) {
		for r := range restored.Routes() {
			if !yield(names[r.Port], r.Prefix) {
				return
			}
		}
	})
	return k.g.Run(ctx)
}

// close removes the guard's table on the way out.
func (k *kernelGuard) close() {
	if err := k.g.Close(); err != nil {
		k.log.Error("kernel guard", "err", err)
		return
	}
	k.log.Info("kernel guard removed")
}

var descGuardDrops = prometheus.NewDesc("pdrelay_kernel_guard_drops_total",
	"Frames from a downlink with a source the port may not use that the kernel would have forwarded (IPv6 forwarding on) and the kernel guard dropped.",
	[]string{"interface"}, nil)

// Describe and Collect make the guard's drop counters a Prometheus
// collector.
func (k *kernelGuard) Describe(ch chan<- *prometheus.Desc) { ch <- descGuardDrops }

func (k *kernelGuard) Collect(ch chan<- prometheus.Metric) {
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

// guardReason is the guard's drops in `pdrelay stats`.
const guardReason = "kernel_spoofed"

// reconfigure follows a reload. In the xdp modes config.Diff refuses
// what the guard holds (the downlinks, their allowed_sources) as needing
// a restart, so there is nothing to change.
func (k *kernelGuard) reconfigure(*config.Config) error { return nil }
