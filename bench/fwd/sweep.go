package fwd

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Point is one configuration of the sweep: a harness of its own.
type Point struct {
	Name     string
	N        int
	Flows    int
	SpoofPct int // upstream only; downstream runs with 0
	Size     int
	Dirs     []Direction
	Queues   int
	Sink     string
	// Rate is the fixed rate (pps) of the CPU and loss figures; it must
	// lie below every side's peak.
	Rate int
}

func (p Point) String() string {
	dirs := make([]string, len(p.Dirs))
	for i, d := range p.Dirs {
		dirs[i] = string(d)
	}
	return fmt.Sprintf("%d B, N=%d, %d flows, spoof %d%%, %s, queues %d, sink %s, fixed rate %d pps",
		p.Size, p.N, p.Flows, p.SpoofPct, strings.Join(dirs, "+"), p.Queues, p.Sink, p.Rate)
}

// Options are the parts of a run common to every point.
type Options struct {
	Pdrelay, Fakekea, Xskfwd, Xdpfast string
	Rounds                            int
	Warmup, Window                    time.Duration
	GenCPU                            int
	RelayCPU                          string               // a taskset list
	Perf                              string               // Config.Perf
	Phys                              map[string][2]string // Config.Phys
	Logf                              func(format string, args ...any)
	// OnHarness, when set, is told of each harness as it is built (nil
	// when it is closed), so that a signal handler can tear it down.
	OnHarness func(*Harness)
}

// Cell is one side in one direction: a Sample per round at the peak and
// at the fixed rate.
type Cell struct {
	Peak, Fixed []Sample
}

// PointResult is everything measured at one point.
type PointResult struct {
	Point Point
	Sides []string                       // in table order: floor, linux, pdrelay, ceiling, xdpfast
	Cells map[string]map[Direction]*Cell // side -> direction
	Notes []string                       // e.g. the ceiling skipped
	// Err is why the point did not complete; the cells hold what was
	// measured before.
	Err error
}

// RunPoint builds a harness for p and measures every side, rounds
// times, in the order A B C D, then D C B A, and so on: a drift of the
// machine over a round does not favour a side.
func RunPoint(p Point, o Options) (res PointResult, err error) {
	res = PointResult{Point: p, Cells: map[string]map[Direction]*Cell{}}
	h, err := New(Config{Pdrelay: o.Pdrelay, Fakekea: o.Fakekea, Xskfwd: o.Xskfwd, Xdpfast: o.Xdpfast, N: p.N, Queues: p.Queues,
		Sink: p.Sink, GenCPU: o.GenCPU, RelayCPU: o.RelayCPU, Perf: o.Perf, Phys: o.Phys, Tag: "fh", Logf: o.Logf})
	if err != nil {
		return res, err
	}
	if o.OnHarness != nil {
		o.OnHarness(h)
	}
	defer func() {
		if o.OnHarness != nil {
			o.OnHarness(nil)
		}
		if cerr := h.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	res.Sides = []string{"floor", "linux", "pdrelay"}
	if o.Xskfwd != "" {
		res.Sides = append(res.Sides, "ceiling")
	} else {
		res.Notes = append(res.Notes, "ceiling skipped: bench/cmd/xskfwd is not in this tree")
	}
	switch {
	case o.Xdpfast == "":
		res.Notes = append(res.Notes, "xdpfast skipped: bench/cmd/xdpfast is not in this tree")
	case p.Sink == SinkUDP:
		// XDP_REDIRECT into a veth needs its peer in NAPI mode, which
		// the XDP sink gives and a plain stack does not.
		res.Notes = append(res.Notes, "xdpfast skipped with the UDP sink: XDP_REDIRECT into a veth needs an XDP program on its peer")
	default:
		res.Sides = append(res.Sides, "xdpfast")
	}
	for _, s := range res.Sides {
		res.Cells[s] = map[Direction]*Cell{}
		for _, d := range p.Dirs {
			res.Cells[s][d] = &Cell{}
		}
	}
	for round := range o.Rounds {
		order := slices.Clone(res.Sides)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, name := range order {
			side := h.Side(name)
			if err := side.Start(); err != nil {
				return res, err
			}
			if err := h.Ready(side); err != nil {
				return res, err
			}
			for _, d := range p.Dirs {
				spoof := p.SpoofPct
				if d == Down {
					spoof = 0
				}
				t := h.Traffic(d, p.Flows, spoof, p.Size)
				peak, err := h.Measure(side, Run{Traffic: t, Warmup: o.Warmup, Window: o.Window})
				if err != nil {
					return res, err
				}
				fixed, err := h.Measure(side, Run{Traffic: t, Rate: p.Rate, Warmup: o.Warmup, Window: o.Window})
				if err != nil {
					return res, err
				}
				c := res.Cells[name][d]
				c.Peak = append(c.Peak, peak)
				c.Fixed = append(c.Fixed, fixed)
				o.Logf("fwd: round %d %s %s: peak offered %.0f delivered %.0f pps; at %d pps delivered %.0f, loss %.4f%%, busy %.2f CPU",
					round+1, name, d, peak.Offered, peak.Delivered, p.Rate, fixed.Delivered, 100*fixed.Loss(), fixed.Busy)
			}
			if err := side.Stop(); err != nil {
				return res, err
			}
			if name == "ceiling" || name == "xdpfast" {
				// They tell their counters when they stop.
				m, _ := side.Counters()
				res.Notes = append(res.Notes, fmt.Sprintf("round %d, %s's counters over its run: %s", round+1, name, nonzero(m, nil)))
			}
		}
	}
	return res, nil
}

// Median returns the median of xs (the mean of the middle two for an
// even count); NaN-free input assumed, 0 for none.
func Median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	switch {
	case n == 0:
		return 0
	case n%2 == 1:
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Ratios returns, per round, side a's peak delivered rate over side
// b's in direction d; nil if either side is missing.
func (r PointResult) Ratios(a, b string, d Direction) []float64 {
	ca, cb := r.Cells[a][d], r.Cells[b][d]
	if ca == nil || cb == nil {
		return nil
	}
	var out []float64
	for i := range min(len(ca.Peak), len(cb.Peak)) {
		if cb.Peak[i].Delivered > 0 {
			out = append(out, ca.Peak[i].Delivered/cb.Peak[i].Delivered)
		}
	}
	return out
}

// CPUPerPacket returns, per round, side's CPU time per delivered packet
// at the fixed rate in direction d, in µs: its all-core busy time per
// second minus the floor's in the same round, over its delivered rate.
func (r PointResult) CPUPerPacket(side string, d Direction) []float64 {
	c, f := r.Cells[side][d], r.Cells["floor"][d]
	if c == nil || f == nil {
		return nil
	}
	var out []float64
	for i := range min(len(c.Fixed), len(f.Fixed)) {
		if c.Fixed[i].Delivered > 0 {
			out = append(out, (c.Fixed[i].Busy-f.Fixed[i].Busy)/c.Fixed[i].Delivered*1e6)
		}
	}
	return out
}

// PeakRatio is the median over directions and rounds of a's peak
// delivered rate over b's.
func (r PointResult) PeakRatio(a, b string) float64 {
	var all []float64
	for _, d := range r.Point.Dirs {
		all = append(all, r.Ratios(a, b, d)...)
	}
	return Median(all)
}

// Median is the median over the rounds of f of side's peak samples in
// direction d; 0 if there are none.
func (r PointResult) Median(side string, d Direction, f func(Sample) float64) float64 {
	c := r.Cells[side][d]
	if c == nil {
		return 0
	}
	var xs []float64
	for _, s := range c.Peak {
		xs = append(xs, f(s))
	}
	return Median(xs)
}
