package fwd

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Run is one generator run through a side.
type Run struct {
	Traffic Traffic
	// Rate is the generator's rate in packets per second; 0: as fast as
	// it goes (the peak).
	Rate int
	// Count, when set, makes trafgen send exactly that many frames and
	// exit (the window is then the whole run); else it runs Warmup +
	// Window and is stopped.
	Count          int
	Warmup, Window time.Duration
}

// pacedBurst is the paced generator's burst: it sends this many frames
// together and sleeps between bursts (320 µs at 100k pps), so that its
// core is idle between them and the CPU figure sees the relay's work
// there; a sender spinning to each frame's time kept its core busy
// whatever the relay did, and hid the kernel's forwarding, which a veth
// runs on the sender's core.
const pacedBurst = 32

// Sample is what one Run measured.
type Sample struct {
	Side string
	Run  Run
	// Window rates, packets per second: the generator's interface
	// transmitted (Offered), the sink counted (Delivered: legitimate
	// frames; DeliveredSpoofed: spoofed ones, which must be 0 through a
	// filtering side).
	Offered, Delivered, DeliveredSpoofed float64
	// Busy is the CPU time of all cores during the window, in
	// CPU-seconds per second (/proc/stat).
	Busy float64
	// Totals over the whole run, from before the generator started to
	// after the frames in flight arrived.
	Sent, LegitSent, SpoofSent uint64 // transmitted by the generator's interface; its split by the frame sequence
	Got, GotSpoofed            uint64 // counted by the sink
	// Counters are the side's counters' increase over the run, zero ones
	// left out.
	Counters map[string]uint64
}

// Loss is the share of legitimate frames sent that did not arrive.
func (s Sample) Loss() float64 {
	if s.LegitSent == 0 {
		return 0
	}
	return 1 - float64(s.Got)/float64(s.LegitSent)
}

// snapshot is every counter a Sample is computed from, at one instant.
type snapshot struct {
	at          time.Time
	tx          uint64
	legit, spof uint64
	busy        time.Duration
}

func (h *Harness) snap(side Side, dir Direction) (snapshot, error) {
	ns, _, _ := h.gen(dir)
	var s snapshot
	var err error
	st, err := h.link(ns, "eth0")
	if err != nil {
		return s, err
	}
	s.tx = st.TX.Packets
	if s.legit, s.spof, err = side.Sink(dir).Counts(); err != nil {
		return s, err
	}
	if s.busy, err = busyCPU(); err != nil {
		return s, err
	}
	s.at = time.Now()
	return s, nil
}

// Measure runs the generator once through side, which must be started.
func (h *Harness) Measure(side Side, r Run) (Sample, error) {
	smp := Sample{Side: side.Name(), Run: r}
	t := r.Traffic
	cfgPath, err := h.trafgenConfig(t)
	if err != nil {
		return smp, err
	}
	frames := t.Frames()
	ns, _, _ := h.gen(t.Dir)
	before, err := h.counters(side, t.Dir)
	if err != nil {
		return smp, err
	}
	s0, err := h.snap(side, t.Dir)
	if err != nil {
		return smp, err
	}
	gen := "trafgen"
	args := []string{"taskset", "-c", strconv.Itoa(h.cfg.GenCPU), "trafgen", "-i", cfgPath, "-o", "eth0",
		"-P", "1", "--no-sock-mem", "--notouch-irq", "-C"}
	if r.Rate > 0 {
		args = append(args, "-b", strconv.Itoa(r.Rate)+"pps")
	}
	if r.Count > 0 {
		args = append(args, "-n", strconv.Itoa(r.Count))
	} else if r.Rate > 0 {
		// A fixed rate for a while: trafgen's --rate sends each second's
		// frames as one burst, so the paced sender sends instead, the
		// same frames in the same order through an AF_XDP socket.
		pcap, err := h.pacedPcap(t)
		if err != nil {
			return smp, err
		}
		gen = "replay"
		args = []string{"taskset", "-c", strconv.Itoa(h.cfg.GenCPU), h.cfg.Pdrelay, "replay", "--pcap", pcap,
			"--interface", "eth0", "--rate", strconv.Itoa(r.Rate), "--burst", strconv.Itoa(pacedBurst), "--loop", "0"}
	}
	p, err := h.Lab.Start(ns, gen, args...)
	if err != nil {
		return smp, err
	}
	var w0, w1 snapshot
	if r.Count > 0 {
		if err := p.Wait(time.Duration(r.Count)*time.Second/time.Duration(max(r.Rate, 1000)) + 30*time.Second); err != nil {
			p.Stop()
			return smp, fmt.Errorf("fwd: trafgen: %w\n%s", err, p.Log())
		}
		w0 = s0
	} else {
		// trafgen reads its config before it sends (a second for 10k
		// frames on a busy machine): the warm-up starts with the frames.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			st, err := h.link(ns, "eth0")
			if err != nil {
				p.Stop()
				return smp, err
			}
			if st.TX.Packets > s0.tx+10 {
				break
			}
			if p.Exited() || time.Now().After(deadline) {
				p.Stop()
				return smp, fmt.Errorf("fwd: %s does not send:\n%s", gen, p.Log())
			}
		}
		time.Sleep(r.Warmup)
		if w0, err = h.snap(side, t.Dir); err != nil {
			p.Stop()
			return smp, err
		}
		var rec *exec.Cmd
		if h.cfg.Perf != "" && r.Rate == 0 {
			rec = exec.Command("perf", "record", "-a", "-g", "-q", "-o", fmt.Sprintf("%s-%s-%s.data", h.cfg.Perf, side.Name(), t.Dir))
			if err := rec.Start(); err != nil {
				p.Stop()
				return smp, fmt.Errorf("fwd: perf record: %w", err)
			}
		}
		time.Sleep(r.Window)
		if w1, err = h.snap(side, t.Dir); err != nil {
			p.Stop()
			return smp, err
		}
		if rec != nil {
			_ = rec.Process.Signal(syscall.SIGINT)
			_ = rec.Wait()
		}
		// trafgen forks its sender: ^C goes to the whole group, as from
		// a terminal.
		_ = syscall.Kill(-p.Pid(), syscall.SIGINT)
		if err := p.Wait(10 * time.Second); err != nil && !p.Exited() {
			p.Stop()
			return smp, fmt.Errorf("fwd: %s on SIGINT: %w\n%s", gen, err, p.Log())
		} else if err != nil {
			// The window is over and the counters tell what was sent:
			// an exit status after the interrupt (trafgen's "Flushing
			// TX_RING failed" on a full ring, seen in a sweep) changes
			// nothing measured.
			h.cfg.Logf("fwd: %s %s: %s exited with %v after SIGINT", side.Name(), t.Dir, gen, err)
		}
	}
	// The frames in flight: wait until the sink stops counting.
	var s1 snapshot
	for prev, i := uint64(1<<63), 0; i < 50; i++ {
		time.Sleep(50 * time.Millisecond)
		if s1, err = h.snap(side, t.Dir); err != nil {
			return smp, err
		}
		if s1.legit+s1.spof == prev {
			break
		}
		prev = s1.legit + s1.spof
	}
	if r.Count > 0 {
		w1 = s1
	}
	after, err := h.counters(side, t.Dir)
	if err != nil {
		return smp, err
	}
	if w1.tx == w0.tx {
		return smp, fmt.Errorf("fwd: %s %s: the generator sent nothing in the window; %s:\n%s", side.Name(), t.Dir, gen, p.Log())
	}
	secs := w1.at.Sub(w0.at).Seconds()
	smp.Offered = float64(w1.tx-w0.tx) / secs
	smp.Delivered = float64(w1.legit-w0.legit) / secs
	smp.DeliveredSpoofed = float64(w1.spof-w0.spof) / secs
	smp.Busy = (w1.busy - w0.busy).Seconds() / secs
	smp.Sent = s1.tx - s0.tx
	smp.Got, smp.GotSpoofed = s1.legit-s0.legit, s1.spof-s0.spof
	if r.Count > 0 {
		// Exactly Count frames of the sequence left trafgen; the
		// interface's counter also holds the host's own packets (neighbour
		// discovery), so the split uses Count.
		smp.LegitSent, smp.SpoofSent = split(frames, uint64(r.Count))
	} else {
		smp.LegitSent, smp.SpoofSent = split(frames, smp.Sent)
	}
	smp.Counters = map[string]uint64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			smp.Counters[k] = d
		}
	}
	return smp, nil
}

// counters are side's counters and the veths' drop counters on dir's
// path.
func (h *Harness) counters(side Side, dir Direction) (map[string]uint64, error) {
	m, err := side.Counters()
	if err != nil {
		return nil, err
	}
	k, err := h.kernelDrops(dir)
	if err != nil {
		return nil, err
	}
	if m == nil {
		m = map[string]uint64{}
	} else {
		m = maps.Clone(m)
	}
	maps.Copy(m, k)
	return m, nil
}

// split returns how many of the first n frames of the cyclic sequence
// frames are legitimate and spoofed.
func split(frames []Frame, n uint64) (legit, spoofed uint64) {
	l, s := Counts(frames)
	cycles, rest := n/uint64(len(frames)), n%uint64(len(frames))
	legit, spoofed = cycles*uint64(l), cycles*uint64(s)
	for _, f := range frames[:rest] {
		if f.DstPort == PortSpoof {
			spoofed++
		} else {
			legit++
		}
	}
	return legit, spoofed
}

// busyOrigin is the origin of busyCPU's count.
var busyOrigin = time.Now()

// busyCPU returns the machine's busy time since busyOrigin, less an
// offset that differences cancel: every core's time less its idle (and
// iowait) time from /proc/stat. On a tickless kernel the idle time is
// the scheduler's idle clock, measured at each idle entry and exit,
// where the user, system and softirq fields are charged a whole tick to
// whatever runs when the timer ticks: a sender that wakes at a fixed
// period aliases with the tick, and the same side read 0.22 and 0.89
// CPU in two rounds that way.
func busyCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	now := time.Now()
	if err != nil {
		return 0, fmt.Errorf("fwd: %w", err)
	}
	lines := strings.Split(string(b), "\n")
	f := strings.Fields(lines[0])
	if len(f) < 6 || f[0] != "cpu" {
		return 0, fmt.Errorf("fwd: /proc/stat: unexpected first line %q", lines[0])
	}
	cpus := 0
	for _, l := range lines[1:] {
		if strings.HasPrefix(l, "cpu") {
			cpus++
		}
	}
	var idle int64
	for _, i := range []int{4, 5} { // idle, iowait
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("fwd: /proc/stat field %d: %w", i, err)
		}
		idle += v
	}
	return time.Duration(cpus)*now.Sub(busyOrigin) - time.Duration(idle)*time.Second/100, nil // USER_HZ
}

// Ready waits until side delivers a probe of 100 frames in each
// direction in full (the relay has resolved its neighbours and published
// its routes), for up to 20 seconds.
func (h *Harness) Ready(side Side) error {
	deadline := time.Now().Add(20 * time.Second)
	for _, dir := range []Direction{Up, Down} {
		for {
			s, err := h.Measure(side, Run{Traffic: h.Traffic(dir, 1, 0, MinFrame), Rate: 10_000, Count: 100})
			if err == nil && s.Got == s.LegitSent {
				break
			}
			if time.Now().After(deadline) {
				if err != nil {
					return err
				}
				return fmt.Errorf("fwd: %s does not forward %s: probe of %d frames, %d arrived", side.Name(), dir, s.LegitSent, s.Got)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}
