package daemon

import (
	"context"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/config"
	"github.com/pdrelay/pdrelay/dataplane/kroute"
	"github.com/pdrelay/pdrelay/fib"
)

// kernelRoutes are the routes of dataplane.mode kernel: the kernel
// forwards, and a kroute.Router keeps a route per delegated prefix (via
// the client's address on its downlink, protocol kroute.Protocol) and a
// neighbour entry per next hop with a known MAC in its FIB. It follows
// the bindings as a sink, the same ones as the FIB: a binding on a port
// that is no longer configured stays, unrouted. The nftables guard
// (guard.go) runs beside it and drops spoofed sources.
type kernelRoutes struct {
	r routeWriter
	// ports are the downlinks routed: the configured ones, and those a
	// reload removed (their bindings keep their routes until they go).
	// Replaced whole by reconfigure, read by Sink.
	ports atomic.Pointer[map[string]bool]
	log   *slog.Logger
}

// routeWriter is what kernelRoutes needs of a *kroute.Router.
type routeWriter interface {
	Add(kroute.Route) bool
	Update(kroute.Route) bool
	Delete(netip.Prefix, string) bool
	Flush() error
	Restore(iter.Seq[kroute.Route]) int
	AddPorts(names ...string) error
	Run(context.Context) error
	Close() error
}

// routeKernel is how startKernelRoutes opens the Router and reads the
// forwarding sysctl; tests replace it.
type routeKernel struct {
	open       func(kroute.Config) (routeWriter, error)
	forwarding func() (string, error)
}

var realRouteKernel = routeKernel{
	open: func(c kroute.Config) (routeWriter, error) { return kroute.New(c) },
	forwarding: func() (string, error) {
		b, err := os.ReadFile("/proc/sys/net/ipv6/conf/all/forwarding")
		return strings.TrimSpace(string(b)), err
	},
}

// startKernelRoutes opens the kernel's FIB for dataplane.mode kernel
// (nil in the other modes). pdrelay does not change host sysctls: if
// IPv6 forwarding is off it says, at error level, that the kernel
// forwards nothing, and runs on (the operator may turn it on). A Router
// that cannot be opened (no CAP_NET_ADMIN) stops the start: the mode
// asks for forwarding.
func startKernelRoutes(cfg *config.Config, log *slog.Logger, k routeKernel) (*kernelRoutes, error) {
	if cfg.Dataplane.Mode != config.DataplaneKernel {
		return nil, nil
	}
	switch fwd, err := k.forwarding(); {
	case err != nil:
		log.Warn("dataplane.mode kernel: cannot read net.ipv6.conf.all.forwarding", "err", err)
	case fwd == "0":
		log.Error("dataplane.mode kernel, but IPv6 forwarding is off (net.ipv6.conf.all.forwarding=0): "+
			"the kernel forwards nothing to or from the delegated prefixes. pdrelay does not change host sysctls; "+
			"set net.ipv6.conf.all.forwarding=1", "mode", cfg.Dataplane.Mode)
	}
	kc := kroute.Config{Table: cfg.Kernel.Table, FlushOnStop: cfg.Kernel.FlushOnStop, Log: log}
	ports := map[string]bool{}
	for _, d := range cfg.Downlinks {
		kc.Ports = append(kc.Ports, d.Interface)
		ports[d.Interface] = true
	}
	r, err := k.open(kc)
	if err != nil {
		return nil, fmt.Errorf("dataplane.mode kernel: %w", err)
	}
	log.Info("kernel routes opened", "table", kc.Table, "protocol", kroute.Protocol, "flush_on_stop", kc.FlushOnStop)
	kr := &kernelRoutes{r: r, log: log}
	kr.ports.Store(&ports)
	return kr, nil
}

// reconfigure follows a reload: downlinks added are routed from now on.
// It runs before the relay listens on them. No Router, nothing.
func (k *kernelRoutes) reconfigure(cfg *config.Config) error {
	if k == nil {
		return nil
	}
	ports := maps.Clone(*k.ports.Load())
	var added []string
	for _, d := range cfg.Downlinks {
		if !ports[d.Interface] {
			ports[d.Interface] = true
			added = append(added, d.Interface)
		}
	}
	if len(added) == 0 {
		return nil
	}
	if err := k.r.AddPorts(added...); err != nil {
		return err
	}
	k.ports.Store(&ports)
	return nil
}

// routeOf is a binding's route.
func routeOf(b *binding.Binding) kroute.Route {
	return kroute.Route{Prefix: b.Prefix, Port: b.Port, NextHop: b.NextHop, MAC: b.MAC}
}

// restore gives the Router the routes of the restored bindings (the
// FIB's routes at start: after a restore each prefix has one binding,
// on the port its route leaves by), before the binding manager runs;
// run reconciles the kernel with them. No Router, nothing.
func (k *kernelRoutes) restore(restored *fib.Snapshot, ports map[string]fib.PortID) {
	if k == nil {
		return
	}
	names := make(map[fib.PortID]string, len(ports))
	for name, id := range ports {
		names[id] = name
	}
	n := k.r.Restore(func(yield func(kroute.Route) bool) {
		for r := range restored.Routes() {
			if !yield(kroute.Route{Prefix: r.Prefix, Port: names[r.Port], NextHop: r.NextHop, MAC: r.MAC}) {
				return
			}
		}
	})
	k.log.Info("kernel routes restored", "routes", n)
}

// sinks adds the routes' binding sink to s; no Router, no sink.
func (k *kernelRoutes) sinks(s []binding.Sink) []binding.Sink {
	if k == nil {
		return s
	}
	return append(s, k.Sink)
}

// Sink follows binding changes: an added binding's route (and its next
// hop's entry), an updated next hop or MAC, a removed binding's route
// gone. A lifetime refresh changes nothing; a binding on a port that is
// not configured is ignored. One Flush per batch: the Router logs and
// retries what the kernel refuses.
func (k *kernelRoutes) Sink(changes []binding.Change) {
	n := 0
	ports := *k.ports.Load()
	for i := range changes {
		c := &changes[i]
		b := &c.Binding
		if !c.RouteChanged || !ports[b.Port] {
			continue
		}
		switch c.Op {
		case binding.Added:
			k.r.Add(routeOf(b))
		case binding.Updated:
			k.r.Update(routeOf(b))
		case binding.Removed:
			k.r.Delete(b.Prefix, b.Port)
		default:
			continue
		}
		n++
	}
	if n > 0 {
		_ = k.r.Flush() // logged by the Router, which retries
	}
}

// run reconciles the kernel with the restored routes, then keeps it
// equal to the bindings until ctx ends.
func (k *kernelRoutes) run(ctx context.Context) error { return k.r.Run(ctx) }

// close lets go of the kernel: the routes stay unless
// kernel.flush_on_stop.
func (k *kernelRoutes) close() {
	if err := k.r.Close(); err != nil {
		k.log.Error("kernel routes", "err", err)
	}
}
