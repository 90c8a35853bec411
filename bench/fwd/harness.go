package fwd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/pdrelay/pdrelay/bench/lab"
	"github.com/pdrelay/pdrelay/control/api"
	"github.com/pdrelay/pdrelay/dataplane/kroute"
)

// Fixed parts of the harness's setup.
const (
	relayID     = "00:02:00:00:00:09:01:02" // the DUID fakekea's leases were relayed by
	relayIDHex  = "0002000000090102"
	lqPort      = 5470 // lqserver's Bulk Leasequery port in the core namespace
	metricsAddr = "127.0.0.1:9547"
)

// Sink kinds.
const (
	SinkXDP = "xdp" // count-and-drop XDP program on the sink's veth
	SinkUDP = "udp" // UDP sockets in the sink namespace (a normal stack)
)

// Config is one harness: a topology with N delegated prefixes.
type Config struct {
	// Binaries. Xskfwd empty: no ceiling side; Xdpfast empty: no
	// xdpfast side.
	Pdrelay, Fakekea, Xskfwd, Xdpfast string
	N                                 int // delegated prefixes, recovered by Bulk Leasequery
	Queues                            int // queues per veth and dataplane.queues; 0 or 1: one
	Sink                              string
	GenCPU                            int // the core the generator is pinned to
	// RelayCPU is the core, or cores (a taskset list such as "1" or
	// "0-1"), the relay is pinned to.
	RelayCPU string
	// Perf, when set, records every core (perf record -a -g) during each
	// peak window into Perf-<side>-<dir>.data; the last round's stays.
	Perf string
	// Phys, when set, puts interfaces of the caller's namespace in place
	// of the veth pairs: NIC ports cabled to each other (lab.Config.Phys;
	// "up0" is the core side, "dl0" the subscriber side). With them the
	// AF_XDP sides bind in zero-copy where the driver offers it (pdrelay's
	// log says so for each socket).
	Phys map[string][2]string
	Tag  string
	Logf func(format string, args ...any)
}

// ParsePhys reads "up0=A:B,dl0=C:D" into a Config.Phys; "" is nil.
func ParsePhys(s string) (map[string][2]string, error) {
	if s == "" {
		return nil, nil
	}
	out := map[string][2]string{}
	for _, f := range strings.Split(s, ",") {
		name, pair, ok := strings.Cut(f, "=")
		a, b, ok2 := strings.Cut(pair, ":")
		if !ok || !ok2 || a == "" || b == "" || (name != "up0" && name != "dl0") {
			return nil, fmt.Errorf("%q: want up0=IF:IF or dl0=IF:IF", f)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%s given twice", name)
		}
		out[name] = [2]string{a, b}
	}
	return out, nil
}

// Harness is the topology, the lease source and the sides. Its methods
// are not safe for concurrent use.
type Harness struct {
	cfg  Config
	Lab  *lab.Lab
	CPE  string // namespace of the subscriber host (c0)
	Core string // namespace of the core host (the lab's server namespace)

	tmp      string
	sinks    map[Direction]sinkReader
	sides    map[string]Side
	lqs, kea *lab.Proc
	genFiles map[string]string // by traffic key and kind: trafgen config or pcap
	nl       map[string]*netlink.Handle
}

// sinkReader reads what arrived at a sink.
type sinkReader interface {
	Counts() (legit, spoofed uint64, err error)
	Close() error
}

// New builds the topology, starts the lease source (fakekea and
// `pdrelay lqserver` in the core namespace) and the sinks. Close tears
// everything down; on error New has done so already.
func New(cfg Config) (h *Harness, err error) {
	if cfg.Queues < 1 {
		cfg.Queues = 1
	}
	if cfg.Sink == "" {
		cfg.Sink = SinkXDP
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.Sink != SinkXDP && cfg.Sink != SinkUDP {
		return nil, fmt.Errorf("fwd: sink %q: xdp or udp", cfg.Sink)
	}
	if _, err := exec.LookPath("trafgen"); err != nil {
		return nil, errors.New("fwd: trafgen not found (Debian package netsniff-ng)")
	}
	l, err := lab.New(lab.Config{Tag: cfg.Tag, Forwarding: true, Queues: cfg.Queues, Phys: cfg.Phys, Logf: cfg.Logf})
	if err != nil {
		return nil, err
	}
	h = &Harness{cfg: cfg, Lab: l, CPE: l.ClientNS[0], Core: l.ServerNS, sinks: map[Direction]sinkReader{},
		sides: map[string]Side{}, genFiles: map[string]string{}, tmp: l.Dir, nl: map[string]*netlink.Handle{}}
	defer func() {
		if err != nil {
			h.Close()
			h = nil
		}
	}()
	// The cpe host takes every delegated address as its own (a local
	// route), so that a normal UDP stack there receives the downstream
	// frames; the core host has the upstream destination on its loopback.
	if _, err := l.Run(h.CPE, "ip", "-6", "route", "add", "local", lab.DelegatedSpace.String(), "dev", "lo", "table", "local"); err != nil {
		return nil, err
	}
	if err := h.startLeases(); err != nil {
		return nil, err
	}
	for dir, ns := range map[Direction]string{Up: h.Core, Down: h.CPE} {
		var s sinkReader
		if cfg.Sink == SinkXDP {
			s, err = AttachDrop(l, ns, "eth0")
		} else {
			s, err = listenUDP(l, ns)
		}
		if err != nil {
			return nil, err
		}
		h.sinks[dir] = s
	}
	h.sides["floor"] = &floorSide{h: h}
	h.sides["linux"] = &pdrelaySide{h: h, name: "linux", mode: "kernel"}
	h.sides["pdrelay"] = &pdrelaySide{h: h, name: "pdrelay", mode: "xdp"}
	if cfg.Xskfwd != "" {
		h.sides["ceiling"] = &procSide{h: h, name: "ceiling", args: h.ceilingArgs}
	}
	if cfg.Xdpfast != "" {
		h.sides["xdpfast"] = &procSide{h: h, name: "xdpfast", args: h.xdpfastArgs}
	}
	return h, nil
}

// Side returns the named side ("floor", "linux", "pdrelay", "ceiling",
// "xdpfast"),
// or nil.
func (h *Harness) Side(name string) Side { return h.sides[name] }

// startLeases starts fakekea with N leases, all relayed on dl0 with the
// cpe host's link-local address and MAC as next hop, and lqserver in
// front of it, in the core namespace.
func (h *Harness) startLeases() error {
	dl := h.Lab.Downlinks[0]
	kea, err := h.Lab.Start(h.Core, "fakekea", h.cfg.Fakekea, "-n", strconv.Itoa(h.cfg.N), "-dir", h.tmp,
		"-relay-id", relayIDHex, "-ports", "1", "-peer", dl.PeerLinkLocal.String(), "-mac", dl.PeerMAC.String(),
		"-valid", "86400")
	if err != nil {
		return err
	}
	h.kea = kea
	if err := kea.WaitLog("ready ", 60*time.Second); err != nil {
		return err
	}
	listen := netip.AddrPortFrom(lab.ServerAddr, lqPort)
	lqs, err := h.Lab.Start(h.Core, "lqserver", h.cfg.Pdrelay, "lqserver", "--kea-socket", filepath.Join(h.tmp, "kea.sock"),
		"--listen", listen.String(), "--allow", lab.UplinkPrefix.String(), "--server-id", "0003000102000000fe01")
	if err != nil {
		return err
	}
	h.lqs = lqs
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if out, _ := h.Lab.Run(h.Core, "ss", "-Htln", "sport", "= :"+strconv.Itoa(lqPort)); strings.TrimSpace(out) != "" {
			return nil
		}
		if lqs.Exited() || time.Now().After(deadline) {
			return fmt.Errorf("fwd: lqserver does not listen on %s:\n%s", listen, lqs.Log())
		}
	}
}

// Abort stops every process and removes the namespaces (the XDP
// programs go with their interfaces). Unlike Close it may be called from
// another goroutine while the harness runs, for a signal handler.
func (h *Harness) Abort() error { return h.Lab.Close() }

// Close stops every process and removes the namespaces.
func (h *Harness) Close() error {
	var errs []error
	for _, s := range h.sides {
		errs = append(errs, s.Stop())
	}
	for _, s := range h.sinks {
		errs = append(errs, s.Close())
	}
	for _, nh := range h.nl {
		nh.Close()
	}
	errs = append(errs, h.Lab.Close())
	return errors.Join(errs...)
}

// genNS, genMAC, relayIn: where the generator of dir runs, its MAC, and
// the relay port it sends to.
func (h *Harness) gen(dir Direction) (ns string, mac net.HardwareAddr, relay lab.Link) {
	if dir == Up {
		dl := h.Lab.Downlinks[0]
		return h.CPE, dl.PeerMAC, dl
	}
	return h.Core, h.Lab.Uplink.PeerMAC, h.Lab.Uplink
}

// Traffic returns the traffic of dir with the harness's addresses.
func (h *Harness) Traffic(dir Direction, flows, spoofPct, size int) Traffic {
	_, mac, relay := h.gen(dir)
	return Traffic{Dir: dir, N: h.cfg.N, Flows: flows, SpoofPct: spoofPct, Size: size,
		GenMAC: mac, RelayMAC: relay.MAC, Core: lab.UpstreamAddr}
}

// trafgenConfig writes t's frames to a trafgen config once and returns
// its path and the frames.
func (h *Harness) trafgenConfig(t Traffic) (string, error) {
	return h.genFile(t, "cfg", WriteTrafgen)
}

// pacedPcap returns the pcap file of t's frames for the paced generator
// (pdrelay replay), writing it on first use.
func (h *Harness) pacedPcap(t Traffic) (string, error) {
	return h.genFile(t, "pcap", writePcap)
}

// genFile returns the file of kind for t's frames, written by write on
// first use.
func (h *Harness) genFile(t Traffic, kind string, write func(io.Writer, []Frame) error) (string, error) {
	key := fmt.Sprintf("%s-%d-%d-%d.%s", t.Dir, t.Flows, t.SpoofPct, t.Size, kind)
	if p, ok := h.genFiles[key]; ok {
		return p, nil
	}
	if err := t.Validate(); err != nil {
		return "", fmt.Errorf("fwd: traffic: %w", err)
	}
	p := filepath.Join(h.tmp, "gen-"+key)
	f, err := os.Create(p)
	if err != nil {
		return "", fmt.Errorf("fwd: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	err = errors.Join(write(w, t.Frames()), w.Flush(), f.Close())
	if err != nil {
		return "", fmt.Errorf("fwd: write %s: %w", p, err)
	}
	h.genFiles[key] = p
	return p, nil
}

// linkStats are an interface's counters (IFLA_STATS64).
type linkStats struct {
	RX, TX struct{ Packets, Dropped uint64 }
}

// link reads interface ifname's counters in ns over netlink (a handle
// per namespace, kept: a read takes well under a millisecond, so the
// counters of one snapshot are close in time).
func (h *Harness) link(ns, ifname string) (linkStats, error) {
	nh, ok := h.nl[ns]
	if !ok {
		nsh, err := netns.GetFromName(ns)
		if err != nil {
			return linkStats{}, fmt.Errorf("fwd: netns %s: %w", ns, err)
		}
		nh, err = netlink.NewHandleAt(nsh)
		nsh.Close()
		if err != nil {
			return linkStats{}, fmt.Errorf("fwd: netlink in %s: %w", ns, err)
		}
		h.nl[ns] = nh
	}
	l, err := nh.LinkByName(ifname)
	if err != nil {
		return linkStats{}, fmt.Errorf("fwd: link %s in %s: %w", ifname, ns, err)
	}
	st := l.Attrs().Statistics
	if st == nil {
		return linkStats{}, fmt.Errorf("fwd: link %s in %s: no statistics", ifname, ns)
	}
	var x linkStats
	x.RX.Packets, x.RX.Dropped, x.TX.Packets, x.TX.Dropped = st.RxPackets, st.RxDropped, st.TxPackets, st.TxDropped
	return x, nil
}

// kernelDrops are the drop counters of the veths on the path of dir's
// frames: the generator's end, the relay's two ports, the sink's end,
// by "where/counter". They hold what the kernel dropped before or after
// a relay could count it (a full veth ring, for one).
func (h *Harness) kernelDrops(dir Direction) (map[string]uint64, error) {
	genNS, _, in := h.gen(dir)
	out, sinkNS := h.Lab.Uplink, h.Core
	if dir == Down {
		out, sinkNS = h.Lab.Downlinks[0], h.CPE
	}
	m := map[string]uint64{}
	for _, x := range []struct{ ns, ifname, where string }{
		{genNS, "eth0", "gen-eth0"}, {h.Lab.RelayNS, in.Name, in.Name}, {h.Lab.RelayNS, out.Name, out.Name}, {sinkNS, "eth0", "sink-eth0"},
	} {
		st, err := h.link(x.ns, x.ifname)
		if err != nil {
			return nil, err
		}
		m[x.where+"/kernel_rx_dropped"] += st.RX.Dropped
		m[x.where+"/kernel_tx_dropped"] += st.TX.Dropped
	}
	return m, nil
}

// Side is one way of forwarding between the cpe and the core host.
type Side interface {
	Name() string
	// Start brings the side up and returns once it forwards: N bindings
	// and, in kernel mode, N routes.
	Start() error
	// Stop stops it; stopping a stopped side does nothing.
	Stop() error
	// Counters returns the side's counters by "port/reason" (pdrelay) or
	// name (xskfwd), or nil when it has none.
	Counters() (map[string]uint64, error)
	// Sink returns where the frames of dir are counted: the sink host's,
	// or for the floor the relay's own ingress.
	Sink(dir Direction) sinkReader
}

// pdrelaySide is pdrelay in kernel mode ("linux") or xdp mode.
type pdrelaySide struct {
	h          *Harness
	name, mode string
	dir        string    // config, state and API socket
	proc       *lab.Proc // the running pdrelay; nil when stopped
	running    bool
}

func (s *pdrelaySide) Name() string                  { return s.name }
func (s *pdrelaySide) Sink(dir Direction) sinkReader { return s.h.sinks[dir] }

func (s *pdrelaySide) config() string {
	return s.h.Lab.PdrelayConfigWith(lab.PdrelayConfigOptions{
		LinkType: "multi-access",
		Ports:    []int{0},
		LogLevel: "info",
		PerPort:  "    max_delegations: 0\n    max_per_client: 0\n",
		Extra: fmt.Sprintf(`metrics_listen: %q
relay_id: %q
dataplane:
  mode: %s
  queues: %d
kernel:
  flush_on_stop: true
leasequery:
  servers: [%q]
  conn_timeout: 5s
  data_timeout: 60s
  max_retry: 1s
`, metricsAddr, relayID, s.mode, s.h.cfg.Queues, netip.AddrPortFrom(lab.ServerAddr, lqPort).String()),
	})
}

func (s *pdrelaySide) Start() error {
	if s.running {
		return nil
	}
	h := s.h
	var err error
	// Not lab.StartPdrelay: its readiness check lists every binding,
	// which with 100k recovering at the same time outlasts its timeouts.
	if s.dir == "" {
		s.dir = filepath.Join(h.tmp, "pdrelay-"+s.name)
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			return fmt.Errorf("fwd: %w", err)
		}
		if err := os.WriteFile(filepath.Join(s.dir, "pdrelay.yaml"), []byte(strings.ReplaceAll(s.config(), "$DIR", s.dir)), 0o600); err != nil {
			return fmt.Errorf("fwd: %w", err)
		}
	}
	// An empty store each time: the bindings come from Bulk Leasequery
	// at every start.
	if err := os.RemoveAll(filepath.Join(s.dir, "state")); err != nil {
		return fmt.Errorf("fwd: %w", err)
	}
	p, err := h.Lab.Start(h.Lab.RelayNS, "pdrelay-"+s.name, h.cfg.Pdrelay, "run", "-c", filepath.Join(s.dir, "pdrelay.yaml"))
	if err != nil {
		return fmt.Errorf("fwd: %s: %w", s.name, err)
	}
	s.proc, s.running = p, true
	if err := p.WaitLog("pdrelay started", 30*time.Second); err != nil {
		return fmt.Errorf("fwd: %s: %w", s.name, err)
	}
	if err := lab.Pin(p.Pid(), h.cfg.RelayCPU); err != nil {
		return err
	}
	if log := p.Log(); !strings.Contains(log, "mode="+s.mode) {
		return fmt.Errorf("fwd: %s: pdrelay does not run in mode %s:\n%s", s.name, s.mode, log)
	}
	// Recovery and, in kernel mode, the routes take their time: 1M took
	// 93 s on a busy 2-core machine.
	deadline := time.Now().Add(60*time.Second + time.Duration(h.cfg.N/2_000)*time.Second)
	for {
		n, err := s.bindings()
		if err == nil && n == h.cfg.N {
			break
		}
		if p.Exited() || time.Now().After(deadline) {
			return fmt.Errorf("fwd: %s: %d bindings, want %d (%v)\n%s", s.name, n, h.cfg.N, err, p.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s.mode == "kernel" {
		for {
			n, err := s.routes()
			if err == nil && n == h.cfg.N {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("fwd: %s: %d routes of protocol %d, want %d (%v)", s.name, n, kroute.Protocol, h.cfg.N, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// The gauge reaches N while the recovery's last batches are still
	// on their way into the dataplane's maps and the heap it left is
	// being collected: measured then, the relay's first window would
	// carry that work too.
	if err := p.WaitLog("leasequery recovery done", 30*time.Second); err != nil {
		return fmt.Errorf("fwd: %s: %w", s.name, err)
	}
	if err := p.WaitIdle(0.05, 500*time.Millisecond, 60*time.Second); err != nil {
		return fmt.Errorf("fwd: %s: %w", s.name, err)
	}
	// The relay's neighbour entry for the core host, which kernel mode's
	// default route and pdrelay's gateway watcher need.
	if err := h.Lab.Ping(h.Lab.RelayNS, netip.Addr{}, lab.ServerAddr, 5*time.Second); err != nil {
		return fmt.Errorf("fwd: %s: %w", s.name, err)
	}
	h.cfg.Logf("fwd: %s up: %d bindings recovered by Bulk Leasequery", s.name, h.cfg.N)
	return nil
}

// bindings reads the pdrelay_bindings gauge of dl0.
func (s *pdrelaySide) bindings() (int, error) {
	// The listener is only reachable inside the relay namespace: bash's
	// /dev/tcp there.
	host, port, _ := strings.Cut(metricsAddr, ":")
	script := fmt.Sprintf(`exec 3<>/dev/tcp/%s/%s && printf 'GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n' >&3 && cat <&3`, host, port)
	out, err := s.h.Lab.Run(s.h.Lab.RelayNS, "bash", "-c", script)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, `pdrelay_bindings{interface="dl0"} `); ok {
			// The text format writes 1000000 as 1e+06.
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return int(v), err
		}
	}
	return 0, errors.New("no pdrelay_bindings for dl0 in /metrics")
}

// routes counts pdrelay's routes in the relay namespace.
func (s *pdrelaySide) routes() (int, error) {
	cmd := s.h.Lab.Exec(s.h.Lab.RelayNS, "ip", "-6", "route", "show", "proto", strconv.Itoa(kroute.Protocol))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	n := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		n++
	}
	return n, cmd.Wait()
}

func (s *pdrelaySide) Stop() error {
	if !s.running {
		return nil
	}
	s.running = false
	p := s.proc
	s.proc = nil
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("fwd: stop %s: %w", s.name, err)
	}
	// kernel.flush_on_stop removes the routes (1M of them take a while).
	if err := p.Wait(60 * time.Second); err != nil {
		_ = p.Stop()
		return fmt.Errorf("fwd: stop %s: %w", s.name, err)
	}
	return nil
}

func (s *pdrelaySide) Counters() (map[string]uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := api.Dial(filepath.Join(s.dir, "api.sock")).Stats(ctx)
	if err != nil {
		return nil, fmt.Errorf("fwd: %s stats: %w", s.name, err)
	}
	m := map[string]uint64{}
	for _, p := range st {
		for r, n := range p.Packets {
			m[p.Interface+"/"+r] = n
		}
	}
	return m, nil
}

// procSide is a forwarder of the bench's own run as one process in the
// relay namespace, pinned to the relay's cores: it prints "ready" on
// stdout once forwarding, and one JSON line of its counters on SIGTERM.
//   - ceiling, bench/cmd/xskfwd: AF_XDP rx on one port, tx on the
//     other, no lookup (`xskfwd -a IF -b IF -mac-a MAC -mac-b MAC
//     [-queues N]`);
//   - xdpfast, bench/cmd/xdpfast: the prototype XDP fast path
//     (bench/xdpfast), sources and routes in BPF maps, XDP_REDIRECT.
type procSide struct {
	h    *Harness
	name string
	args func() ([]string, error) // the command after taskset
	p    *lab.Proc
	last map[string]uint64
}

func (s *procSide) Name() string                  { return s.name }
func (s *procSide) Sink(dir Direction) sinkReader { return s.h.sinks[dir] }

func (s *procSide) Start() error {
	if s.p != nil {
		return nil
	}
	h := s.h
	args, err := s.args()
	if err != nil {
		return err
	}
	p, err := h.Lab.Start(h.Lab.RelayNS, s.name, append([]string{"taskset", "-c", h.cfg.RelayCPU}, args...)...)
	if err != nil {
		return err
	}
	s.p = p
	if err := p.WaitLog("ready", 30*time.Second); err != nil {
		return fmt.Errorf("fwd: %s: %w", s.name, err)
	}
	return nil
}

func (s *procSide) Stop() error {
	if s.p == nil {
		return nil
	}
	p := s.p
	s.p = nil
	_ = p.Signal(syscall.SIGTERM)
	err := p.Wait(5 * time.Second)
	if err != nil {
		_ = p.Stop()
		return fmt.Errorf("fwd: %s on SIGTERM: %w", s.name, err)
	}
	lines := strings.Split(strings.TrimSpace(p.Log()), "\n")
	var m map[string]any
	if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &m); jerr != nil {
		return fmt.Errorf("fwd: %s's last line is not its counters: %q: %w", s.name, lines[len(lines)-1], jerr)
	}
	s.last = map[string]uint64{}
	flatten("", m, s.last)
	return nil
}

// Counters of a procSide are known only after it stopped (its SIGTERM
// line): the counters of its last run.
func (s *procSide) Counters() (map[string]uint64, error) { return s.last, nil }

// ceilingArgs runs xskfwd between the relay's two ports.
func (h *Harness) ceilingArgs() ([]string, error) {
	dl, up := h.Lab.Downlinks[0], h.Lab.Uplink
	return []string{h.cfg.Xskfwd, "-a", dl.Name, "-b", up.Name, "-mac-a", dl.PeerMAC.String(), "-mac-b", up.PeerMAC.String(),
		"-queues", strconv.Itoa(h.cfg.Queues)}, nil
}

// xdpfastArgs runs xdpfast with the N delegated prefixes on dl0.
func (h *Harness) xdpfastArgs() ([]string, error) {
	file := filepath.Join(h.tmp, "xdpfast-prefixes")
	f, err := os.Create(file)
	if err != nil {
		return nil, fmt.Errorf("fwd: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for i := range h.cfg.N {
		fmt.Fprintln(w, LeasePrefix(i))
	}
	if err := errors.Join(w.Flush(), f.Close()); err != nil {
		return nil, fmt.Errorf("fwd: write %s: %w", file, err)
	}
	dl, up := h.Lab.Downlinks[0], h.Lab.Uplink
	return []string{h.cfg.Xdpfast, "-down", dl.Name, "-up", up.Name, "-down-mac", dl.PeerMAC.String(),
		"-up-mac", up.PeerMAC.String(), "-prefixes", file}, nil
}

// flatten puts every number in v into out by its dotted path.
func flatten(prefix string, v any, out map[string]uint64) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			name := k
			if prefix != "" {
				name = prefix + "." + k
			}
			flatten(name, e, out)
		}
	case float64:
		out[prefix] = uint64(x)
	}
}

// floorSide forwards nothing: the count-and-drop program on both relay
// ports takes the generator's frames as they enter the relay namespace.
// Its rate is the generator's own ceiling, its CPU time the floor that
// the other sides' CPU time is measured against.
type floorSide struct {
	h    *Harness
	drop map[Direction]*DropCounter
}

func (s *floorSide) Name() string                  { return "floor" }
func (s *floorSide) Sink(dir Direction) sinkReader { return s.drop[dir] }

func (s *floorSide) Start() error {
	if s.drop != nil {
		return nil
	}
	s.drop = map[Direction]*DropCounter{}
	for _, dir := range []Direction{Up, Down} {
		_, _, relay := s.h.gen(dir)
		d, err := AttachDrop(s.h.Lab, s.h.Lab.RelayNS, relay.Name)
		if err != nil {
			s.Stop()
			return err
		}
		s.drop[dir] = d
	}
	return nil
}

func (s *floorSide) Stop() error {
	var errs []error
	for _, d := range s.drop {
		errs = append(errs, d.Close())
	}
	s.drop = nil
	return errors.Join(errs...)
}

func (s *floorSide) Counters() (map[string]uint64, error) { return nil, nil }

// udpSink counts the harness's datagrams with two sockets in a namespace.
type udpSink struct {
	conns        []*net.UDPConn
	legit, spoof atomic.Uint64
	wg           sync.WaitGroup
}

func listenUDP(l *lab.Lab, ns string) (*udpSink, error) {
	s := &udpSink{}
	for _, port := range []uint16{PortLegit, PortSpoof} {
		c, err := l.ListenUDP(ns, netip.AddrPortFrom(netip.IPv6Unspecified(), port))
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("fwd: udp sink in %s: %w", ns, err)
		}
		_ = c.SetReadBuffer(4 << 20)
		s.conns = append(s.conns, c)
		n := &s.legit
		if port == PortSpoof {
			n = &s.spoof
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			buf := make([]byte, 2048)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
				n.Add(1)
			}
		}()
	}
	return s, nil
}

func (s *udpSink) Counts() (legit, spoofed uint64, err error) {
	return s.legit.Load(), s.spoof.Load(), nil
}

func (s *udpSink) Close() error {
	for _, c := range s.conns {
		c.Close()
	}
	s.wg.Wait()
	return nil
}
