package fwd

import (
	"os/exec"
	"testing"

	"github.com/pdrelay/pdrelay/bench/lab"
)

// TestHarnessShort runs every side that exists once per direction with
// a thousand frames at a low rate (trafgen's --rate sends them in bursts
// of 500 at full speed, which every side's rings absorb), and checks counts and verdicts,
// never speed: N bindings recovered by Bulk Leasequery (and N routes in
// kernel mode: Start waits for them), every legitimate frame delivered,
// every spoofed frame dropped by the filtering sides and counted by
// pdrelay as spoofed, and let through by the sides that do not filter
// (the floor counts them at the relay's ingress, the ceiling forwards
// them).
func TestHarnessShort(t *testing.T) {
	lab.Require(t)
	if _, err := exec.LookPath("trafgen"); err != nil {
		t.Skip("skipping: trafgen not found (Debian package netsniff-ng)")
	}
	pdrelay, fakekea, xskfwd, xdpfast, err := Binaries("../..", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	h, err := New(Config{Pdrelay: pdrelay, Fakekea: fakekea, Xskfwd: xskfwd, Xdpfast: xdpfast, N: n, GenCPU: 0, RelayCPU: "1", Tag: "fh", Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range h.Lab.Procs() {
				t.Logf("--- %s log ---\n%s", p.Name, p.Log())
			}
		}
		if err := h.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	sides := []string{"floor", "linux", "pdrelay"}
	if xskfwd != "" {
		sides = append(sides, "ceiling")
	}
	if xdpfast != "" {
		sides = append(sides, "xdpfast")
	}
	var spoofSent uint64 // through xdpfast
	for _, name := range sides {
		side := h.Side(name)
		if err := side.Start(); err != nil {
			t.Fatal(err)
		}
		if err := h.Ready(side); err != nil {
			t.Fatal(err)
		}
		for _, dir := range []Direction{Up, Down} {
			spoof := 0
			if dir == Up {
				spoof = 50
			}
			r := Run{Traffic: h.Traffic(dir, 100, spoof, 64), Rate: 500, Count: 1000}
			s, err := h.Measure(side, r)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s %s: sent %d (legit %d, spoofed %d), got %d legit %d spoofed, counters %v",
				name, dir, s.Sent, s.LegitSent, s.SpoofSent, s.Got, s.GotSpoofed, s.Counters)
			if s.Sent < uint64(r.Count) {
				t.Errorf("%s %s: the generator's interface sent %d, want at least %d", name, dir, s.Sent, r.Count)
			}
			if s.Got != s.LegitSent {
				t.Errorf("%s %s: %d legitimate frames arrived, want the %d sent", name, dir, s.Got, s.LegitSent)
			}
			switch name {
			case "floor", "ceiling":
				if s.GotSpoofed != s.SpoofSent {
					t.Errorf("%s %s: %d spoofed frames arrived, want the %d sent (this side does not filter)", name, dir, s.GotSpoofed, s.SpoofSent)
				}
			case "xdpfast":
				// Its counters come when it stops: checked below.
				if s.GotSpoofed != 0 {
					t.Errorf("%s %s: %d spoofed frames got through", name, dir, s.GotSpoofed)
				}
				spoofSent += s.SpoofSent
			default:
				if s.GotSpoofed != 0 {
					t.Errorf("%s %s: %d spoofed frames got through", name, dir, s.GotSpoofed)
				}
				if got := s.Counters["dl0/spoofed"]; got != s.SpoofSent {
					t.Errorf("%s %s: pdrelay counted %d spoofed on dl0, want %d", name, dir, got, s.SpoofSent)
				}
			}
		}
		if err := side.Stop(); err != nil {
			t.Fatal(err)
		}
		if name == "xdpfast" {
			if c, _ := side.Counters(); c["spoofed"] != spoofSent {
				t.Errorf("xdpfast counted %d spoofed, want the %d sent (counters %v)", c["spoofed"], spoofSent, c)
			}
		}
	}
}
