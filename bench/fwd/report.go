package fwd

import (
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
)

// Header is what the report says about the machine and the run.
type Header struct {
	Date, Command string
	GenCPU        int
	RelayCPU      string
	Rounds        int
	Window        string
	Phys          map[string][2]string // Config.Phys; nil: veth pairs
}

// machine describes this machine: CPU model, cores, kernel.
func machine() (cpu string, cores int, kernel string) {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			cpu = strings.TrimSpace(v)
			cores++
		}
	}
	out, _ := exec.Command("uname", "-r").Output()
	return cpu, cores, strings.TrimSpace(string(out))
}

// nonzero formats the counters of m (all but those named in skip) that
// are not zero, sorted, as "name n, name n"; "none" if there are none.
func nonzero(m map[string]uint64, skip []string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		_, reason, _ := strings.Cut(k, "/")
		if m[k] == 0 || slices.Contains(skip, reason) {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func fmtRate(x float64) string {
	switch {
	case x >= 1e6:
		return fmt.Sprintf("%.2fM", x/1e6)
	case x >= 1e3:
		return fmt.Sprintf("%.0fk", x/1e3)
	}
	return fmt.Sprintf("%.0f", x)
}

// WriteMarkdown writes the results as Markdown: the machine, then per
// point its parameters, a table of every side in each direction
// (medians over the rounds) and the ratios.
func WriteMarkdown(w io.Writer, hd Header, results []PointResult) {
	cpu, cores, kernel := machine()
	fmt.Fprintf(w, "# Forwarding harness (bench/fwd), %s\n\n", hd.Date)
	fmt.Fprintf(w, "- machine: %s, %d cores; kernel %s\n", cpu, cores, kernel)
	fmt.Fprintf(w, "- command: `%s`\n", hd.Command)
	fmt.Fprintf(w, "- generator pinned to CPU %d: trafgen at peak, `pdrelay replay --rate R --burst 32` (AF_XDP, bursts of 32 every 32/R s) at the fixed rate; relay (pdrelay, xskfwd, xdpfast) pinned to CPU %s; the kernel's forwarding runs where the frames arrive\n", hd.GenCPU, hd.RelayCPU)
	links := "veth pairs (AF_XDP binds in copy mode)"
	if len(hd.Phys) > 0 {
		var ps []string
		for _, name := range []string{"up0", "dl0"} {
			if p, ok := hd.Phys[name]; ok {
				ps = append(ps, fmt.Sprintf("%s = %s:%s", name, p[0], p[1]))
			} else {
				ps = append(ps, name+" = a veth pair")
			}
		}
		links = "NIC ports lent to the harness (" + strings.Join(ps, ", ") + "); pdrelay's log tells each AF_XDP socket's mode"
	}
	fmt.Fprintf(w, "- links: %s\n", links)
	fmt.Fprintf(w, "- sides: linux = pdrelay `dataplane.mode: kernel` (Linux forwarding + pdrelay's nftables table); pdrelay = `dataplane.mode: xdp` (AF_XDP); ceiling = bench/cmd/xskfwd (AF_XDP rx -> tx, no lookup); xdpfast = bench/cmd/xdpfast (prototype: routes and sources in BPF maps, XDP_REDIRECT); floor = the generator into an XDP drop on the relay's ingress port\n")
	fmt.Fprintf(w, "- %d rounds, sides alternating (A B C D, D C B A, ...); %s windows; figures are medians over the rounds\n", hd.Rounds, hd.Window)
	fmt.Fprintf(w, "- relay CPU µs/pkt = (busy time of all cores during the window: cores × time − /proc/stat idle − the floor's at the same rate, same round) / delivered packets\n\n")
	for _, r := range results {
		writePoint(w, r)
	}
}

func writePoint(w io.Writer, r PointResult) {
	p := r.Point
	fmt.Fprintf(w, "## %s: %s\n\n", p.Name, p)
	if r.Err != nil {
		fmt.Fprintf(w, "**FAILED:** %s\n\n", strings.ReplaceAll(r.Err.Error(), "\n", " "))
	}
	fmt.Fprintf(w, "| dir | side | offered pps (peak) | delivered pps (peak) | offered pps @%s | delivered pps @%s | loss %% @%s | busy CPU @%s | relay CPU µs/pkt @%s | ÷ linux (peak) | ÷ ceiling (peak) | spoofed: sent / through / counted | drops by stage (nonzero) |\n",
		fmtRate(float64(p.Rate)), fmtRate(float64(p.Rate)), fmtRate(float64(p.Rate)), fmtRate(float64(p.Rate)), fmtRate(float64(p.Rate)))
	fmt.Fprintf(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n")
	for _, d := range p.Dirs {
		for _, side := range r.Sides {
			c := r.Cells[side][d]
			if c == nil || len(c.Peak) == 0 {
				continue
			}
			med := func(ss []Sample, f func(Sample) float64) float64 {
				var xs []float64
				for _, s := range ss {
					xs = append(xs, f(s))
				}
				return Median(xs)
			}
			offered := med(c.Peak, func(s Sample) float64 { return s.Offered })
			peak := med(c.Peak, func(s Sample) float64 { return s.Delivered })
			fixedOffered := med(c.Fixed, func(s Sample) float64 { return s.Offered })
			fixed := med(c.Fixed, func(s Sample) float64 { return s.Delivered })
			loss := med(c.Fixed, func(s Sample) float64 { return 100 * s.Loss() })
			busy := med(c.Fixed, func(s Sample) float64 { return s.Busy })
			cpu, vsLinux, vsCeil := "—", "—", "—"
			if side != "floor" {
				cpu = fmt.Sprintf("%.2f", Median(r.CPUPerPacket(side, d)))
				if side != "linux" && r.Cells["linux"] != nil {
					vsLinux = fmt.Sprintf("%.2f", Median(r.Ratios(side, "linux", d)))
				}
				if side != "ceiling" && r.Cells["ceiling"] != nil {
					vsCeil = fmt.Sprintf("%.2f", Median(r.Ratios(side, "ceiling", d)))
				}
			}
			var sent, through, counted uint64
			drops := map[string]uint64{}
			for _, s := range slices.Concat(c.Peak, c.Fixed) {
				sent += s.SpoofSent
				through += s.GotSpoofed
				for k, v := range s.Counters {
					if _, reason, _ := strings.Cut(k, "/"); reason == "spoofed" {
						counted += v
					}
					drops[k] += v
				}
			}
			spoof := "—"
			if sent > 0 {
				cnt := "—"
				if side == "linux" || side == "pdrelay" {
					cnt = fmt.Sprint(counted)
				}
				spoof = fmt.Sprintf("%d / %d / %s", sent, through, cnt)
			}
			dropStr := nonzero(drops, []string{"forwarded", "spoofed"})
			name := side
			if side == "floor" {
				name = "floor (generator alone; delivered = at the relay's ingress)"
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %.4f | %.2f | %s | %s | %s | %s | %s |\n",
				d, name, fmtRate(offered), fmtRate(peak), fmtRate(fixedOffered), fmtRate(fixed), loss, busy, cpu, vsLinux, vsCeil, spoof, dropStr)
		}
	}
	fmt.Fprintln(w)
	if _, ok := r.Cells["floor"]; ok {
		var parts []string
		for _, d := range p.Dirs {
			c := r.Cells["floor"][d]
			var xs []float64
			for _, s := range c.Peak {
				xs = append(xs, s.Delivered)
			}
			parts = append(parts, fmt.Sprintf("%s %s pps", d, fmtRate(Median(xs))))
		}
		fmt.Fprintf(w, "- generator's own ceiling (floor at peak, frames reaching the relay): %s; a side near it is limited by the generator\n", strings.Join(parts, ", "))
	}
	for _, side := range []string{"linux", "pdrelay", "xdpfast"} {
		var sent, through, counted uint64
		for _, c := range r.Cells[side] {
			for _, s := range slices.Concat(c.Peak, c.Fixed) {
				sent, through, counted = sent+s.SpoofSent, through+s.GotSpoofed, counted+s.Counters["dl0/spoofed"]
			}
		}
		if sent == 0 {
			continue
		}
		verdict := "ok: none reached the sink"
		if through > 0 {
			verdict = fmt.Sprintf("FAILED: %d reached the sink", through)
		}
		fmt.Fprintf(w, "- spoof check, %s: %d spoofed frames sent, %s; %d counted as spoofed (the rest was lost before the source check: see the drops)\n",
			side, sent, verdict, counted)
	}
	fmt.Fprintf(w, "- pdrelay/linux peak ratio (median over directions and rounds): %.2f\n", r.PeakRatio("pdrelay", "linux"))
	if _, ok := r.Cells["ceiling"]; ok {
		fmt.Fprintf(w, "- pdrelay/ceiling peak ratio: %.2f\n", r.PeakRatio("pdrelay", "ceiling"))
	}
	if _, ok := r.Cells["xdpfast"]; ok {
		fmt.Fprintf(w, "- xdpfast/linux peak ratio: %.2f (the prototype XDP fast path; its spoofed count is in its counters below)\n", r.PeakRatio("xdpfast", "linux"))
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	fmt.Fprintln(w)
}
