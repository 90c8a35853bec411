// Command cpload measures pdrelay's control plane: it builds a lab
// (bench/lab), runs pdrelay in dataplane.mode kernel between many
// emulated DHCPv6 PD clients and a server (the fast responder of
// bench/cpload, or Kea), makes every client bind, renew and release, and
// prints relayed messages a second, bindings installed a second, the
// time from each Reply to its kernel route, and memory per binding.
// -baseline first runs the same load through ISC dhcrelay and prints
// pdrelay's messages per CPU-second over dhcrelay's. It needs root
// (namespaces).
//
//	go build -o bin/pdrelay ./cmd/pdrelay
//	go run ./bench/cmd/cpload -pdrelay bin/pdrelay -clients 100000 -server fast
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/pdrelay/pdrelay/bench/cpload"
)

func main() {
	o := cpload.Options{}
	flag.StringVar(&o.Relay, "relay", "pdrelay", "relay: pdrelay, or dhcrelay (ISC dhcrelay -6, a relay that learns and routes nothing)")
	flag.StringVar(&o.Pdrelay, "pdrelay", "bin/pdrelay", "pdrelay binary")
	flag.StringVar(&o.Dataplane, "dataplane", "kernel", "pdrelay's dataplane.mode: kernel, xdp, or off (relay and snoop only)")
	baseline := flag.Bool("baseline", false, "first run the same load through dhcrelay, then print pdrelay's msgs per cpu-second over dhcrelay's")
	flag.IntVar(&o.Clients, "clients", 10_000, "emulated clients")
	flag.StringVar(&o.Server, "server", "fast", "server: fast (bench/cpload's responder) or kea")
	flag.IntVar(&o.Window, "window", 1024, "clients in an exchange at once")
	flag.IntVar(&o.Rate, "rate", 0, "exchanges started a second (0: no bound)")
	flag.DurationVar(&o.Timeout, "timeout", time.Second, "retransmission timeout")
	flag.StringVar(&o.Perf, "perf", "", "record pdrelay with perf record -g during one phase into this file")
	perfPhase := flag.String("perf-phase", "bind", "the phase -perf records: bind, renew or release")
	env := flag.String("pdrelay-env", "", "comma-separated KEY=value added to pdrelay's environment (e.g. GOMAXPROCS=1)")
	flag.StringVar(&o.RelayCPUs, "relay-cpus", "", "taskset list the relay runs on (e.g. 1: one core of its own); empty: any")
	flag.Float64Var(&o.RelayCPUShare, "relay-cpu-share", 0, "cap the relay at this share of one cpu (0 < share <= 1) with a CFS quota, so that it limits the rate; 0: no cap")
	labCPUs := flag.String("lab-cpus", "", "taskset list cpload itself (the generator, the responder) runs on (e.g. 0); empty: any")
	verbose := flag.Bool("v", false, "log the lab's progress")
	flag.Parse()
	if *env != "" {
		o.PdrelayEnv = strings.Split(*env, ",")
	}
	for _, p := range []cpload.Phase{cpload.PhaseBind, cpload.PhaseRenew, cpload.PhaseRelease} {
		if p.String() == *perfPhase {
			o.PerfPhase = p
		}
	}
	if o.PerfPhase == 0 {
		fmt.Fprintln(os.Stderr, "cpload: -perf-phase: want bind, renew or release")
		os.Exit(2)
	}
	o.Tag = "cl"
	if *verbose {
		o.Logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	}
	if *labCPUs != "" {
		if err := cpload.PinSelf(*labCPUs); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var base cpload.Result
	if *baseline {
		b := o
		b.Relay, b.Perf = cpload.RelayDhcrelay, ""
		var err error
		if base, err = cpload.Run(ctx, b); err != nil {
			fmt.Fprintln(os.Stderr, "cpload: baseline:", err)
			os.Exit(1)
		}
		base.Report(os.Stdout)
	}
	res, err := cpload.Run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cpload:", err)
		os.Exit(1)
	}
	res.Report(os.Stdout)
	if *baseline {
		fmt.Print(cpload.Ratios(res, base))
	}
}
