package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pdrelay/pdrelay/control/api"
	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/config"
	"github.com/pdrelay/pdrelay/control/neigh"
	"github.com/pdrelay/pdrelay/dataplane"
	"github.com/pdrelay/pdrelay/dataplane/plane"
	"github.com/pdrelay/pdrelay/dataplane/xsk"
	"github.com/pdrelay/pdrelay/fib"
)

// forwarding is the running forwarding plane and what reads its counters.
type forwarding struct {
	fwd   *dataplane.Forwarder
	plane *plane.Plane
	names map[fib.PortID]string
	// counters is the plane (a fake in tests): its sockets' and XDP
	// programs' counters, for /metrics and pdrelay stats.
	counters planeCounters
}

// planeCounters are the counters the kernel keeps for the plane.
type planeCounters interface {
	SocketStats() []plane.SocketStats
	ProgramStats() []plane.ProgramStats
}

// startForwarding builds the Forwarder from the config and the ports'
// addresses, attaches the XDP program and opens the AF_XDP sockets. With
// dataplane.mode off or kernel (no AF_XDP plane) it returns nil.
func startForwarding(cfg *config.Config, ports map[string]fib.PortID, routes *xsk.Routes, log *slog.Logger) (*forwarding, error) {
	var mode xsk.Mode
	switch cfg.Dataplane.Mode {
	case config.DataplaneOff, config.DataplaneKernel: // kernel: the kernel forwards (kernel.go)
		return nil, nil
	case config.DataplaneXDP:
		mode = xsk.ModeAuto // native, else generic; neither: the start fails with the cause
	case config.DataplaneXDPGeneric:
		mode = xsk.ModeGeneric
	}
	f := &forwarding{names: map[fib.PortID]string{}}
	dc := dataplane.Config{ICMPRate: cfg.Dataplane.ICMPRate}
	pc := plane.Config{Mode: mode, Queues: cfg.Dataplane.Queues, FrameSize: cfg.Dataplane.FrameSize}
	addPort := func(name string, p dataplane.PortConfig, routes *xsk.Routes) error {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return fmt.Errorf("dataplane: %w", err)
		}
		if len(ifi.HardwareAddr) != 6 {
			return fmt.Errorf("dataplane: %s has no Ethernet address", name)
		}
		p.ID = ports[name]
		p.MAC = [6]byte(ifi.HardwareAddr)
		// A virtual device can hand over partial checksums, which AF_XDP
		// does not mark: complete them. A device without driver
		// information is a software device too (every NIC has a driver).
		drv, derr := xsk.Driver(name)
		p.CompleteChecksums = derr != nil || xsk.PartialChecksums(drv)
		attrs := []any{"interface", name, "driver", drv, "complete_checksums", p.CompleteChecksums}
		if derr != nil {
			attrs = append(attrs, "driver_err", derr)
		}
		log.Info("dataplane port", attrs...)
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok || !ip.Is6() || ip.Is4In6() {
				continue
			}
			pc.Locals = append(pc.Locals, ip)
			switch {
			case ip.IsLinkLocalUnicast() && !p.LinkLocal.IsValid():
				p.LinkLocal = ip
			case ip.IsGlobalUnicast() && !ip.IsLinkLocalUnicast() && !p.ICMPSource.IsValid():
				// Errors must reach hosts behind a client router, which
				// will not forward a link-local source (RFC 4291 2.5.6).
				p.ICMPSource = ip
			}
		}
		dc.Ports = append(dc.Ports, p)
		pc.Ports = append(pc.Ports, plane.Port{Name: name, Ifindex: ifi.Index, ID: p.ID, Routes: routes})
		f.names[p.ID] = name
		return nil
	}
	if err := addPort(cfg.Uplink.Interface, dataplane.PortConfig{
		Uplink: true, NoRoutePass: cfg.Uplink.NoRoute == config.NoRoutePass,
	}, routes); err != nil {
		return nil, err
	}
	for i := range cfg.Downlinks {
		d := &cfg.Downlinks[i]
		if err := addPort(d.Interface, d.PlanePort(), nil); err != nil {
			return nil, err
		}
		dc.LoopOverrides = append(dc.LoopOverrides, d.PlaneLoopOverrides()...)
	}
	fwd, err := dataplane.New(dc)
	if err != nil {
		return nil, err
	}
	f.fwd = fwd
	if f.plane, err = plane.Start(pc, log); err != nil {
		return nil, err // names the cause: privilege, driver, interface
	}
	f.counters = f.plane
	log.Info("forwarding plane attached", "mode", f.plane.Mode(), "ports", len(pc.Ports), "queues", max(pc.Queues, 1))
	return f, nil
}

// run forwards until ctx ends; each worker gets its own Forwarder.
func (f *forwarding) run(ctx context.Context, fibs *fib.FIB) error {
	first := true
	return f.plane.Run(ctx, fibs, func() plane.Decider {
		if first {
			first = false
			return newDecider(f.fwd)
		}
		return newDecider(f.fwd.Clone())
	})
}

// decider adapts a Forwarder to the plane. Frames for the kernel (hop
// limit, no route with no_route: pass) cannot go back once an AF_XDP
// socket holds them: the XDP program passes those it can recognise
// (hop limit <= 1, the relay's own addresses) before they get here, and
// the rest are counted under their reason and dropped.
type decider struct {
	f   *dataplane.Forwarder
	res []dataplane.Result // one batch
}

func newDecider(f *dataplane.Forwarder) decider {
	return decider{f, make([]dataplane.Result, plane.BatchSize)}
}

func (d decider) Decide(snap *fib.Snapshot, in fib.PortID, frames [][]byte, now int64, out []plane.Decision) {
	res := d.res[:len(frames)]
	d.f.ForwardBatch(snap, in, frames, now, res)
	for i, r := range res {
		out[i] = plane.Decision{Port: r.Port, Len: r.Len, Send: r.Verdict == dataplane.Forward || r.Verdict == dataplane.ICMPReply}
	}
}

func (d decider) TxFull(port fib.PortID, n int) {
	for range n {
		d.f.Count(port, dataplane.TxRingFull)
	}
}

func (d decider) Flush() { d.f.Flush() }

var descPackets = prometheus.NewDesc("pdrelay_dataplane_packets_total",
	"Frames the forwarding plane handled, by port and verdict reason: forwarded counts on the egress port, every other reason on the ingress port.",
	[]string{"interface", "reason"}, nil)

var descSocketDrops = prometheus.NewDesc("pdrelay_xsk_drops_total",
	"Frames the kernel's AF_XDP path lost before the forwarding plane saw them or after it sent them, by port, queue and reason (XDP_STATISTICS), each frame once: "+
		"rx_ring_full, fill_ring_empty, rx_dropped (other than for an empty fill ring), rx_invalid_descs, tx_invalid_descs, "+
		"and tx_dropped: frames the device refused to send (copy mode).",
	[]string{"interface", "queue", "reason"}, nil)

// xskDrop is one AF_XDP loss counter of a socket, by reason name.
type xskDrop struct {
	reason string
	n      uint64
}

// socketDrops are a socket's loss counters, each lost frame counted
// once: in copy mode the kernel counts a frame lost to an empty fill ring
// in rx_dropped too (net/xdp/xsk.c, __xsk_rcv; xsk's
// TestFillRingKernelCache checks it), so rx_dropped leaves those out
// there.
func socketDrops(st plane.SocketStats) [6]xskDrop {
	dropped := st.RxDropped
	if !st.ZeroCopy && dropped >= st.RxFillRingEmpty {
		dropped -= st.RxFillRingEmpty
	}
	return [6]xskDrop{
		{"rx_ring_full", st.RxRingFull},
		{"fill_ring_empty", st.RxFillRingEmpty},
		{"rx_dropped", dropped},
		{"rx_invalid_descs", st.RxInvalidDescs},
		{"tx_invalid_descs", st.TxInvalidDescs},
		{"tx_dropped", st.TxDropped},
	}
}

var descProgram = prometheus.NewDesc("pdrelay_xdp_program_total",
	"Frames each port's XDP program saw, by verdict: redirect (to the AF_XDP socket of its queue), pass (to the kernel by a rule), "+
		"no_socket (to the kernel because its queue had no socket: the plane never saw it), aborted (lost in the redirect).",
	[]string{"interface", "verdict"}, nil)

// xdpVerdict is one XDP program counter of a port, by verdict name; lost
// marks the verdicts that are frames the plane should have had and did
// not (pdrelay stats shows those as xdp_<verdict>).
type xdpVerdict struct {
	verdict string
	n       uint64
	lost    bool
}

// programVerdicts are a port's XDP program counters.
func programVerdicts(st plane.ProgramStats) [4]xdpVerdict {
	return [4]xdpVerdict{
		{"redirect", st.Redirected, false},
		{"pass", st.Passed, false},
		{"no_socket", st.NoSocket, true},
		{"aborted", st.Aborted, true},
	}
}

// Describe and Collect make the plane's counters a Prometheus collector.
func (f *forwarding) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPackets
	ch <- descSocketDrops
	ch <- descProgram
}

func (f *forwarding) Collect(ch chan<- prometheus.Metric) {
	for _, st := range f.counters.ProgramStats() {
		for _, v := range programVerdicts(st) {
			ch <- prometheus.MustNewConstMetric(descProgram, prometheus.CounterValue, float64(v.n), st.Port, v.verdict)
		}
	}
	for _, st := range f.counters.SocketStats() {
		q := strconv.Itoa(st.Queue)
		for _, d := range socketDrops(st) {
			ch <- prometheus.MustNewConstMetric(descSocketDrops, prometheus.CounterValue, float64(d.n), st.Port, q, d.reason)
		}
	}
	f.fwd.Each(func(port fib.PortID, r dataplane.Reason, n uint64) {
		name, ok := f.names[port]
		if !ok {
			name = "none"
		}
		ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(n), name, r.String())
	})
}

// newRouteMirror returns the delegated-prefix map the uplink's XDP program
// consults for uplink.no_route: pass (a destination outside every
// delegated prefix goes to the kernel before an AF_XDP socket takes it),
// or nil when there is no AF_XDP plane (mode off or kernel) or no_route
// is drop. It holds as many
// prefixes as the downlinks' max_delegations allow (4M when unlimited).
func newRouteMirror(cfg *config.Config) (*xsk.Routes, error) {
	if cfg.Dataplane.Mode == config.DataplaneOff || cfg.Dataplane.Mode == config.DataplaneKernel || cfg.Uplink.NoRoute != config.NoRoutePass {
		return nil, nil
	}
	size := 0
	for _, d := range cfg.Downlinks {
		if d.MaxDelegations == 0 {
			size = 4 << 20
			break
		}
		size += d.MaxDelegations
	}
	r, err := xsk.NewRoutes(size)
	if err != nil {
		return nil, fmt.Errorf("dataplane: delegated prefix map for uplink.no_route pass: %w", err)
	}
	return r, nil
}

// clientLoopPolicies returns the per-client loop policy lookup of the
// config's loop_overrides (client entries), or nil when there are none.
func clientLoopPolicies(cfg *config.Config) func(port, duid string) fib.LoopPolicy {
	type key struct{ port, duid string }
	m := map[key]fib.LoopPolicy{}
	for _, d := range cfg.Downlinks {
		for _, o := range d.LoopOverrides {
			if o.Client != nil {
				m[key{d.Interface, string(o.Client)}] = o.Policy.FIB()
			}
		}
	}
	if len(m) == 0 {
		return nil
	}
	return func(port, duid string) fib.LoopPolicy { return m[key{port, duid}] }
}

// watchGateway keeps the FIB's default route on the uplink gateway's
// current MAC, from the kernel's neighbour table.
func watchGateway(ctx context.Context, cfg *config.Config, fw *fibWriter, log *slog.Logger) error {
	return neigh.Watch(ctx, cfg.Uplink.Interface, cfg.Uplink.Gateway, log, func(gw neigh.Gateway, ok bool) {
		var r *fib.Route
		if ok {
			r = &fib.Route{Port: 0, NextHop: gw.Addr.WithZone(""), MAC: gw.MAC}
		}
		if err := fw.SetDefault(r); err != nil {
			log.Error("fib default route", "err", err)
			return
		}
		log.Info("uplink gateway", "addr", gw.Addr, "mac", binding.MACString(gw.MAC), "usable", ok)
	})
}

// stats gives `pdrelay stats` the plane's counters by port.
func (f *forwarding) stats() []api.PortStatsJSON {
	var out []api.PortStatsJSON
	for id := range f.names {
		st, ok := f.fwd.Counters(id)
		if !ok {
			continue
		}
		p := api.PortStatsJSON{Interface: f.names[id], RxPackets: st.RxPackets, RxBytes: st.RxBytes,
			TxBytes: st.ForwardedBytes, Packets: map[string]uint64{}}
		for r, n := range st.ByReason {
			p.Packets[dataplane.Reason(r).String()] = n
		}
		out = append(out, p)
	}
	// The frames the XDP program did not hand to the plane's sockets
	// (xdp_no_socket, xdp_aborted), when not zero.
	for _, st := range f.counters.ProgramStats() {
		for i := range out {
			if out[i].Interface != st.Port {
				continue
			}
			for _, v := range programVerdicts(st) {
				if v.lost && v.n > 0 {
					out[i].Packets["xdp_"+v.verdict] += v.n
				}
			}
		}
	}
	// The frames the kernel's AF_XDP path lost before the plane saw them,
	// summed over the port's queues, as xsk_<reason> when not zero.
	for _, st := range f.counters.SocketStats() {
		for i := range out {
			if out[i].Interface != st.Port {
				continue
			}
			for _, d := range socketDrops(st) {
				if d.n > 0 {
					out[i].Packets["xsk_"+d.reason] += d.n
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Interface < out[j].Interface })
	return out
}
