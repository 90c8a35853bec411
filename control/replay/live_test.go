package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// fakeClock jumps to every deadline: the replayer's pacing is checked
// without waiting.
type fakeClock struct{ t int64 }

func (c *fakeClock) now() int64 { return c.t }
func (c *fakeClock) waitUntil(t int64) {
	if t > c.t {
		c.t = t
	}
}

// sent is one frame a fakePort took, and the clock when it did.
type sent struct {
	data []byte
	at   int64
}

// fakePort records what it is given. Each send call takes cost ns of the
// fake clock and at most take frames; the first refuse calls take none.
type fakePort struct {
	clk    *fakeClock
	cost   int64
	take   int
	refuse int
	calls  int
	batch  []int // frames offered per call
	got    []sent
	onSend func() // runs after each call
}

func (p *fakePort) send(frames [][]byte) (int, error) {
	p.calls++
	p.batch = append(p.batch, len(frames))
	p.clk.t += p.cost
	k := len(frames)
	if p.take > 0 {
		k = min(k, p.take)
	}
	if p.refuse > 0 {
		p.refuse--
		k = 0
	}
	for _, f := range frames[:k] {
		p.got = append(p.got, sent{append([]byte(nil), f...), p.clk.t})
	}
	if p.onSend != nil {
		p.onSend()
	}
	return k, nil
}

func (p *fakePort) drain(time.Duration) uint64 { return 0 }
func (p *fakePort) txInvalid() uint64          { return 0 }

// goldenTrace is testdata/in.pcap in memory: 41 frames over 1.15 s, with
// gaps of 0 (a burst of 12), 1 ms, 8 ms and 1 s; the last is truncated.
func goldenTrace(t testing.TB) *trace {
	t.Helper()
	in, err := os.ReadFile("testdata/in.pcap")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := loadTrace(bytes.NewReader(in), 4096, 1518)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.frames) != 41 || tr.span != 1150*int64(time.Millisecond) || tr.sum.Truncated != 1 {
		t.Fatalf("golden trace: %d frames over %d ns, %d truncated; want 41, 1.15 s, 1", len(tr.frames), tr.span, tr.sum.Truncated)
	}
	return tr
}

func runFake(t *testing.T, tr *trace, opts LiveOptions, p *fakePort) (LiveSummary, error) {
	t.Helper()
	r := &replayer{tr: tr, opts: opts, port: p, clk: p.clk}
	return r.run(context.Background())
}

// TestLiveOriginalTiming: at the original rate every frame is offered at
// its capture offset, loop after loop (loop k starts k spans later), in
// order, frames due together go in one batch, and the timing error is
// what the send took.
func TestLiveOriginalTiming(t *testing.T) {
	tr := goldenTrace(t)
	const cost = 3000 // ns per send call
	clk := &fakeClock{t: 1e9}
	p := &fakePort{clk: clk, cost: cost}
	sum, err := runFake(t, tr, LiveOptions{Interface: "x", Loops: 2}, p)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Sent != 82 || sum.Loops != 2 || len(p.got) != 82 {
		t.Fatalf("sent %d (%d recorded), loops %d; want 82, 2", sum.Sent, len(p.got), sum.Loops)
	}
	for i, s := range p.got {
		loop, j := i/41, i%41
		due := 1e9 + int64(loop)*tr.span + tr.offs[j]
		if !bytes.Equal(s.data, tr.frames[j]) {
			t.Fatalf("frame %d: not frame %d of the capture", i, j)
		}
		if s.at < due || s.at > due+2*cost {
			t.Errorf("frame %d (loop %d, capture frame %d) sent at %d, due %d", i, loop, j, s.at, due)
		}
	}
	// Frames 12-23 share a timestamp (and the last of loop 0 shares its
	// slot with the first of loop 1): each burst is one call.
	if !slicesContain(p.batch, 12) {
		t.Errorf("batches %v: the burst of 12 frames was split", p.batch)
	}
	tm := sum.Timing
	if tm == nil || tm.Measured != 82 || tm.MaxNs < cost || tm.MaxNs > 2*cost || tm.Over1ms != 0 {
		t.Errorf("timing %+v; want 82 frames, max within [%d, %d]", tm, cost, 2*cost)
	}
	if sum.Bytes != 2*(40*83+40) {
		t.Errorf("bytes %d; want %d", sum.Bytes, 2*(40*83+40))
	}
}

func slicesContain(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestLiveFixedRate: at N pps frame g of the whole replay goes at g/N s.
func TestLiveFixedRate(t *testing.T) {
	tr := goldenTrace(t)
	clk := &fakeClock{}
	p := &fakePort{clk: clk}
	sum, err := runFake(t, tr, LiveOptions{Rate: Rate{Mode: RateFixed, PPS: 2000}, Loops: 3}, p)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Sent != 123 {
		t.Fatalf("sent %d, want 123", sum.Sent)
	}
	for g, s := range p.got {
		if want := int64(g) * 500_000; s.at != want {
			t.Fatalf("frame %d at %d ns, want %d", g, s.at, want)
		}
	}
	if sum.Timing == nil || sum.Timing.MaxNs != 0 {
		t.Errorf("timing %+v, want exact", sum.Timing)
	}
	if want := 122 * 0.0005; sum.Seconds != want || sum.PPS != 123/want {
		t.Errorf("%v s at %v pps; want %v s", sum.Seconds, sum.PPS, want)
	}
}

// TestLiveFixedRateBurst: with a burst of 4 at 2000 pps, frames go four
// at a time, every 2 ms, each group in one send; the average rate is
// kept across loops.
func TestLiveFixedRateBurst(t *testing.T) {
	tr := goldenTrace(t)
	clk := &fakeClock{}
	p := &fakePort{clk: clk}
	sum, err := runFake(t, tr, LiveOptions{Rate: Rate{Mode: RateFixed, PPS: 2000}, Loops: 3, Burst: 4}, p)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Sent != 123 {
		t.Fatalf("sent %d, want 123", sum.Sent)
	}
	for g, s := range p.got {
		if want := int64(g/4*4) * 500_000; s.at != want {
			t.Fatalf("frame %d at %d ns, want %d", g, s.at, want)
		}
	}
}

// TestLiveMax: at max nothing waits, batches are full, there is no
// timing to report; a port that refuses a few calls (ring full) still
// gets every frame once, in order.
func TestLiveMax(t *testing.T) {
	tr := goldenTrace(t)
	clk := &fakeClock{}
	p := &fakePort{clk: clk, cost: 1000, take: 30, refuse: 3}
	sum, err := runFake(t, tr, LiveOptions{Rate: Rate{Mode: RateMax}, Loops: 4}, p)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Sent != 164 || sum.Timing != nil {
		t.Fatalf("sent %d, timing %+v; want 164, none", sum.Sent, sum.Timing)
	}
	for i, s := range p.got {
		if !bytes.Equal(s.data, tr.frames[i%41]) {
			t.Fatalf("frame %d out of order", i)
		}
	}
	if clk.t != int64(p.calls)*1000 {
		t.Errorf("the clock moved by %d ns over %d calls of 1000: something waited", clk.t, p.calls)
	}
	if p.batch[0] != 41 {
		t.Errorf("first batch %d frames, want the whole loop (41)", p.batch[0])
	}
}

// TestLiveStall: a port that never takes a frame ends the replay with an
// error after stallAfter, instead of spinning forever.
func TestLiveStall(t *testing.T) {
	tr := goldenTrace(t)
	clk := &fakeClock{}
	p := &fakePort{clk: clk, cost: int64(time.Millisecond), refuse: 1 << 30}
	sum, err := runFake(t, tr, LiveOptions{Interface: "veth9", Rate: Rate{Mode: RateMax}, Loops: 1}, p)
	if err == nil || !strings.Contains(err.Error(), "transmit on veth9: the kernel took no frame for 5s") {
		t.Fatalf("err %v", err)
	}
	if sum.Sent != 0 {
		t.Errorf("sent %d", sum.Sent)
	}
}

// TestLiveForeverUntilCancelled: --loop 0 runs until the context ends
// and says it was interrupted.
func TestLiveForeverUntilCancelled(t *testing.T) {
	tr := goldenTrace(t)
	clk := &fakeClock{}
	ctx, cancel := context.WithCancel(context.Background())
	p := &fakePort{clk: clk, take: 10}
	p.onSend = func() {
		if len(p.got) >= 41*5+7 {
			cancel()
		}
	}
	r := &replayer{tr: tr, opts: LiveOptions{Rate: Rate{Mode: RateMax}}, port: p, clk: clk}
	sum, err := r.run(ctx)
	if err != nil || !sum.Interrupted || sum.Loops != 5 || sum.Sent != uint64(len(p.got)) || sum.Sent < 41*5+7 || sum.Sent > 41*5+17 {
		t.Fatalf("err %v, interrupted %v, loops %d, sent %d (%d recorded)", err, sum.Interrupted, sum.Loops, sum.Sent, len(p.got))
	}
}

// TestLiveProgress: progress lines come every second from the second
// second on, and not at all without a writer.
func TestLiveProgress(t *testing.T) {
	tr := goldenTrace(t)
	var buf bytes.Buffer
	clk := &fakeClock{}
	// 41 frames x 3 loops at 20 pps: 6.1 s.
	sum, err := runFake(t, tr, LiveOptions{Rate: Rate{Mode: RateFixed, PPS: 20}, Loops: 3, Progress: &buf}, &fakePort{clk: clk})
	if err != nil || sum.Sent != 123 {
		t.Fatal(err, sum.Sent)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d progress lines, want 5 (at 2..6 s):\n%s", len(lines), buf.String())
	}
	if want := "replay: 2 s, 41 frames sent, 20.5 pps, 13.4k bit/s, loop 1/3"; lines[0] != want {
		t.Errorf("first line %q, want %q", lines[0], want)
	}
}

// TestParseRate covers --rate's forms and its errors.
func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Rate
		err  bool
	}{
		{"original", Rate{Mode: RateOriginal}, false},
		{"max", Rate{Mode: RateMax}, false},
		{"1000", Rate{Mode: RateFixed, PPS: 1000}, false},
		{"2.5k", Rate{Mode: RateFixed, PPS: 2500}, false},
		{"1M", Rate{Mode: RateFixed, PPS: 1e6}, false},
		{"0", Rate{}, true},
		{"-5", Rate{}, true},
		{"fast", Rate{}, true},
		{"NaN", Rate{}, true},
		{"2e9", Rate{}, true},
		{"k", Rate{}, true},
	} {
		got, err := ParseRate(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseRate(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// TestHist checks the histogram's quantiles against exact ones: within
// 1/128 above, never below, never above the maximum.
func TestHist(t *testing.T) {
	var h hist
	var vals []int64
	x := uint64(12345)
	for i := 0; i < 10000; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		v := int64(x % uint64(1+i*i*10)) // from ns to ~1 s
		vals = append(vals, v)
		h.add(v)
	}
	sortInt64(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 1} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := h.quantile(q)
		if got < exact || float64(got-exact) > float64(exact)/128+1 {
			t.Errorf("q%v = %d, exact %d", q, got, exact)
		}
	}
	if h.max != vals[len(vals)-1] {
		t.Errorf("max %d, want %d", h.max, vals[len(vals)-1])
	}
	for v := uint64(0); v < 1<<20; v += 1 + v/3 {
		if i := histBucket(v); histUpper(i) < int64(v) || (i > 0 && histUpper(i-1) >= int64(v)) {
			t.Fatalf("value %d in bucket %d of upper %d (previous upper %d)", v, i, histUpper(i), histUpper(i-1))
		}
	}
}

func sortInt64(s []int64) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// TestLoadTraceSkips: frames that cannot be sent are counted by reason
// and left out; truncated ones are kept as captured.
func TestLoadTraceSkips(t *testing.T) {
	var b bytes.Buffer
	eth := pcapgo.NgInterface{Name: "eth", LinkType: layers.LinkTypeEthernet, TimestampResolution: 9}
	w, err := pcapgo.NewNgWriterInterface(&b, eth, pcapgo.NgWriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := w.AddInterface(pcapgo.NgInterface{Name: "raw", LinkType: layers.LinkTypeRaw, TimestampResolution: 9})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1700000000, 0)
	frame := func(n int, fill byte) []byte { return bytes.Repeat([]byte{fill}, n) }
	for i, f := range []struct {
		data  []byte
		wire  int // 0: len(data)
		intf  int
		after time.Duration
	}{
		{frame(60, 1), 0, 0, 0},                      // kept
		{frame(13, 2), 0, 0, time.Millisecond},       // runt
		{frame(5000, 3), 0, 0, 2 * time.Millisecond}, // larger than the UMEM frame
		{frame(1519, 4), 0, 0, 3 * time.Millisecond}, // larger than the MTU (1500 + 18)
		{frame(1518, 5), 0, 0, 4 * time.Millisecond}, // kept: the limit
		{frame(60, 6), 0, raw, 5 * time.Millisecond}, // not Ethernet
		{frame(40, 7), 90, 0, 3 * time.Millisecond},  // truncated, kept; earlier than its predecessor
	} {
		wire := f.wire
		if wire == 0 {
			wire = len(f.data)
		}
		ci := gopacket.CaptureInfo{Timestamp: t0.Add(f.after), CaptureLength: len(f.data), Length: wire, InterfaceIndex: f.intf}
		if err := w.WritePacket(ci, f.data); err != nil {
			t.Fatal(i, err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	tr, err := loadTrace(&b, 4096, 1518)
	if err != nil {
		t.Fatal(err)
	}
	s := tr.sum
	if s.Frames != 7 || s.SkippedRunt != 1 || s.SkippedBig != 1 || s.SkippedMTU != 1 || s.SkippedNotEth != 1 || s.Truncated != 1 {
		t.Errorf("summary %+v", s)
	}
	if len(tr.frames) != 3 || tr.frames[0][0] != 1 || tr.frames[1][0] != 5 || len(tr.frames[2]) != 40 {
		t.Fatalf("kept %d frames", len(tr.frames))
	}
	if want := []int64{0, 4e6, 3e6}; tr.offs[0] != want[0] || tr.offs[1] != want[1] || tr.offs[2] != want[2] || tr.span != 4e6 {
		t.Errorf("offsets %v span %d; want %v, 4e6", tr.offs, tr.span, want)
	}
	if _, err := loadTrace(bytes.NewReader([]byte("not a capture")), 4096, 1518); !errors.Is(err, ErrCapture) {
		t.Errorf("bad capture: %v", err)
	}
}

// TestLiveSummaryOutput pins the text and JSON forms of a summary.
func TestLiveSummaryOutput(t *testing.T) {
	s := LiveSummary{Interface: "veth0", Rate: "original", Frames: 41, CaptureSecs: 1.15, Truncated: 1, Loops: 1,
		Sent: 41, Bytes: 3360, Seconds: 1.150045, PPS: 35.65, BitsPerSecond: 23373,
		Timing: &Timing{MaxNs: 591000, P99Ns: 591000, P50Ns: 43000, Measured: 41}}
	var b bytes.Buffer
	WriteLiveText(&b, s)
	want := `interface          veth0 (queue 0, AF_XDP copy mode)
capture            41 frames over 1.150000 s
skipped            0 larger than the UMEM frame, 0 larger than the MTU, 0 shorter than an Ethernet header, 0 not Ethernet
truncated          1 frames cut short by the capture, sent as captured
rate               original
sent               41 frames, 3360 bytes, 1 loops completed
duration           1.150045 s
achieved           35.6 pps, 23.4k bit/s
timing error       max 0.591 ms, p99 0.591 ms, p50 0.043 ms, 0 of 41 frames over 1 ms
`
	if b.String() != want {
		t.Errorf("text:\n%s\nwant:\n%s", b.String(), want)
	}
	js, _ := json.Marshal(s)
	for _, k := range []string{`"frames_sent":41`, `"pps":35.65`, `"bits_per_second":23373`, `"p99_ns":591000`, `"skipped_larger_than_umem_frame":0`} {
		if !strings.Contains(string(js), k) {
			t.Errorf("json %s lacks %s", js, k)
		}
	}
}

// countPort takes every frame and allocates nothing.
type countPort struct {
	clk   *fakeClock
	n     int
	bytes int
}

func (p *countPort) send(frames [][]byte) (int, error) {
	p.clk.t += 1000
	p.n += len(frames)
	for _, f := range frames {
		p.bytes += len(f)
	}
	return len(frames), nil
}
func (p *countPort) drain(time.Duration) uint64 { return 0 }
func (p *countPort) txInvalid() uint64          { return 0 }

// TestLiveNoAllocPerFrame: sending allocates nothing per frame or batch,
// paced or not: a replay of 4,100 frames allocates what one of 41 does
// (the summary's Timing).
func TestLiveNoAllocPerFrame(t *testing.T) {
	tr := goldenTrace(t)
	for _, rate := range []Rate{{Mode: RateMax}, {Mode: RateFixed, PPS: 1e5}, {Mode: RateOriginal}} {
		allocs := func(loops int) float64 {
			return testing.AllocsPerRun(5, func() {
				clk := &fakeClock{}
				r := &replayer{tr: tr, opts: LiveOptions{Rate: rate, Loops: loops}, port: &countPort{clk: clk}, clk: clk,
					batch: make([][]byte, 0, maxBatch), due: make([]int64, 0, maxBatch)}
				if sum, err := r.run(context.Background()); err != nil || sum.Sent != uint64(41*loops) {
					t.Fatal(err, sum.Sent)
				}
			})
		}
		one, hundred := allocs(1), allocs(100)
		if hundred != one {
			t.Errorf("rate %v: %v allocations for 41 frames, %v for 4100", rate, one, hundred)
		}
	}
}

// FuzzLoadTrace feeds hostile captures to the live replay's loader: an
// error wrapping ErrCapture or a trace in which every frame read is kept
// or counted once as skipped, never a panic.
func FuzzLoadTrace(f *testing.F) {
	in, err := os.ReadFile("testdata/in.pcap")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(in)
	f.Add(writePcapng(f, goldenFrames(f)))
	f.Add([]byte{0x0a, 0x0d, 0x0d, 0x0a}) // pcapng magic alone
	f.Add(in[:24+16+10])                  // one record cut short
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := loadTrace(bytes.NewReader(data), 100, 80)
		if err != nil {
			if !errors.Is(err, ErrCapture) {
				t.Fatalf("error not about the capture: %v", err)
			}
			return
		}
		s := tr.sum
		if kept := uint64(len(tr.frames)); kept+s.SkippedBig+s.SkippedMTU+s.SkippedRunt+s.SkippedNotEth != s.Frames || len(tr.offs) != len(tr.frames) {
			t.Fatalf("%d frames read, %d kept, skipped %+v", s.Frames, kept, s)
		}
		for i, fr := range tr.frames {
			if len(fr) < 14 || len(fr) > 80 || tr.offs[i] > tr.span {
				t.Fatalf("frame %d: %d bytes at offset %d (span %d)", i, len(fr), tr.offs[i], tr.span)
			}
		}
	})
}
