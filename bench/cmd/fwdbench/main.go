// Command fwdbench runs the forwarding harness (bench/fwd) and writes its
// Markdown table: Linux forwarding (pdrelay's kernel mode), pdrelay's
// AF_XDP plane and the minimal AF_XDP forwarder (bench/cmd/xskfwd, when
// in the tree), in one topology and one run, against a floor run of the
// generator alone. Run it as root from the repository's root:
//
//	go run ./bench/cmd/fwdbench                       # the quick point (make bench-quick)
//	go run ./bench/cmd/fwdbench -sweep -out FILE.md   # the full sweep (make bench)
//
// The flags set the quick point; -sweep varies one factor at a time
// around it (sizes 64/512/1500, N 1k/100k/1M, spoof 0/50%, 1/10k flows,
// 2 queues) and adds the UDP-sink check at half of pdrelay's peak. The
// last line is "pdrelay/linux pps ratio: X.XX", the median over
// directions and rounds of the peak delivered rates at the first point.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pdrelay/pdrelay/bench/fwd"
)

func main() {
	n := flag.Int("n", 100_000, "delegated prefixes (bindings recovered by Bulk Leasequery)")
	flows := flag.Int("flows", 10_000, "legitimate flows, spread over the prefixes")
	spoof := flag.Int("spoof", 0, "spoofed share upstream, percent")
	size := flag.Int("size", 64, "frame size in bytes, without FCS")
	dirs := flag.String("dirs", "up,down", "directions: up (cpe -> core), down (core -> cpe)")
	queues := flag.Int("queues", 1, "veth queues and dataplane.queues (and xskfwd -queues)")
	sink := flag.String("sink", fwd.SinkXDP, "sink: xdp (count and drop at the sink's veth) or udp (sockets, a normal stack)")
	rate := flag.Int("rate", 100_000, "fixed rate for the CPU and loss figures, pps (below every side's peak)")
	rounds := flag.Int("rounds", 2, "rounds; the sides alternate A B C D, D C B A, ...")
	warmup := flag.Duration("warmup", 300*time.Millisecond, "generator warm-up before each window")
	window := flag.Duration("window", time.Second, "measuring window per run")
	genCPU := flag.Int("gen-cpu", 0, "core the generator is pinned to")
	relayCPU := flag.String("relay-cpu", "1", "core(s) the relay is pinned to, a taskset list (1, or 0-1 for several queues)")
	sweep := flag.Bool("sweep", false, "the full sweep around the point the flags set")
	out := flag.String("out", "", "also write the Markdown report to this file")
	perf := flag.String("perf", "", "record every core with perf during each peak window into PREFIX-<side>-<dir>.data (perturbs the figures)")
	root := flag.String("root", ".", "the repository's root (binaries are built from it)")
	verbose := flag.Bool("v", false, "log progress to stderr")
	physFlag := flag.String("phys", "", "NIC ports instead of veth pairs: up0=RELAYSIDE:CORESIDE,dl0=RELAYSIDE:CPESIDE, each pair cabled to each other (lent to the harness, given back at the end)")
	flag.Parse()
	phys, err := fwd.ParsePhys(*physFlag)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fwdbench: -phys: %v\n", err)
		os.Exit(2)
	}

	logf := func(string, ...any) {}
	if *verbose {
		logf = log.Printf
	}
	base := fwd.Point{Name: "quick", N: *n, Flows: *flows, SpoofPct: *spoof, Size: *size, Queues: *queues, Sink: *sink, Rate: *rate}
	for _, d := range strings.Split(*dirs, ",") {
		if d != string(fwd.Up) && d != string(fwd.Down) {
			fmt.Fprintf(os.Stderr, "fwdbench: -dirs %q: up, down or both\n", *dirs)
			os.Exit(2)
		}
		base.Dirs = append(base.Dirs, fwd.Direction(d))
	}
	if *sweep {
		base.Name = "base"
	}

	tmp, err := os.MkdirTemp("", "fwdbench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	pdrelay, fakekea, xskfwd, xdpfast, err := fwd.Binaries(*root, tmp)
	if err != nil {
		log.Fatal(err)
	}
	// A signal tears down the harness running at the time.
	var mu sync.Mutex
	var current *fwd.Harness
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		mu.Lock()
		if current != nil {
			current.Abort()
		}
		os.RemoveAll(tmp)
		fmt.Fprintf(os.Stderr, "fwdbench: %v: torn down\n", s)
		os.Exit(130)
	}()
	o := fwd.Options{Pdrelay: pdrelay, Fakekea: fakekea, Xskfwd: xskfwd, Xdpfast: xdpfast, Rounds: *rounds, Warmup: *warmup, Window: *window,
		GenCPU: *genCPU, RelayCPU: *relayCPU, Perf: *perf, Phys: phys, Logf: logf,
		OnHarness: func(h *fwd.Harness) { mu.Lock(); current = h; mu.Unlock() }}

	points := []fwd.Point{base}
	if *sweep {
		vary := func(name string, f func(*fwd.Point)) {
			p := base
			p.Name = name
			f(&p)
			points = append(points, p)
		}
		vary("size 512", func(p *fwd.Point) { p.Size = 512 })
		vary("size 1500", func(p *fwd.Point) { p.Size = 1500 })
		vary("N 1k", func(p *fwd.Point) { p.N = 1000 })
		vary("N 1M", func(p *fwd.Point) { p.N = 1_000_000 })
		vary("spoof 50%", func(p *fwd.Point) { p.SpoofPct = 50; p.Dirs = []fwd.Direction{fwd.Up} })
		vary("1 flow", func(p *fwd.Point) { p.Flows = 1 })
		vary("2 queues", func(p *fwd.Point) { p.Queues = 2 })
	}
	var results []fwd.PointResult
	failed := false
	for _, p := range points {
		start := time.Now()
		r, err := fwd.RunPoint(p, o)
		if err != nil {
			// The report says so; the other points still run.
			log.Printf("fwdbench: %s: %v", p.Name, err)
			r.Err = err
			failed = true
		}
		logf("fwdbench: %s done in %v", p.Name, time.Since(start).Round(time.Second))
		results = append(results, r)
	}
	if *sweep {
		// The UDP sink: a normal stack receives, at half of pdrelay's
		// peak at the base point (no loss below the knee).
		half := int(results[0].Median("pdrelay", fwd.Up, func(s fwd.Sample) float64 { return s.Delivered }) / 2)
		if d := int(results[0].Median("pdrelay", fwd.Down, func(s fwd.Sample) float64 { return s.Delivered }) / 2); d > 0 && (half == 0 || d < half) {
			half = d
		}
		p := base
		p.Name, p.Sink, p.Rate = "UDP sink at half of pdrelay's peak", fwd.SinkUDP, max(half, 1000)
		r, err := fwd.RunPoint(p, o)
		if err != nil {
			log.Printf("fwdbench: %s: %v", p.Name, err)
			r.Err = err
			failed = true
		}
		results = append(results, r)
	}
	var buf bytes.Buffer
	fwd.WriteMarkdown(&buf, fwd.Header{Date: time.Now().UTC().Format("2006-01-02 15:04 MST"),
		Command: strings.Join(os.Args, " "), GenCPU: *genCPU, RelayCPU: *relayCPU, Rounds: *rounds, Phys: phys,
		Window: fmt.Sprintf("%v warm-up + %v", *warmup, *window)}, results)
	fmt.Fprintf(&buf, "pdrelay/linux pps ratio: %.2f\n", results[0].PeakRatio("pdrelay", "linux"))
	io.Copy(os.Stdout, bytes.NewReader(buf.Bytes()))
	if *out != "" {
		if err := os.WriteFile(*out, buf.Bytes(), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	if failed {
		os.Exit(1)
	}
}
