package daemon

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/config"
	"github.com/pdrelay/pdrelay/dataplane/kroute"
	"github.com/pdrelay/pdrelay/dataplane/nftguard"
	"github.com/pdrelay/pdrelay/fib"
)

// fakeRoutes records what the sink asks of the Router.
type fakeRoutes struct {
	calls    []string
	restored []kroute.Route
	closed   bool
}

func (f *fakeRoutes) Add(r kroute.Route) bool {
	f.calls = append(f.calls, fmt.Sprintf("add %v %s %v %x", r.Prefix, r.Port, r.NextHop, r.MAC[5]))
	return true
}

func (f *fakeRoutes) Update(r kroute.Route) bool {
	f.calls = append(f.calls, fmt.Sprintf("update %v %s %v %x", r.Prefix, r.Port, r.NextHop, r.MAC[5]))
	return true
}

func (f *fakeRoutes) Delete(p netip.Prefix, port string) bool {
	f.calls = append(f.calls, fmt.Sprintf("delete %v %s", p, port))
	return true
}

func (f *fakeRoutes) Flush() error {
	f.calls = append(f.calls, "flush")
	return nil
}

func (f *fakeRoutes) Restore(rs iter.Seq[kroute.Route]) int {
	f.restored = slices.Collect(rs)
	return len(f.restored)
}

func (f *fakeRoutes) AddPorts(names ...string) error {
	f.calls = append(f.calls, "ports "+strings.Join(names, " "))
	return nil
}

func (f *fakeRoutes) Run(context.Context) error { return nil }
func (f *fakeRoutes) Close() error              { f.closed = true; return nil }

func kernelConfig(mode config.DataplaneMode) *config.Config {
	return &config.Config{
		Dataplane: config.Dataplane{Mode: mode},
		Kernel:    config.Kernel{Table: 100, FlushOnStop: true},
		Downlinks: []config.Downlink{{Interface: "dl0"}, {Interface: "dl1"}},
	}
}

// TestStartKernelRoutes: only dataplane.mode kernel opens the Router,
// with the downlinks, table and flush_on_stop of the config; IPv6
// forwarding off is said at error level, and the relay runs on; a Router
// that cannot be opened stops the start.
func TestStartKernelRoutes(t *testing.T) {
	for _, mode := range []config.DataplaneMode{config.DataplaneOff, config.DataplaneXDP, config.DataplaneXDPGeneric} {
		k := routeKernel{open: func(kroute.Config) (routeWriter, error) {
			t.Fatalf("Router opened in mode %s", mode)
			return nil, nil
		}}
		if kr, err := startKernelRoutes(kernelConfig(mode), slog.New(slog.DiscardHandler), k); kr != nil || err != nil {
			t.Fatalf("mode %s: %v %v", mode, kr, err)
		}
	}
	for _, fwd := range []string{"0", "1"} {
		var log strings.Builder
		var got kroute.Config
		k := routeKernel{
			open:       func(c kroute.Config) (routeWriter, error) { got = c; return &fakeRoutes{}, nil },
			forwarding: func() (string, error) { return fwd, nil },
		}
		kr, err := startKernelRoutes(kernelConfig(config.DataplaneKernel), slog.New(slog.NewTextHandler(&log, nil)), k)
		if err != nil || kr == nil {
			t.Fatalf("forwarding %s: %v", fwd, err)
		}
		if !slices.Equal(got.Ports, []string{"dl0", "dl1"}) || got.Table != 100 || !got.FlushOnStop {
			t.Errorf("Router config %+v", got)
		}
		warned := strings.Contains(log.String(), `level=ERROR msg="dataplane.mode kernel, but IPv6 forwarding is off (net.ipv6.conf.all.forwarding=0): the kernel forwards nothing`)
		if warned != (fwd == "0") {
			t.Errorf("forwarding %s: error logged %v:\n%s", fwd, warned, log.String())
		}
	}
	cause := errors.New("kroute: netlink: operation not permitted (writing routes needs CAP_NET_ADMIN)")
	k := routeKernel{
		open:       func(kroute.Config) (routeWriter, error) { return nil, cause },
		forwarding: func() (string, error) { return "1", nil },
	}
	if _, err := startKernelRoutes(kernelConfig(config.DataplaneKernel), slog.New(slog.DiscardHandler), k); !errors.Is(err, cause) ||
		!strings.Contains(err.Error(), "dataplane.mode kernel") {
		t.Errorf("a Router that cannot open: %v", err)
	}
}

// TestKernelSink: each change with a route becomes one Router call, a
// lifetime refresh and a port no longer configured none, and a batch
// one Flush (none when nothing changed).
func TestKernelSink(t *testing.T) {
	f := &fakeRoutes{}
	kr := &kernelRoutes{r: f, log: slog.New(slog.DiscardHandler)}
	kr.ports.Store(&map[string]bool{"dl0": true, "dl1": true})
	b := func(port, prefix, hop string, mac byte) binding.Binding {
		return binding.Binding{Key: binding.Key{Port: port, Prefix: netip.MustParsePrefix(prefix)}, NextHop: netip.MustParseAddr(hop), MAC: [6]byte{2, 0, 0, 0, 0, mac}}
	}
	kr.Sink([]binding.Change{
		{Op: binding.Added, Binding: b("dl0", "2001:db8:1::/48", "fe80::1", 1), RouteChanged: true},
		{Op: binding.Updated, Binding: b("dl0", "2001:db8:1::/48", "fe80::1", 2), RouteChanged: true},
		{Op: binding.Updated, Binding: b("dl0", "2001:db8:1::/48", "fe80::1", 2)}, // a renewal
		{Op: binding.Added, Binding: b("gone", "2001:db8:9::/48", "fe80::9", 9), RouteChanged: true},
		{Op: binding.Removed, Binding: b("dl1", "2001:db8:2::/48", "fe80::2", 2), RouteChanged: true, Reason: binding.ReasonReleased},
	})
	want := []string{
		"add 2001:db8:1::/48 dl0 fe80::1 1",
		"update 2001:db8:1::/48 dl0 fe80::1 2",
		"delete 2001:db8:2::/48 dl1",
		"flush",
	}
	if !slices.Equal(f.calls, want) {
		t.Errorf("calls:\n%s\nwant\n%s", strings.Join(f.calls, "\n"), strings.Join(want, "\n"))
	}
	f.calls = nil
	kr.Sink([]binding.Change{{Op: binding.Updated, Binding: b("dl0", "2001:db8:1::/48", "fe80::1", 2)}})
	if len(f.calls) != 0 {
		t.Errorf("a batch of renewals: %v", f.calls)
	}
}

// TestKernelReconfigure: a reload's new downlink is routed from then on;
// a removed one's bindings keep their routes until they go.
func TestKernelReconfigure(t *testing.T) {
	f := &fakeRoutes{}
	kr := &kernelRoutes{r: f, log: slog.New(slog.DiscardHandler)}
	kr.ports.Store(&map[string]bool{"dl0": true, "dl1": true})
	cfg := &config.Config{Downlinks: []config.Downlink{{Interface: "dl0"}, {Interface: "dl2"}}} // dl1 removed, dl2 added
	if err := kr.reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	b := func(port, prefix string) binding.Binding {
		return binding.Binding{Key: binding.Key{Port: port, Prefix: netip.MustParsePrefix(prefix)}, NextHop: netip.MustParseAddr("fe80::1")}
	}
	kr.Sink([]binding.Change{
		{Op: binding.Added, Binding: b("dl2", "2001:db8:2::/48"), RouteChanged: true},
		{Op: binding.Removed, Binding: b("dl1", "2001:db8:1::/48"), RouteChanged: true, Reason: binding.ReasonExpired},
	})
	want := []string{"ports dl2", "add 2001:db8:2::/48 dl2 fe80::1 0", "delete 2001:db8:1::/48 dl1", "flush"}
	if !slices.Equal(f.calls, want) {
		t.Errorf("calls:\n%s\nwant\n%s", strings.Join(f.calls, "\n"), strings.Join(want, "\n"))
	}
	f.calls = nil
	if err := kr.reconfigure(cfg); err != nil || len(f.calls) != 0 {
		t.Errorf("the same config again: %v %v", f.calls, err)
	}
}

// TestKernelRestore: the restored FIB's routes reach the Router with
// their port names, next hops and MACs.
func TestKernelRestore(t *testing.T) {
	ft := fib.NewTable()
	ports := map[string]fib.PortID{"up0": 0, "dl0": 1, "dl1": 2}
	for _, r := range []fib.Route{
		{Prefix: netip.MustParsePrefix("2001:db8:1::/48"), Port: 1, NextHop: netip.MustParseAddr("fe80::1"), MAC: [6]byte{2, 0, 0, 0, 0, 1}},
		{Prefix: netip.MustParsePrefix("2001:db8:2:100::/56"), Port: 2, NextHop: netip.MustParseAddr("fe80::2")},
	} {
		if err := ft.AddRoute(r); err != nil {
			t.Fatal(err)
		}
	}
	ft.Publish()
	f := &fakeRoutes{}
	kr := &kernelRoutes{r: f, log: slog.New(slog.DiscardHandler)}
	kr.restore(ft.Load(), ports)
	slices.SortFunc(f.restored, func(a, b kroute.Route) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })
	want := []kroute.Route{
		{Prefix: netip.MustParsePrefix("2001:db8:1::/48"), Port: "dl0", NextHop: netip.MustParseAddr("fe80::1"), MAC: [6]byte{2, 0, 0, 0, 0, 1}},
		{Prefix: netip.MustParsePrefix("2001:db8:2:100::/56"), Port: "dl1", NextHop: netip.MustParseAddr("fe80::2")},
	}
	if !slices.Equal(f.restored, want) {
		t.Errorf("restored %v, want %v", f.restored, want)
	}
	var none *kernelRoutes
	none.restore(ft.Load(), ports) // no Router: nothing, and no panic
	if s := none.sinks([]binding.Sink{nil}); len(s) != 1 {
		t.Errorf("sinks without a Router: %d", len(s))
	}
}

// TestGuardInKernelMode: the nftables guard is installed in kernel mode
// too, in its kernel mode (loops, kept on stop unless flush_on_stop):
// there the kernel forwards every packet from the downlinks, so a guard
// that cannot be installed stops the start even with forwarding off.
func TestGuardInKernelMode(t *testing.T) {
	var got nftguard.Config
	k := guardKernel{install: func(c nftguard.Config) (*nftguard.Guard, error) {
		got = c
		return nil, errors.New("no nf_tables here")
	}, forwarding: func([]string) ([]string, error) { return nil, nil }}
	cfg := kernelConfig(config.DataplaneKernel)
	cfg.Downlinks[1].LinkType = config.MultiAccess
	cfg.Downlinks[1].LoopICMP = true
	_, err := startGuard(cfg, slog.New(slog.DiscardHandler), k)
	if err == nil || !strings.Contains(err.Error(), "no nf_tables here") {
		t.Errorf("kernel mode without nf_tables: %v, want the start refused with the cause", err)
	}
	if !got.Kernel || got.Keep || len(got.Ports) != 2 || !got.Ports[1].MultiAccess || !got.Ports[1].LoopICMP || got.Ports[0].MultiAccess {
		t.Errorf("guard config %+v: want kernel mode, not kept (flush_on_stop), dl1 multi-access with loop_icmp", got)
	}
	if _, err := startGuard(kernelConfig(config.DataplaneXDP), slog.New(slog.DiscardHandler), k); err != nil || got.Kernel {
		t.Errorf("xdp mode, forwarding off: %v (want a warning only); kernel %v", err, got.Kernel)
	}
}
