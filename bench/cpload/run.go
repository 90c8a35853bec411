package cpload

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pdrelay/pdrelay/bench/lab"
	"github.com/pdrelay/pdrelay/dataplane/kroute"
)

// Server names for Options.Server.
const (
	ServerFast = "fast" // the Responder, in this process
	ServerKea  = "kea"  // kea-dhcp6 (Debian kea-dhcp6-server)
)

// Relay names for Options.Relay.
const (
	RelayPdrelay  = "pdrelay"  // pdrelay, in Options.Dataplane's mode
	RelayDhcrelay = "dhcrelay" // ISC dhcrelay -6 (Debian isc-dhcp-relay): relays, learns nothing
)

// Options configures Run.
type Options struct {
	// Relay is RelayPdrelay (default) or RelayDhcrelay, the baseline: a
	// relay that neither snoops nor routes, with the fast responder only.
	Relay   string
	Pdrelay string // pdrelay binary
	// Dataplane is pdrelay's dataplane.mode: kernel (default), xdp (the
	// AF_XDP plane: its FIB and XDP route map take the bindings; no
	// kernel route to watch, so the latency is pdrelay's own install
	// histogram), or off (relay and snoop, route nothing: the relay's
	// own cost).
	Dataplane string
	Clients   int
	Server    string // ServerFast (default) or ServerKea
	Window    int    // GenConfig.Window
	Rate      int    // GenConfig.Rate
	Timeout   time.Duration
	// Verify reads every binding through pdrelay's API after the bind
	// phase and checks each against the generator's (default: up to
	// 100,000 clients).
	Verify *bool
	// Perf, when set, records the relay with `perf record -g` during
	// PerfPhase (default: the bind phase) into this file.
	Perf      string
	PerfPhase Phase
	// PdrelayEnv is added to pdrelay's environment (e.g. GOMAXPROCS=1).
	PdrelayEnv []string
	// RelayCPUs, when set, is the taskset list the relay (pdrelay or
	// dhcrelay) runs on from its start: "1" measures it on one core of
	// its own (pdrelay's GOMAXPROCS follows), while the generator and the
	// responder, in this process, are pinned elsewhere by the caller
	// (PinSelf).
	RelayCPUs string
	// RelayCPUShare, when set (0 < share <= 1), caps the relay at that
	// share of one CPU with a CFS quota (lab.LimitCPU), so that the
	// relay, not the lab, limits the rate: its messages a second over
	// the share are then what a whole core carries. Latency figures mean
	// little under a quota: a throttled relay waits up to a period.
	RelayCPUShare float64
	Tag           string // lab tag (letters and digits)
	Logf          func(format string, args ...any)
}

// PhaseFigures are one phase's figures.
type PhaseFigures struct {
	PhaseResult
	// Relayed is the change of pdrelay_dhcp_messages_total (both
	// directions) over the phase; RelayCPU the change of pdrelay's
	// process_cpu_seconds_total (all its threads). For dhcrelay, Relayed
	// is twice the Relay-Forwards the responder answered (each one
	// relayed up, its answer down), RelayCPU from /proc.
	Relayed  float64
	RelayCPU float64
	// Settled is how long after the phase began pdrelay's bindings gauge
	// reached the phase's expected count (Clients after bind and renew,
	// zero after release); zero if it never did.
	Settled time.Duration
	// Drops is the change of pdrelay_dhcp_drops_total over the phase;
	// DropSeries each series of it and of pdrelay_dhcp_client_drops_total
	// (the per-port ones) that changed.
	Drops      float64
	DropSeries map[string]float64
	// Allocated is the change of go_memstats_alloc_bytes_total, GCs of
	// go_gc_duration_seconds_count: what feeds the collector that shares
	// pdrelay's core (zero for dhcrelay).
	Allocated float64
	GCs       float64
}

// MsgRate is relayed messages a second of wall time.
func (f PhaseFigures) MsgRate() float64 { return f.Relayed / f.Duration.Seconds() }

// MsgPerCPU is relayed messages per second of pdrelay's CPU time: the
// rate one core fully given to pdrelay would carry.
func (f PhaseFigures) MsgPerCPU() float64 {
	if f.RelayCPU == 0 {
		return 0
	}
	return f.Relayed / f.RelayCPU
}

// Result is what Run measured and checked.
type Result struct {
	Options Options
	Phases  []PhaseFigures
	// Bound is how many clients hold a prefix after the bind phase;
	// WrongPrefix how many of them hold another than PrefixFor (fast
	// responder only).
	Bound, WrongPrefix int
	// APIBindings is how many bindings pdrelay's API listed after the
	// bind phase, APIMismatch how many of the generator's bindings it did
	// not list exactly (port, DUID, IAID, prefix); -1 when not verified.
	APIBindings, APIMismatch int
	// BindingsAfterRelease is pdrelay's bindings gauge after the release
	// phase; RoutesLeft its kernel routes (protocol 157) then.
	BindingsAfterRelease, RoutesLeft int
	// Route latency: for each bound client, the route's notification
	// time minus the Reply's arrival at the generator.
	Latency LatencyFigures
	// Installs are pdrelay's own pdrelay_binding_install_seconds over
	// the bind phase: from the Reply reaching the relay to its binding's
	// batch in the dataplane (the FIB, the kernel's route and sets).
	Installs []Bucket
	// Memory after the renew phase (N bindings), against before the bind
	// phase: Go heap in use, the heap's goal / 2 (the live heap at the
	// last GC, with GOGC 100), RSS.
	HeapAlloc, LiveHeap, RSS MemDelta
	// BindingRate is bindings installed a second in the bind phase:
	// Clients over the time from its start to the gauge reaching Clients.
	BindingRate float64
	// RouteRate is kernel routes a second over the same time.
	RouteRate float64
	// RelayCPUs is the CPUs the relay process was allowed, as /proc
	// lists them.
	RelayCPUs string
}

// MemDelta is a memory figure before and after, in bytes.
type MemDelta struct{ Before, After float64 }

// PerBinding divides the growth by n.
func (m MemDelta) PerBinding(n int) float64 {
	if n == 0 {
		return 0
	}
	return (m.After - m.Before) / float64(n)
}

// LatencyFigures summarise the Reply-to-route times.
type LatencyFigures struct {
	N        int // clients with both a Reply and a route seen
	Missing  int // bound clients whose route was never seen
	Negative int // routes seen before the Reply arrived
	// NoStamp counts the generator's answers (all phases so far) timed
	// on reading, without the kernel's receive time: late.
	NoStamp       uint64
	P50, P99, Max time.Duration
	WatchErrors   []error
	// Slow counts the routes more than SlowAfter behind their Reply by
	// the second (since the first Reply) their Reply came in: stalls
	// show as clusters.
	Slow map[int]int
}

// SlowAfter is the latency LatencyFigures.Slow counts from.
const SlowAfter = 50 * time.Millisecond

// Run builds a lab, runs the relay (pdrelay in Options.Dataplane mode, or
// the dhcrelay baseline) between the generator and a server, makes every
// client bind, renew and release, and returns the figures. It fails if
// the lab, a process or a phase cannot run; the counts it checks are in
// the Result for the caller to judge.
func Run(ctx context.Context, o Options) (res Result, err error) {
	if o.Server == "" {
		o.Server = ServerFast
	}
	if o.Relay == "" {
		o.Relay = RelayPdrelay
	}
	switch {
	case o.Relay != RelayPdrelay && o.Relay != RelayDhcrelay:
		return res, fmt.Errorf("relay %q: pdrelay or dhcrelay", o.Relay)
	case o.Relay == RelayDhcrelay && o.Server != ServerFast:
		return res, errors.New("the dhcrelay baseline runs with the fast responder only")
	case o.Relay == RelayDhcrelay && o.Perf != "":
		return res, errors.New("-perf records pdrelay only")
	}
	o.Dataplane = cmp.Or(o.Dataplane, "kernel")
	if o.Dataplane != "kernel" && o.Dataplane != "xdp" && o.Dataplane != "off" {
		return res, fmt.Errorf("dataplane %q: kernel, xdp or off", o.Dataplane)
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	verify := o.Clients <= 100_000
	if o.Verify != nil {
		verify = *o.Verify
	}
	res.Options = o
	res.APIBindings, res.APIMismatch = -1, -1
	l, err := lab.New(lab.Config{Clients: 1, Forwarding: true, Tag: o.Tag, Logf: o.Logf})
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, l.Close()) }()

	var resp *Responder
	switch o.Server {
	case ServerFast:
		c, err := l.ListenUDP(l.ServerNS, netip.MustParseAddrPort("[::]:547"))
		if err != nil {
			return res, fmt.Errorf("responder socket: %w", err)
		}
		bigBuffers(c)
		defer c.Close()
		resp = NewResponder()
		go resp.Serve(c)
	case ServerKea:
		pool := netip.MustParsePrefix("2001:db8::/36") // 2^20 /56s
		if _, err := l.StartKea(lab.KeaOptions{
			Subnets: []lab.KeaSubnet{{ID: 1, Subnet: lab.DownlinkPrefix(0), InterfaceID: "dl0",
				Pools: []lab.PDPool{{Prefix: pool, DelegatedLen: 56}}}},
			RenewTimer: 900, RebindTimer: 1440, PreferredLifetime: 1800, ValidLifetime: 3600,
			// One log line per lease at INFO would be Kea's cost, not
			// the relay's: warnings only.
			Extra: map[string]any{"loggers": []any{map[string]any{
				"name": "kea-dhcp6", "severity": "WARN",
				"output_options": []any{map[string]any{"output": "stdout"}}}}},
		}); err != nil {
			return res, err
		}
	default:
		return res, fmt.Errorf("server %q: fast or kea", o.Server)
	}

	if o.Relay == RelayDhcrelay {
		return runDhcrelay(ctx, o, l, resp, res)
	}
	const metricsAddr = "127.0.0.1:9547"
	cfg := l.PdrelayConfigWith(lab.PdrelayConfigOptions{
		LinkType: "multi-access",
		Ports:    []int{0},
		LogLevel: "info",
		PerPort:  "    max_delegations: 0\n    max_per_client: 0\n    max_client_rate: 0\n",
		Extra: fmt.Sprintf("metrics_listen: %q\ndataplane:\n  mode: %s\nkernel:\n  flush_on_stop: true\n",
			metricsAddr, o.Dataplane),
	})
	relay, err := l.StartPdrelayWith(o.Pdrelay, cfg, lab.PdrelayRun{Env: o.PdrelayEnv, CPUs: o.RelayCPUs})
	if err != nil {
		return res, err
	}
	undo, err := placed(relay.Proc, o, &res)
	if err != nil {
		return res, err
	}
	defer undo()
	met := NewMetrics(metricsAddr, func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = l.InNS(l.RelayNS, func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	})
	routes, err := WatchRoutes(l.RelayNS, kroute.Protocol)
	if err != nil {
		return res, err
	}
	defer routes.Stop()

	gen, closeGen, err := startGenerator(l, o)
	if err != nil {
		return res, err
	}
	defer closeGen()

	base, err := met.Scrape()
	if err != nil {
		return res, fmt.Errorf("%w; pdrelay's log:\n%s", err, relay.Proc.LogTail(20))
	}
	for _, p := range []Phase{PhaseBind, PhaseRenew, PhaseRelease} {
		want := o.Clients
		if p == PhaseRelease {
			want = 0
		}
		var perf *exec.Cmd
		if o.Perf != "" && p == cmp.Or(o.PerfPhase, PhaseBind) {
			perf = exec.Command("perf", "record", "-F", "999", "-g", "-o", o.Perf, "-p", strconv.Itoa(relay.Proc.Pid()))
			perf.Stdout, perf.Stderr = io.Discard, io.Discard
			if err := perf.Start(); err != nil {
				return res, fmt.Errorf("perf: %w", err)
			}
			time.Sleep(300 * time.Millisecond)
		}
		before, err := met.Scrape()
		if err != nil {
			return res, err
		}
		o.Logf("cpload: phase %s: %d clients", p, o.Clients)
		pr, err := gen.RunPhase(ctx, p)
		if err != nil {
			return res, fmt.Errorf("phase %s: %w", p, err)
		}
		after, err := met.Scrape()
		if err != nil {
			return res, err
		}
		if perf != nil {
			_ = perf.Process.Signal(syscall.SIGINT)
			_ = perf.Wait()
		}
		f := PhaseFigures{PhaseResult: pr,
			Relayed:  after.Sum("pdrelay_dhcp_messages_total") - before.Sum("pdrelay_dhcp_messages_total"),
			RelayCPU: after.Sum("process_cpu_seconds_total") - before.Sum("process_cpu_seconds_total"),
			// Every drop, the per-port ones included, is in this total.
			Drops:     after.Sum("pdrelay_dhcp_drops_total") - before.Sum("pdrelay_dhcp_drops_total"),
			Allocated: after.Sum("go_memstats_alloc_bytes_total") - before.Sum("go_memstats_alloc_bytes_total"),
			GCs:       after.Sum("go_gc_duration_seconds_count") - before.Sum("go_gc_duration_seconds_count"),
		}
		f.DropSeries = changed(before, after, "pdrelay_dhcp_drops_total", "pdrelay_dhcp_client_drops_total")
		// The bindings gauge trails the Replies: the binding table's
		// owner applies them in batches after the relay sends them on.
		settled, last, err := waitGauge(ctx, met, want, before.At, 30*time.Second+time.Duration(o.Clients)*20*time.Microsecond)
		if err != nil {
			return res, err
		}
		f.Settled = settled
		if p == PhaseBind {
			if settled > 0 {
				res.BindingRate = float64(o.Clients) / settled.Seconds()
			}
			res.Bound, res.WrongPrefix, res.Latency = bindFigures(gen, routes, resp != nil, o.Dataplane == "kernel")
			res.Installs = HistogramDelta(before, last, "pdrelay_binding_install_seconds")
			n, _, _ := routes.Counts()
			if settled > 0 {
				res.RouteRate = float64(n) / settled.Seconds()
			}
			if verify {
				res.APIBindings, res.APIMismatch, err = verifyAPI(relay, gen, l.Downlinks[0].Name)
				if err != nil {
					return res, err
				}
			}
		}
		if p == PhaseRenew {
			res.HeapAlloc = MemDelta{base.Sum("go_memstats_heap_alloc_bytes"), last.Sum("go_memstats_heap_alloc_bytes")}
			res.LiveHeap = MemDelta{base.Sum("go_memstats_next_gc_bytes") / 2, last.Sum("go_memstats_next_gc_bytes") / 2}
			res.RSS = MemDelta{base.Sum("process_resident_memory_bytes"), last.Sum("process_resident_memory_bytes")}
		}
		if p == PhaseRelease {
			res.BindingsAfterRelease = int(last.Sum("pdrelay_bindings"))
			out, err := l.Run(l.RelayNS, "ip", "-6", "route", "show", "proto", strconv.Itoa(kroute.Protocol))
			if err != nil {
				return res, err
			}
			if out = strings.TrimSpace(out); out != "" {
				res.RoutesLeft = strings.Count(out, "\n") + 1
			}
		}
		res.Phases = append(res.Phases, f)
		o.Logf("cpload: phase %s done in %v: %.0f relayed, %d failed, %d retransmitted", p, pr.Duration.Round(time.Millisecond), f.Relayed, pr.Failed, pr.Retransmits)
	}
	_, _, res.Latency.WatchErrors = routes.Counts()
	return res, nil
}

// startGenerator opens the clients' socket in the lab's first client
// namespace and starts a Generator on it, sending to
// All_DHCP_Relay_Agents_and_Servers on the client link.
func startGenerator(l *lab.Lab, o Options) (*Generator, func(), error) {
	conn, err := l.ListenUDP(l.ClientNS[0], netip.MustParseAddrPort("[::]:546"))
	if err != nil {
		return nil, nil, fmt.Errorf("client socket: %w", err)
	}
	bigBuffers(conn)
	dst := netip.AddrPortFrom(netip.MustParseAddr("ff02::1:2").WithZone(strconv.Itoa(l.ClientLinks[0].PeerIndex)), 547)
	gen, err := NewGenerator(GenConfig{Conn: conn, Dst: dst, Clients: o.Clients, Window: o.Window, Rate: o.Rate, Timeout: o.Timeout})
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	go gen.Receive()
	return gen, func() { conn.Close() }, nil
}

// runDhcrelay runs the phases through ISC dhcrelay, the baseline: the
// same lab, generator and responder, a relay that keeps no state. The
// figures are the phases' and the clients bound; the rest of the
// Result (bindings, routes, latency, memory) is pdrelay's alone.
func runDhcrelay(ctx context.Context, o Options, l *lab.Lab, resp *Responder, res Result) (Result, error) {
	relay, err := l.StartDhcrelay(lab.DhcrelayOptions{Ports: []int{0}, CPUs: o.RelayCPUs})
	if err != nil {
		return res, err
	}
	defer relay.Stop()
	undo, err := placed(relay, o, &res)
	if err != nil {
		return res, err
	}
	defer undo()
	gen, closeGen, err := startGenerator(l, o)
	if err != nil {
		return res, err
	}
	defer closeGen()
	for _, p := range []Phase{PhaseBind, PhaseRenew, PhaseRelease} {
		cpu0, err := relay.CPUTime()
		if err != nil {
			return res, err
		}
		answered0 := resp.Answered.Load()
		pr, err := gen.RunPhase(ctx, p)
		if err != nil {
			return res, fmt.Errorf("phase %s: %w", p, err)
		}
		cpu1, err := relay.CPUTime()
		if err != nil {
			return res, err
		}
		f := PhaseFigures{PhaseResult: pr,
			Relayed:  2 * float64(resp.Answered.Load()-answered0),
			RelayCPU: (cpu1 - cpu0).Seconds(),
		}
		if p == PhaseBind {
			bs := gen.Bindings()
			res.Bound, res.WrongPrefix = len(bs), wrongPrefixes(bs)
		}
		res.Phases = append(res.Phases, f)
		o.Logf("cpload: dhcrelay phase %s done in %v: %.0f relayed, %d failed, %d retransmitted", p, pr.Duration.Round(time.Millisecond), f.Relayed, pr.Failed, pr.Retransmits)
	}
	return res, nil
}

// changed returns the series of the named metrics that changed from a
// to b, with the change.
func changed(a, b Sample, names ...string) map[string]float64 {
	d := map[string]float64{}
	for k, v := range b.Series {
		n, _, _ := strings.Cut(k, "{")
		if slices.Contains(names, n) && v != a.Series[k] {
			d[k] = v - a.Series[k]
		}
	}
	return d
}

// bigBuffers gives a socket 32 MiB buffers each way (SO_RCVBUFFORCE as
// root, past net.core.rmem_max), so that a window of messages in flight
// never overflows them.
func bigBuffers(c *net.UDPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 32<<20)
		_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, 32<<20)
	})
}

// waitGauge polls pdrelay_bindings until it equals want and returns how
// long after since it first did, with the last scrape.
func waitGauge(ctx context.Context, met *Metrics, want int, since time.Time, timeout time.Duration) (time.Duration, Sample, error) {
	deadline := time.Now().Add(timeout)
	for {
		s, err := met.Scrape()
		if err != nil {
			return 0, s, err
		}
		if int(s.Sum("pdrelay_bindings")) == want {
			return s.At.Sub(since), s, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, s, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// bindFigures counts the clients holding a prefix, those holding another
// than PrefixFor (checkPrefix), and the Reply-to-route latencies (after
// waiting for the routes, when the relay makes them).
func bindFigures(gen *Generator, w *RouteWatch, checkPrefix, routes bool) (bound, wrong int, lat LatencyFigures) {
	bs := gen.Bindings()
	// Every route the relay installs is timed once it has been seen;
	// wait (a bounded time) for the notifications still on their way.
	for deadline := time.Now().Add(10 * time.Second); routes && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if n, _, _ := w.Counts(); n >= len(bs) {
			break
		}
	}
	lat.NoStamp = gen.NoStamp.Load()
	var ds []time.Duration
	var first time.Time
	for _, b := range bs {
		if first.IsZero() || b.ReplyAt.Before(first) {
			first = b.ReplyAt
		}
	}
	if checkPrefix {
		wrong = wrongPrefixes(bs)
	}
	lat.Slow = map[int]int{}
	for _, b := range bs {
		t, ok := w.Added(b.Prefix)
		if !ok {
			lat.Missing++
			continue
		}
		d := t.Sub(b.ReplyAt)
		if d < 0 {
			lat.Negative++
		}
		if d > SlowAfter {
			lat.Slow[int(b.ReplyAt.Sub(first).Seconds())]++
		}
		ds = append(ds, d)
	}
	slices.Sort(ds)
	lat.N = len(ds)
	if len(ds) > 0 {
		lat.P50 = ds[len(ds)/2]
		lat.P99 = ds[min(len(ds)-1, len(ds)*99/100)]
		lat.Max = ds[len(ds)-1]
	}
	return len(bs), wrong, lat
}

// placed records the CPUs relay may run on in res and, with
// o.RelayCPUShare, caps it there (undo lifts the cap).
func placed(relay *lab.Proc, o Options, res *Result) (undo func() error, err error) {
	if res.RelayCPUs, err = relay.CPUs(); err != nil {
		return nil, err
	}
	if o.RelayCPUShare > 0 {
		return lab.LimitCPU(relay.Pid(), o.RelayCPUShare)
	}
	return func() error { return nil }, nil
}

// wrongPrefixes counts the bindings whose prefix is not PrefixFor their
// client's DUID (what the fast responder delegates).
func wrongPrefixes(bs []Bound) int {
	n := 0
	for _, b := range bs {
		if b.Prefix != PrefixFor(ClientDUID(b.Client)) {
			n++
		}
	}
	return n
}

// verifyAPI lists pdrelay's bindings and checks the generator's against
// them: every bound client's (port, DUID, IAID 1, prefix) must be there.
func verifyAPI(r *lab.Pdrelay, gen *Generator, port string) (n, mismatch int, err error) {
	list, err := r.Bindings()
	if err != nil {
		return 0, 0, fmt.Errorf("verify bindings: %w", err)
	}
	type key struct {
		duid   string
		prefix netip.Prefix
	}
	have := make(map[key]bool, len(list))
	for _, b := range list {
		if b.Interface == port && b.IAID == 1 {
			have[key{b.ClientDUID, b.Prefix}] = true
		}
	}
	for _, b := range gen.Bindings() {
		if !have[key{fmt.Sprintf("%x", ClientDUID(b.Client)), b.Prefix}] {
			mismatch++
		}
	}
	return len(list), mismatch, nil
}

// bucketDuration formats a bucket's bound in seconds.
func bucketDuration(s float64) string {
	if math.IsNaN(s) || math.IsInf(s, 0) {
		return fmt.Sprint(s)
	}
	return time.Duration(s * float64(time.Second)).String()
}

// Ratios is the line comparing each phase's messages per CPU-second in
// res with base's (the baseline, measured in the same run).
func Ratios(res, base Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s/%s msgs per cpu-second:", cmp.Or(res.Options.Relay, RelayPdrelay), cmp.Or(base.Options.Relay, RelayPdrelay))
	for i, f := range res.Phases {
		if i < len(base.Phases) && base.Phases[i].MsgPerCPU() > 0 {
			fmt.Fprintf(&b, " %s %.2f", f.Phase, f.MsgPerCPU()/base.Phases[i].MsgPerCPU())
		}
	}
	return b.String() + "\n"
}

// Report writes res as the lines of bench/results/issue15-control.txt.
func (res Result) Report(w io.Writer) {
	o := res.Options
	host, _ := os.Hostname()
	relay := cmp.Or(o.Relay, RelayPdrelay)
	name := relay
	if relay == RelayPdrelay {
		name += " (dataplane " + cmp.Or(o.Dataplane, "kernel") + ")"
	}
	where := res.RelayCPUs
	if o.RelayCPUShare > 0 {
		where += fmt.Sprintf(" capped at %.2f of a cpu", o.RelayCPUShare)
	}
	fmt.Fprintf(w, "cpload: %d clients, relay %s on cpus %s, server %s, window %d, rate %d/s (0: no bound), host %s\n", o.Clients, name, where, o.Server, o.Window, o.Rate, host)
	for _, f := range res.Phases {
		fmt.Fprintf(w, "  %-7s %8.2fs  relayed %9.0f msgs  %8.0f msgs/s  %s cpu %6.2fs  %8.0f msgs per cpu-second  failed %d  retransmits %d  relay drops %.0f  bindings settled %.2fs\n",
			f.Phase, f.Duration.Seconds(), f.Relayed, f.MsgRate(), relay, f.RelayCPU, f.MsgPerCPU(), f.Failed, f.Retransmits, f.Drops, f.Settled.Seconds())
		if s := o.RelayCPUShare; s > 0 && f.Duration > 0 {
			// Saturated (busy near 100 %), msgs/s over the share is what
			// a whole core carries.
			fmt.Fprintf(w, "            busy %.0f %% of its share: %.0f msgs/s over the share\n",
				100*f.RelayCPU/(s*f.Duration.Seconds()), f.MsgRate()/s)
		}
		if f.Allocated > 0 && f.Relayed > 0 {
			fmt.Fprintf(w, "            allocated %.0f B a message, %.0f GC cycles\n", f.Allocated/f.Relayed, f.GCs)
		}
		keys := slices.Sorted(maps.Keys(f.DropSeries))
		for _, k := range keys {
			fmt.Fprintf(w, "            drops %s %.0f\n", k, f.DropSeries[k])
		}
	}
	if relay == RelayDhcrelay {
		fmt.Fprintf(w, "  bound %d, wrong prefix %d (dhcrelay learns and routes nothing)\n", res.Bound, res.WrongPrefix)
		return
	}
	fmt.Fprintf(w, "  bound %d, wrong prefix %d, api bindings %d (mismatched %d), after release: bindings %d, kernel routes %d\n",
		res.Bound, res.WrongPrefix, res.APIBindings, res.APIMismatch, res.BindingsAfterRelease, res.RoutesLeft)
	fmt.Fprintf(w, "  bindings installed %.0f/s, kernel routes %.0f/s (bind phase start to the gauge at %d)\n", res.BindingRate, res.RouteRate, o.Clients)
	lt := res.Latency
	fmt.Fprintf(w, "  reply->route: p50 %v  p99 %v  max %v  (n %d, route before reply %d, never seen %d, watch errors %d, replies without a kernel time %d)\n",
		lt.P50.Round(time.Microsecond), lt.P99.Round(time.Microsecond), lt.Max.Round(time.Microsecond), lt.N, lt.Negative, lt.Missing, len(lt.WatchErrors), lt.NoStamp)
	if is := res.Installs; len(is) > 0 {
		fmt.Fprintf(w, "  reply->installed (pdrelay_binding_install_seconds, bind phase): p50 <= %v  p99 <= %v  within 1ms %.2f%%  (n %.0f)\n",
			bucketDuration(QuantileBound(is, 0.5)), bucketDuration(QuantileBound(is, 0.99)), 100*Within(is, 1e-3), is[len(is)-1].Count)
	}
	if len(lt.Slow) > 0 {
		fmt.Fprintf(w, "  routes more than %v behind their Reply, by the second of the bind phase their Reply came in:", SlowAfter)
		for _, sec := range slices.Sorted(maps.Keys(lt.Slow)) {
			fmt.Fprintf(w, " %ds:%d", sec, lt.Slow[sec])
		}
		fmt.Fprintln(w)
	}
	n := o.Clients
	fmt.Fprintf(w, "  memory per binding: heap alloc %.0f B, live heap (next_gc/2) %.0f B, rss %.0f B  (rss %.1f -> %.1f MiB)\n",
		res.HeapAlloc.PerBinding(n), res.LiveHeap.PerBinding(n), res.RSS.PerBinding(n), res.RSS.Before/(1<<20), res.RSS.After/(1<<20))
}

// PinSelf pins every thread of this process (the generator, the
// responder, the route watch) to cpus, a taskset list; threads started
// later inherit it.
func PinSelf(cpus string) error { return lab.Pin(os.Getpid(), cpus) }
