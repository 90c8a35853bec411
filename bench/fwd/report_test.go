package fwd

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

// result builds a PointResult from per-round peak delivered rates and
// fixed-rate busy figures (CPU-seconds per second), for one direction.
func result(peak map[string][]float64, busy map[string][]float64, fixed float64) PointResult {
	r := PointResult{Point: Point{Name: "t", Dirs: []Direction{Up}, Rate: 100_000}, Cells: map[string]map[Direction]*Cell{}}
	for _, side := range []string{"floor", "linux", "pdrelay"} {
		r.Sides = append(r.Sides, side)
		c := &Cell{}
		for i, p := range peak[side] {
			c.Peak = append(c.Peak, Sample{Side: side, Delivered: p, Offered: p})
			c.Fixed = append(c.Fixed, Sample{Side: side, Delivered: fixed, Busy: busy[side][i]})
		}
		r.Cells[side] = map[Direction]*Cell{Up: c}
	}
	return r
}

func TestRatiosAndCPU(t *testing.T) {
	r := result(map[string][]float64{
		"floor":   {400e3, 400e3, 400e3},
		"linux":   {100e3, 200e3, 100e3},
		"pdrelay": {300e3, 300e3, 100e3},
	}, map[string][]float64{
		"floor":   {0.5, 0.5, 0.6},
		"linux":   {0.8, 0.9, 0.9},
		"pdrelay": {1.0, 0.7, 0.6},
	}, 100e3)
	// Per round: 3, 1.5, 1 -> median 1.5.
	if got := r.PeakRatio("pdrelay", "linux"); got != 1.5 {
		t.Errorf("pdrelay/linux = %v, want 1.5", got)
	}
	// linux per round: (0.8-0.5)/1e5 = 3 µs, 4 µs, 3 µs -> median 3.
	if got := Median(r.CPUPerPacket("linux", Up)); math.Abs(got-3) > 1e-9 {
		t.Errorf("linux µs/pkt = %v, want 3", got)
	}
	// pdrelay: 5, 2, 0 -> 2.
	if got := Median(r.CPUPerPacket("pdrelay", Up)); math.Abs(got-2) > 1e-9 {
		t.Errorf("pdrelay µs/pkt = %v, want 2", got)
	}
	if got := r.Ratios("pdrelay", "ceiling", Up); got != nil {
		t.Errorf("ratio to a missing side: %v", got)
	}
}

func TestReportSpoofVerdict(t *testing.T) {
	r := result(map[string][]float64{"floor": {1}, "linux": {1}, "pdrelay": {1}},
		map[string][]float64{"floor": {0}, "linux": {0}, "pdrelay": {0}}, 1)
	r.Cells["linux"][Up].Peak[0].SpoofSent = 10
	r.Cells["linux"][Up].Peak[0].Counters = map[string]uint64{"dl0/spoofed": 10}
	r.Cells["pdrelay"][Up].Peak[0].SpoofSent = 10
	r.Cells["pdrelay"][Up].Peak[0].GotSpoofed = 3
	r.Cells["pdrelay"][Up].Peak[0].Counters = map[string]uint64{"dl0/spoofed": 7, "dl0/xsk_rx_ring_full": 2, "up0/forwarded": 1}
	var b bytes.Buffer
	writePoint(&b, r)
	out := b.String()
	for _, want := range []string{
		"spoof check, linux: 10 spoofed frames sent, ok: none reached the sink; 10 counted",
		"spoof check, pdrelay: 10 spoofed frames sent, FAILED: 3 reached the sink; 7 counted",
		"dl0/xsk_rx_ring_full 2",
		"pdrelay/linux peak ratio (median over directions and rounds): 1.00",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "up0/forwarded 1") {
		t.Errorf("forwarded shown as a drop:\n%s", out)
	}
}

func TestParsePhys(t *testing.T) {
	got, err := ParsePhys("up0=enp1s0f0:enp1s0f1,dl0=enp2s0f0:enp2s0f1")
	if err != nil || got["up0"] != [2]string{"enp1s0f0", "enp1s0f1"} || got["dl0"] != [2]string{"enp2s0f0", "enp2s0f1"} || len(got) != 2 {
		t.Errorf("ParsePhys: %v %v", got, err)
	}
	if got, err := ParsePhys(""); got != nil || err != nil {
		t.Errorf(`ParsePhys(""): %v %v, want nil`, got, err)
	}
	for _, bad := range []string{"up0=a", "up1=a:b", "dl0=:b", "up0=a:b,up0=c:d", "up0"} {
		if _, err := ParsePhys(bad); err == nil {
			t.Errorf("ParsePhys(%q) took it", bad)
		}
	}
	var buf bytes.Buffer
	WriteMarkdown(&buf, Header{Phys: map[string][2]string{"dl0": {"p1", "p2"}}}, nil)
	if !strings.Contains(buf.String(), "- links: NIC ports lent to the harness (up0 = a veth pair, dl0 = p1:p2)") {
		t.Errorf("the report does not name the NIC ports:\n%s", buf.String())
	}
	buf.Reset()
	WriteMarkdown(&buf, Header{}, nil)
	if !strings.Contains(buf.String(), "- links: veth pairs") {
		t.Errorf("the report does not say veth:\n%s", buf.String())
	}
}
