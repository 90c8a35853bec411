package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

// RateMode is how a live replay paces the frames.
type RateMode int

const (
	// RateOriginal sends each frame at its capture offset from the first
	// frame (the default).
	RateOriginal RateMode = iota
	// RateFixed sends PPS frames per second, evenly spaced.
	RateFixed
	// RateMax sends as fast as the interface takes them.
	RateMax
)

// Rate is the --rate of a live replay.
type Rate struct {
	Mode RateMode
	PPS  float64 // RateFixed only: frames per second, > 0
}

// ParseRate reads --rate: "original", "max", or a rate in frames per
// second ("1000", "2.5k", "1M").
func ParseRate(s string) (Rate, error) {
	switch s {
	case "original", "":
		return Rate{Mode: RateOriginal}, nil
	case "max":
		return Rate{Mode: RateMax}, nil
	}
	num, mult := s, 1.0
	switch {
	case strings.HasSuffix(s, "k"):
		num, mult = s[:len(s)-1], 1e3
	case strings.HasSuffix(s, "M"):
		num, mult = s[:len(s)-1], 1e6
	}
	v, err := strconv.ParseFloat(num, 64)
	pps := v * mult
	if err != nil || math.IsNaN(pps) || pps <= 0 || pps > 1e9 {
		return Rate{}, fmt.Errorf("--rate %q: want original, max, or frames per second (1000, 2.5k, 1M; up to 1e9)", s)
	}
	return Rate{Mode: RateFixed, PPS: pps}, nil
}

func (r Rate) String() string {
	switch r.Mode {
	case RateMax:
		return "max"
	case RateFixed:
		return strconv.FormatFloat(r.PPS, 'g', -1, 64) + " pps"
	}
	return "original"
}

// LiveOptions is what a live replay needs besides the capture.
type LiveOptions struct {
	// Interface is the network interface the frames leave by.
	Interface string
	// Queue is its TX queue the AF_XDP socket binds to (0 on a veth).
	Queue int
	// Rate paces the frames.
	Rate Rate
	// Loops is how many times the capture is sent; 0 sends it until the
	// context is cancelled.
	Loops int
	// Realtime runs the paced sending thread under SCHED_FIFO (original
	// and fixed rates; not at max).
	Realtime bool
	// Burst, above 1 and at a fixed rate only, sends the frames in groups
	// of Burst every Burst/PPS seconds, and the sender sleeps between
	// groups instead of spinning to each frame's time: the CPU stays idle
	// between bursts, as behind a NIC that coalesces interrupts, and the
	// average rate is kept (the schedule is absolute).
	Burst int
	// Progress, if not nil, gets a progress line every second once the
	// replay has run for two seconds.
	Progress io.Writer
}

// LiveSummary is what a live replay did.
type LiveSummary struct {
	Interface string `json:"interface"`
	Queue     int    `json:"queue"`
	ZeroCopy  bool   `json:"zero_copy"` // the kernel's word: AF_XDP zero-copy or copy mode
	Rate      string `json:"rate"`      // "original", "max" or "N pps"

	// The capture, read once before sending: frames in it, how long it
	// lasts (first to last timestamp), and the frames that are not sent,
	// by reason (counted once, not per loop).
	Frames        uint64  `json:"capture_frames"`
	CaptureSecs   float64 `json:"capture_seconds"`
	SkippedBig    uint64  `json:"skipped_larger_than_umem_frame"`
	SkippedMTU    uint64  `json:"skipped_larger_than_mtu"`
	SkippedRunt   uint64  `json:"skipped_shorter_than_ethernet_header"`
	SkippedNotEth uint64  `json:"skipped_not_ethernet"`
	// Truncated frames (capture length below wire length) are sent as
	// captured, cut short; counted once.
	Truncated uint64 `json:"truncated_sent_as_captured"`

	Loops       uint64 `json:"loops_completed"`
	Sent        uint64 `json:"frames_sent"` // frames the kernel took for transmission
	Bytes       uint64 `json:"bytes_sent"`  // their Ethernet bytes (no preamble, no FCS)
	Unconfirmed uint64 `json:"unconfirmed"` // taken but not reported done by the kernel when the replay ended
	// TxInvalid counts frames the kernel refused (XDP_STATISTICS
	// tx_invalid_descs).
	TxInvalid   uint64 `json:"tx_invalid"`
	Interrupted bool   `json:"interrupted"`

	// Seconds runs from the first frame sent to the last one done.
	Seconds       float64 `json:"seconds"`
	PPS           float64 `json:"pps"`
	BitsPerSecond float64 `json:"bits_per_second"`

	// Timing is the error of each frame's send time against its schedule
	// (the capture offset, or the fixed rate's slot), for paced replays.
	Timing *Timing `json:"timing,omitempty"`
}

// Timing summarizes |actual - scheduled| send times over all frames sent,
// where actual is when the system call that handed the frame to the
// kernel returned. Percentiles are within 1% (a log-linear histogram).
type Timing struct {
	MaxNs    int64  `json:"max_ns"`
	P99Ns    int64  `json:"p99_ns"`
	P50Ns    int64  `json:"p50_ns"`
	Over1ms  uint64 `json:"over_1ms"` // frames more than 1 ms off
	Measured uint64 `json:"frames"`
}

// txPort is where a live replay's frames go: the AF_XDP socket, or a test
// double. Its methods are called from one goroutine.
type txPort interface {
	// send copies a prefix of frames to the kernel for transmission,
	// pushes them out, and returns how many it took; 0 when the
	// transmit ring is full (after waiting a little for room).
	send(frames [][]byte) (int, error)
	// drain waits up to timeout for the kernel to finish every frame
	// taken, and returns how many it did not.
	drain(timeout time.Duration) uint64
	// txInvalid returns the kernel's count of refused frames.
	txInvalid() uint64
}

// clock is the pacing clock: nanoseconds from an arbitrary origin, and a
// precise wait.
type clock interface {
	now() int64
	// waitUntil returns at t or as soon as possible after it.
	waitUntil(t int64)
}

// trace is a capture read into memory, ready to send.
type trace struct {
	frames [][]byte
	offs   []int64 // ns from the first frame's timestamp; may go backwards
	span   int64   // the largest offset: one loop's length at original timing
	sum    LiveSummary
}

// loadTrace reads a pcap or pcapng capture into memory, keeping the
// frames that can be sent: Ethernet, at least a header long, at most
// frameRoom (the UMEM frame) and mtuLimit bytes.
func loadTrace(in io.Reader, frameRoom, mtuLimit int) (*trace, error) {
	rd, err := openCapture(in)
	if err != nil {
		return nil, err
	}
	tr := &trace{}
	s := &tr.sum
	var first int64
	var arena []byte
	for {
		data, ci, err := rd.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read frame %d: %w: %w", s.Frames+1, ErrCapture, err)
		}
		s.Frames++
		ts := ci.Timestamp.UnixNano()
		if s.Frames == 1 {
			first = ts
		}
		switch {
		case !rd.ethernet(ci):
			s.SkippedNotEth++
			continue
		case len(data) < 14:
			s.SkippedRunt++
			continue
		case len(data) > frameRoom:
			s.SkippedBig++
			continue
		case len(data) > mtuLimit:
			s.SkippedMTU++
			continue
		}
		if ci.CaptureLength < ci.Length {
			s.Truncated++
		}
		// One arena for many frames: a slice header per frame, not an
		// allocation.
		if cap(arena)-len(arena) < len(data) {
			arena = make([]byte, 0, max(1<<20, len(data)))
		}
		start := len(arena)
		arena = append(arena, data...)
		tr.frames = append(tr.frames, arena[start:len(arena):len(arena)])
		off := ts - first
		tr.offs = append(tr.offs, off)
		tr.span = max(tr.span, off)
	}
	s.CaptureSecs = float64(tr.span) / 1e9
	return tr, nil
}

// maxBatch is the most frames handed to the kernel at once.
const maxBatch = 64

// progressStart is when the progress lines start: replays shorter than
// this print none.
const progressStart = 2 * time.Second

// pollEvery bounds a wait, so that a long gap in a capture still notices
// cancellation and prints progress.
const pollEvery = int64(100 * time.Millisecond)

// stallAfter ends a replay whose port took nothing for this long.
const stallAfter = int64(5 * time.Second)

// replayer runs one live replay on a port with a clock.
type replayer struct {
	tr    *trace
	opts  LiveOptions
	port  txPort
	clk   clock
	batch [][]byte
	due   []int64
	hist  hist

	start, lastSent int64
	nextProgress    int64
	loop            uint64
}

// run sends the trace opts.Loops times (0: until ctx ends) and fills in
// the summary.
func (r *replayer) run(ctx context.Context) (LiveSummary, error) {
	sum := r.tr.sum
	sum.Interface, sum.Queue, sum.Rate = r.opts.Interface, r.opts.Queue, r.opts.Rate.String()
	paced := r.opts.Rate.Mode != RateMax
	var period float64
	if r.opts.Rate.Mode == RateFixed {
		period = 1e9 / r.opts.Rate.PPS
	}
	n := len(r.tr.frames)
	r.start = r.clk.now()
	r.lastSent = r.start
	r.nextProgress = r.start + int64(progressStart)
	// schedule returns frame i's send time in loop r.loop; g counts the
	// frames of all loops.
	schedule := func(i int, g uint64) int64 {
		if r.opts.Rate.Mode == RateFixed {
			if b := uint64(r.opts.Burst); b > 1 {
				g -= g % b
			}
			return r.start + int64(float64(g)*period)
		}
		return r.start + int64(r.loop)*r.tr.span + r.tr.offs[i]
	}
	var err error
	var g uint64 // frames sent over all loops, for the fixed rate
	stalled := int64(-1)
loops:
	for ; n > 0 && (r.opts.Loops == 0 || r.loop < uint64(r.opts.Loops)); r.loop++ {
		for i := 0; i < n; {
			if ctx.Err() != nil {
				sum.Interrupted = true
				break loops
			}
			now := r.clk.now()
			if paced {
				due := schedule(i, g)
				if now < due {
					r.progress(now, &sum)
					r.clk.waitUntil(min(due, now+pollEvery))
					continue
				}
			}
			// The batch: frames from i on that are due (all, at max),
			// up to maxBatch, within this loop.
			r.batch, r.due = r.batch[:0], r.due[:0]
			for j := i; j < n && len(r.batch) < maxBatch; j++ {
				if paced {
					d := schedule(j, g+uint64(j-i))
					if d > now {
						break
					}
					r.due = append(r.due, d)
				}
				r.batch = append(r.batch, r.tr.frames[j])
			}
			k, serr := r.port.send(r.batch)
			if serr != nil {
				err = fmt.Errorf("transmit on %s: %w", r.opts.Interface, serr)
				break loops
			}
			t := r.clk.now()
			if k == 0 {
				if stalled < 0 {
					stalled = t
				} else if t-stalled > stallAfter {
					err = fmt.Errorf("transmit on %s: the kernel took no frame for %v", r.opts.Interface, time.Duration(stallAfter))
					break loops
				}
				continue
			}
			stalled = -1
			for j := 0; j < k; j++ {
				sum.Bytes += uint64(len(r.batch[j]))
				if paced {
					r.hist.add(abs(t - r.due[j]))
				}
			}
			sum.Sent += uint64(k)
			r.lastSent = t
			i += k
			g += uint64(k)
			r.progress(t, &sum)
		}
	}
	sum.Loops = r.loop
	sum.Unconfirmed = r.port.drain(2 * time.Second)
	sum.TxInvalid = r.port.txInvalid()
	end := r.clk.now()
	if sum.Sent > 0 {
		sum.Seconds = float64(end-r.start) / 1e9
		if sum.Seconds > 0 {
			sum.PPS = float64(sum.Sent) / sum.Seconds
			sum.BitsPerSecond = float64(sum.Bytes) * 8 / sum.Seconds
		}
	}
	if paced && r.hist.n > 0 {
		sum.Timing = &Timing{
			MaxNs: r.hist.max, P99Ns: r.hist.quantile(0.99), P50Ns: r.hist.quantile(0.50),
			Over1ms: r.hist.over1ms, Measured: r.hist.n,
		}
	}
	return sum, err
}

// progress prints a line every second once the replay has run for
// progressStart.
func (r *replayer) progress(now int64, sum *LiveSummary) {
	if r.opts.Progress == nil || now < r.nextProgress {
		return
	}
	r.nextProgress = now + int64(time.Second)
	secs := float64(now-r.start) / 1e9
	loops := "forever"
	if r.opts.Loops > 0 {
		loops = strconv.Itoa(r.opts.Loops)
	}
	fmt.Fprintf(r.opts.Progress, "replay: %.0f s, %d frames sent, %s pps, %s bit/s, loop %d/%s\n",
		secs, sum.Sent, si(float64(sum.Sent)/secs), si(float64(sum.Bytes)*8/secs), r.loop+1, loops)
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// si formats v with a k, M or G suffix.
func si(v float64) string {
	switch {
	case v >= 1e9:
		return strconv.FormatFloat(v/1e9, 'f', 2, 64) + "G"
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + "M"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// WriteLiveText prints a live replay's summary for a person.
func WriteLiveText(w io.Writer, s LiveSummary) {
	mode := "copy mode"
	if s.ZeroCopy {
		mode = "zero-copy"
	}
	fmt.Fprintf(w, "interface          %s (queue %d, AF_XDP %s)\n", s.Interface, s.Queue, mode)
	fmt.Fprintf(w, "capture            %d frames over %.6f s\n", s.Frames, s.CaptureSecs)
	fmt.Fprintf(w, "skipped            %d larger than the UMEM frame, %d larger than the MTU, %d shorter than an Ethernet header, %d not Ethernet\n",
		s.SkippedBig, s.SkippedMTU, s.SkippedRunt, s.SkippedNotEth)
	if s.Truncated > 0 {
		fmt.Fprintf(w, "truncated          %d frames cut short by the capture, sent as captured\n", s.Truncated)
	}
	fmt.Fprintf(w, "rate               %s\n", s.Rate)
	fmt.Fprintf(w, "sent               %d frames, %d bytes, %d loops completed", s.Sent, s.Bytes, s.Loops)
	if s.Interrupted {
		fmt.Fprint(w, " (interrupted)")
	}
	fmt.Fprintln(w)
	if s.Unconfirmed > 0 || s.TxInvalid > 0 {
		fmt.Fprintf(w, "not confirmed      %d not done by the kernel at the end, %d refused by it\n", s.Unconfirmed, s.TxInvalid)
	}
	fmt.Fprintf(w, "duration           %.6f s\n", s.Seconds)
	fmt.Fprintf(w, "achieved           %s pps, %s bit/s\n", si(s.PPS), si(s.BitsPerSecond))
	if t := s.Timing; t != nil {
		fmt.Fprintf(w, "timing error       max %.3f ms, p99 %.3f ms, p50 %.3f ms, %d of %d frames over 1 ms\n",
			float64(t.MaxNs)/1e6, float64(t.P99Ns)/1e6, float64(t.P50Ns)/1e6, t.Over1ms, t.Measured)
	}
}

// hist is a log-linear histogram of non-negative nanosecond counts:
// exact below 2^(histSub+1) ns, and within 1/2^histSub above (each
// power of two is cut into 2^histSub buckets). Fixed size, no
// allocation per value.
type hist struct {
	counts  [(65 - histSub) << histSub]uint64
	n       uint64
	max     int64
	over1ms uint64
}

const histSub = 7

func histBucket(v uint64) int {
	l := bits.Len64(v)
	if l <= histSub+1 {
		return int(v)
	}
	shift := l - 1 - histSub
	return shift<<histSub + int(v>>shift)
}

// histUpper returns the largest value in bucket i.
func histUpper(i int) int64 {
	if i < 2<<histSub {
		return int64(i)
	}
	shift := i>>histSub - 1
	lo := uint64(i-shift<<histSub) << shift
	return int64(lo + 1<<shift - 1)
}

func (h *hist) add(v int64) {
	h.counts[histBucket(uint64(v))]++
	h.n++
	h.max = max(h.max, v)
	if v > int64(time.Millisecond) {
		h.over1ms++
	}
}

// quantile returns the upper bound of the bucket that holds the q-th
// value (no more than the largest value seen).
func (h *hist) quantile(q float64) int64 {
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(histUpper(i), h.max)
		}
	}
	return h.max
}
