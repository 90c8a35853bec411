package replay

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// liveFlagSet holds the live replay's flags.
type liveFlagSet struct {
	iface    string
	queue    int
	rate     string
	loop     int
	progress bool
	realtime bool
	burst    int
	given    map[string]bool // the flags given, by name
}

// liveFlags registers the live replay's flags on the replay's flag set.
func liveFlags(fs *flag.FlagSet) *liveFlagSet {
	lf := &liveFlagSet{}
	fs.StringVar(&lf.iface, "interface", "", "send the capture's frames, as captured, out of this interface (live replay, AF_XDP)")
	fs.IntVar(&lf.queue, "queue", 0, "live: the interface's TX queue to bind")
	fs.StringVar(&lf.rate, "rate", "original", "live: original (the capture's timing), frames per second (1000, 2.5k, 1M), or max")
	fs.IntVar(&lf.loop, "loop", 1, "live: send the capture this many times; 0: until interrupted")
	fs.BoolVar(&lf.realtime, "realtime", false, "live: pace under SCHED_FIFO (original and fixed rates), for timing on a busy machine")
	fs.IntVar(&lf.burst, "burst", 1, "live, fixed rate: send frames in groups of this many and sleep between groups instead of spinning to each frame")
	fs.BoolVar(&lf.progress, "progress", false, "live: print a progress line every second on stderr (default: when stderr is a terminal)")
	return lf
}

// offlineOnly are the flags of the offline replay.
var offlineOnly = []string{"out", "c", "config", "mac", "gateway-mac", "in", "bindings", "socket", "s"}

// liveOnly are the flags of the live replay, besides --interface.
var liveOnly = []string{"queue", "rate", "loop", "progress", "realtime", "burst"}

// check returns a usage error when the flags mix the two modes, or ""
// when they do not.
func (lf *liveFlagSet) check(fs *flag.FlagSet) string {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	lf.given = set
	dash := func(name string) string {
		if len(name) == 1 {
			return "-" + name
		}
		return "--" + name
	}
	if lf.iface == "" {
		for _, name := range liveOnly {
			if set[name] {
				return dash(name) + " needs --interface (a live replay)"
			}
		}
		return ""
	}
	for _, name := range offlineOnly {
		if set[name] {
			return dash(name) + " is for the offline replay; with --interface the frames are sent as captured"
		}
	}
	if fs.NArg() > 0 {
		return fmt.Sprintf("unexpected argument %q", fs.Arg(0))
	}
	return ""
}

// main runs a live replay: pdrelay replay --pcap IN --interface IF ...
func (lf *liveFlagSet) main(pcapIn string, asJSON bool, stdout, stderr io.Writer, usageErr func(string) int) int {
	rate, err := ParseRate(lf.rate)
	switch {
	case pcapIn == "":
		return usageErr("--pcap is required")
	case err != nil:
		return usageErr(err.Error())
	case lf.loop < 0:
		return usageErr(fmt.Sprintf("--loop %d: want 0 (until interrupted) or more", lf.loop))
	case lf.queue < 0:
		return usageErr(fmt.Sprintf("--queue %d: want 0 or more", lf.queue))
	case lf.burst < 1 || lf.burst > maxBatch:
		return usageErr(fmt.Sprintf("--burst %d: want 1 to %d", lf.burst, maxBatch))
	case lf.burst > 1 && rate.Mode != RateFixed:
		return usageErr("--burst needs a fixed --rate (frames per second)")
	}
	opts := LiveOptions{Interface: lf.iface, Queue: lf.queue, Rate: rate, Loops: lf.loop, Realtime: lf.realtime, Burst: lf.burst}
	progress := lf.progress
	if !lf.given["progress"] {
		progress = isTerminal(stderr)
	}
	if progress {
		opts.Progress = stderr
	}
	in, err := os.Open(pcapIn)
	if err != nil {
		fmt.Fprintf(stderr, "pdrelay replay: %v\n", err)
		return 1
	}
	defer in.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sum, err := Live(ctx, opts, in)
	code := 0
	if err != nil {
		fmt.Fprintf(stderr, "pdrelay replay: %v\n", err)
		code = 1
	} else if sum.Interrupted && opts.Loops > 0 {
		code = 130 // stopped before the loops it was asked for
	}
	if err != nil && sum.Sent == 0 {
		return code
	}
	if asJSON {
		b, _ := json.MarshalIndent(sum, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
	} else {
		WriteLiveText(stdout, sum)
	}
	return code
}
