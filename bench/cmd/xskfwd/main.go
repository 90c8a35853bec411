// Command xskfwd is the minimal AF_XDP forwarder: the ceiling side of the
// pps harness. Every frame received on port a goes out of port b and
// vice versa, with the destination MAC set to the host beyond the
// outgoing port (-mac-b or -mac-a) and the source MAC to the outgoing
// port's own; nothing else is read or written (no lookup, no parse).
//
//	xskfwd -a IF -b IF -mac-a MAC -mac-b MAC [-queues N] [-batch N] [-xdp-mode auto|native|generic]
//
// It runs in the current network namespace, on pdrelay's own forwarding
// plane (dataplane/plane, dataplane/xsk: the same XDP program, UMEM,
// rings, batching, fill/completion handling and kicks as pdrelay) with a
// Decider that only rewrites the MACs: what pdrelay adds on top of this
// is its lookup and checks. One worker goroutine per queue index, locked
// to its OS thread, owns the sockets of that queue on both ports; the
// sockets are zero-copy where the NIC allows (copy mode on veth). -queues
// defaults to the smaller queue count of the two ports (xsk.Queues: the
// channels ethtool -l shows); frames arriving on a queue beyond -queues
// go to the kernel and are counted as xdp_no_socket. The XDP
// program is pdrelay's, so the frames it passes to the kernel (anything
// but IPv6, neighbour discovery, DHCPv6, link-local or multicast
// destinations, hop limit <= 1) are not forwarded: the harness sends
// IPv6 UDP.
//
// It prints "ready" on stdout once forwarding. On SIGTERM or SIGINT it
// stops, prints one JSON line of its counters and exits 0:
//
//	rx, tx, tx_completed   frames taken from the RX rings, put on the TX
//	                       rings, completed by the kernel (all sockets)
//	drops                  lost frames by reason: tx_ring_full and
//	                       short_frame (this program's), xdp_no_socket and
//	                       xdp_aborted (the XDP programs'), xsk_<reason>
//	                       (the kernel's XDP_STATISTICS: rx_ring_full,
//	                       fill_ring_empty, rx_dropped, rx_invalid_descs,
//	                       tx_invalid_descs), xsk_tx_dropped (frames the
//	                       device refused to send: the sendto's EBUSY in
//	                       copy mode); each lost frame is counted
//	                       once, so they add up (in copy mode the kernel
//	                       counts an empty fill ring in rx_dropped too:
//	                       xsk_rx_dropped here leaves those out)
//	xdp_passed             frames the XDP programs passed to the kernel
//	sockets, programs      the same per socket and per port
//	mode, zero_copy, queues, batch   how it ran
//
// Exit status 1 on a start failure (the error on stderr), 2 on bad flags.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/pdrelay/pdrelay/dataplane/plane"
	"github.com/pdrelay/pdrelay/dataplane/xsk"
	"github.com/pdrelay/pdrelay/fib"
)

// The two ports' IDs in the plane.
const (
	portA fib.PortID = 1
	portB fib.PortID = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("xskfwd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ifA := fs.String("a", "", "port a: interface name")
	ifB := fs.String("b", "", "port b: interface name")
	macA := fs.String("mac-a", "", "destination MAC of frames sent out of a (the host beyond a)")
	macB := fs.String("mac-b", "", "destination MAC of frames sent out of b (the host beyond b)")
	queues := fs.Int("queues", 0, "queues per port, one worker each (0: the smaller queue count of a and b, ethtool -l)")
	batch := fs.Int("batch", plane.BatchSize, fmt.Sprintf("frames taken from a socket at once (1..%d)", plane.MaxBatch))
	modeFlag := fs.String("xdp-mode", "auto", "XDP attach mode: auto (native, else generic), native or generic")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "xskfwd: "+format+"\n", a...)
		fmt.Fprintln(stderr, "usage: xskfwd -a IF -b IF -mac-a MAC -mac-b MAC [-queues N] [-batch N] [-xdp-mode auto|native|generic]")
		return 2
	}
	if *ifA == "" || *ifB == "" || *ifA == *ifB {
		return usage("-a and -b must name two interfaces (a %q, b %q)", *ifA, *ifB)
	}
	var peer [3][6]byte // by port ID: the MAC beyond the port
	for _, m := range []struct {
		flag, val string
		id        fib.PortID
	}{{"-mac-a", *macA, portA}, {"-mac-b", *macB, portB}} {
		hw, err := net.ParseMAC(m.val)
		if err != nil || len(hw) != 6 {
			return usage("%s %q: not an Ethernet MAC address", m.flag, m.val)
		}
		peer[m.id] = [6]byte(hw)
	}
	if *queues < 0 || *batch < 1 || *batch > plane.MaxBatch {
		return usage("-queues %d or -batch %d out of range", *queues, *batch)
	}
	var mode xsk.Mode
	switch *modeFlag {
	case "auto":
		mode = xsk.ModeAuto
	case "native":
		mode = xsk.ModeNative
	case "generic":
		mode = xsk.ModeGeneric
	default:
		return usage("-xdp-mode %q: want auto, native or generic", *modeFlag)
	}

	fail := func(err error) int {
		fmt.Fprintf(stderr, "xskfwd: %v\n", err)
		return 1
	}
	var own [3][6]byte // by port ID: the port's own MAC
	cfg := plane.Config{Mode: mode, Queues: *queues, Batch: *batch}
	minQueues := 0
	for _, p := range []struct {
		name string
		id   fib.PortID
	}{{*ifA, portA}, {*ifB, portB}} {
		ifi, err := net.InterfaceByName(p.name)
		if err != nil {
			return fail(fmt.Errorf("port %s: %w", p.name, err))
		}
		if len(ifi.HardwareAddr) != 6 {
			return fail(fmt.Errorf("port %s has no Ethernet address", p.name))
		}
		own[p.id] = [6]byte(ifi.HardwareAddr)
		n, err := xsk.Queues(p.name)
		if err != nil {
			return fail(err)
		}
		if minQueues == 0 || n < minQueues {
			minQueues = n
		}
		cfg.Ports = append(cfg.Ports, plane.Port{Name: p.name, Ifindex: ifi.Index, ID: p.id})
	}
	if cfg.Queues == 0 {
		cfg.Queues = minQueues
	}

	// Frames in on a go out of b and the other way round; hdr[in] is the
	// destination and source MAC the egress port gives them.
	f := forwarder{c: new(counts)}
	f.out = [3]fib.PortID{portA: portB, portB: portA}
	for _, in := range []fib.PortID{portA, portB} {
		o := f.out[in]
		copy(f.hdr[in][:6], peer[o][:])
		copy(f.hdr[in][6:], own[o][:])
	}

	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := plane.Start(cfg, log)
	if err != nil {
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	info := p.Info()
	fmt.Fprintln(stdout, "ready")
	err = p.Run(ctx, fib.NewTable().FIB(), func() plane.Decider {
		d := f // each worker its own copy; the counters are shared
		return &d
	})
	if err != nil {
		return fail(err)
	}
	out := report(p, f.c, cfg, info)
	if err := json.NewEncoder(stdout).Encode(out); err != nil {
		return fail(err)
	}
	return 0
}

// counts are the forwarder's own loss counters, shared by the workers.
type counts struct {
	txFull atomic.Uint64 // frames an egress TX ring had no room for
	short  atomic.Uint64 // frames shorter than an Ethernet header
}

// forwarder is the Decider: it rewrites the MACs and sends every frame
// out of the other port. Each worker has its own copy.
type forwarder struct {
	hdr [3][12]byte   // by ingress port ID: destination then source MAC
	out [3]fib.PortID // by ingress port ID: the egress port
	c   *counts
}

func (f *forwarder) Decide(_ *fib.Snapshot, in fib.PortID, frames [][]byte, _ int64, out []plane.Decision) {
	hdr, egress := &f.hdr[in], f.out[in]
	short := 0
	for i, fr := range frames {
		if len(fr) < 14 {
			out[i] = plane.Decision{}
			short++
			continue
		}
		copy(fr[:12], hdr[:])
		out[i] = plane.Decision{Port: egress, Len: len(fr), Send: true}
	}
	if short > 0 {
		f.c.short.Add(uint64(short))
	}
}

func (f *forwarder) TxFull(_ fib.PortID, n int) { f.c.txFull.Add(uint64(n)) }

func (f *forwarder) Flush() {}

// Report is the JSON line printed at exit.
type Report struct {
	Rx          uint64            `json:"rx"`
	Tx          uint64            `json:"tx"`
	TxCompleted uint64            `json:"tx_completed"`
	Drops       map[string]uint64 `json:"drops"`
	XDPPassed   uint64            `json:"xdp_passed"`
	Sockets     []SocketReport    `json:"sockets"`
	Programs    []ProgramReport   `json:"programs"`
	Mode        string            `json:"mode"`
	ZeroCopy    bool              `json:"zero_copy"`
	Queues      int               `json:"queues"`
	Batch       int               `json:"batch"`
}

// SocketReport is one socket's counters: this package's and the
// kernel's XDP_STATISTICS.
type SocketReport struct {
	Port            string `json:"port"`
	Queue           int    `json:"queue"`
	Rx              uint64 `json:"rx"`
	Tx              uint64 `json:"tx"`
	TxCompleted     uint64 `json:"tx_completed"`
	Kicks           uint64 `json:"kicks"`
	RxRingFull      uint64 `json:"rx_ring_full"`
	RxFillRingEmpty uint64 `json:"fill_ring_empty"`
	RxDropped       uint64 `json:"rx_dropped"`
	RxInvalidDescs  uint64 `json:"rx_invalid_descs"`
	TxInvalidDescs  uint64 `json:"tx_invalid_descs"`
	TxDropped       uint64 `json:"tx_dropped"`
}

// ProgramReport is one port's XDP program verdict counters.
type ProgramReport struct {
	Port     string `json:"port"`
	Redirect uint64 `json:"redirect"`
	Pass     uint64 `json:"pass"`
	NoSocket uint64 `json:"no_socket"`
	Aborted  uint64 `json:"aborted"`
}

// report sums the plane's counters (as they were when it closed) and the
// forwarder's.
func report(p *plane.Plane, c *counts, cfg plane.Config, info []xsk.Info) Report {
	r := Report{Drops: map[string]uint64{
		"tx_ring_full": c.txFull.Load(), "short_frame": c.short.Load(),
		"xdp_no_socket": 0, "xdp_aborted": 0,
		"xsk_rx_ring_full": 0, "xsk_fill_ring_empty": 0, "xsk_rx_dropped": 0,
		"xsk_rx_invalid_descs": 0, "xsk_tx_invalid_descs": 0, "xsk_tx_dropped": 0,
	}, Mode: p.Mode().String(), Queues: cfg.Queues, Batch: cfg.Batch}
	r.ZeroCopy = len(info) > 0
	for _, in := range info {
		r.ZeroCopy = r.ZeroCopy && in.ZeroCopy
	}
	for _, st := range p.SocketStats() {
		s := SocketReport{Port: st.Port, Queue: st.Queue, Rx: st.Received, Tx: st.Transmitted, TxCompleted: st.Completed,
			Kicks: st.Kicks, RxRingFull: st.RxRingFull, RxFillRingEmpty: st.RxFillRingEmpty, RxDropped: st.RxDropped,
			RxInvalidDescs: st.RxInvalidDescs, TxInvalidDescs: st.TxInvalidDescs, TxDropped: st.TxDropped}
		r.Sockets = append(r.Sockets, s)
		r.Rx += s.Rx
		r.Tx += s.Tx
		r.TxCompleted += s.TxCompleted
		r.Drops["xsk_rx_ring_full"] += s.RxRingFull
		r.Drops["xsk_fill_ring_empty"] += s.RxFillRingEmpty
		// In copy mode the kernel counts a frame lost to an empty fill
		// ring twice, in fill_ring_empty and rx_dropped (net/xdp/xsk.c,
		// __xsk_rcv): the drops map counts it once, so that its values
		// add up to the frames lost. The per-socket entries are the
		// kernel's as they are.
		if dropped := s.RxDropped; !st.ZeroCopy && dropped >= s.RxFillRingEmpty {
			r.Drops["xsk_rx_dropped"] += dropped - s.RxFillRingEmpty
		} else {
			r.Drops["xsk_rx_dropped"] += dropped
		}
		r.Drops["xsk_rx_invalid_descs"] += s.RxInvalidDescs
		r.Drops["xsk_tx_invalid_descs"] += s.TxInvalidDescs
		r.Drops["xsk_tx_dropped"] += s.TxDropped
	}
	for _, st := range p.ProgramStats() {
		r.Programs = append(r.Programs, ProgramReport{Port: st.Port, Redirect: st.Redirected, Pass: st.Passed,
			NoSocket: st.NoSocket, Aborted: st.Aborted})
		r.Drops["xdp_no_socket"] += st.NoSocket
		r.Drops["xdp_aborted"] += st.Aborted
		r.XDPPassed += st.Passed
	}
	return r
}
