package bench

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/pdrelay/pdrelay/bench/lab"
	"github.com/pdrelay/pdrelay/control/replay"
)

// BenchmarkReplayVsTcpreplay compares `pdrelay replay --interface` with
// tcpreplay on the same veth (the lab's relay port dl0; its peer, client
// 0's eth0, drops the frames: they are addressed to another host), in the
// same run, alternating the two, and reports medians:
//
//   - rate: 64-byte frames (10,000 in the capture, looped) at `--rate
//     max` against `tcpreplay --topspeed`, with and without tcpreplay's
//     --preload-pcap (pdrelay always reads the capture into memory); each
//     tool's own figure, and the frames the peer counted;
//
//   - timing: a capture with known gaps (0.1 to 10 ms) at the original
//     timing, against tcpreplay's default timing; the peer stamps each
//     frame on arrival (SO_TIMESTAMPNS) and the error of frame i is
//     |(arrival_i - arrival_0) - (capture_i - capture_0)|.
//
//     go test -run '^$' -bench ReplayVsTcpreplay -benchtime 1x ./bench/
func BenchmarkReplayVsTcpreplay(b *testing.B) {
	lab.Require(b, "tcpreplay")
	dir := b.TempDir()
	bin := buildPdrelay(b)
	// go test cuts a benchmark's log after a few lines: the figures go
	// to stdout.
	logf := func(format string, args ...any) { fmt.Printf("replay-bench: "+format+"\n", args...) }
	rounds := envInt("REPLAY_ROUNDS", 5)
	loops := envInt("REPLAY_LOOPS", 50)
	l := lab.NewT(b, lab.Config{Clients: 1, Tag: "lr"})
	dl := l.Downlinks[0]
	rateCap := filepath.Join(dir, "rate.pcap")
	writeReplayCapture(b, rateCap, 10000, func(int) time.Duration { return time.Microsecond })
	gaps := []time.Duration{100 * time.Microsecond, 500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond}
	const timedFrames = 600
	timedCap := filepath.Join(dir, "timed.pcap")
	offsets := writeReplayCapture(b, timedCap, timedFrames, func(i int) time.Duration { return gaps[i%len(gaps)] })

	rxCount := func() uint64 {
		out, err := l.Run(dl.PeerNS, "cat", "/sys/class/net/"+dl.PeerName+"/statistics/rx_packets")
		if err != nil {
			b.Fatal(err)
		}
		n, err := strconv.ParseUint(strings.TrimSpace(out), 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
	total := uint64(10000 * loops)
	rated := regexp.MustCompile(`Rated: [0-9.]+ Bps, [0-9.]+ Mbps, ([0-9.]+) pps`)
	failed := regexp.MustCompile(`Failed packets:\s+([0-9]+)`)
	tcpreplay := func(extra ...string) (pps float64, peer uint64) {
		before := rxCount()
		args := append([]string{"tcpreplay", "-i", dl.Name, "--topspeed", "--loop", strconv.Itoa(loops)}, extra...)
		out, err := l.Run(l.RelayNS, append(args, rateCap)...)
		if err != nil {
			b.Fatal(err)
		}
		m := rated.FindStringSubmatch(out)
		f := failed.FindStringSubmatch(out)
		if m == nil || f == nil || f[1] != "0" {
			b.Fatalf("tcpreplay output:\n%s", out)
		}
		pps, _ = strconv.ParseFloat(m[1], 64)
		return pps, rxCount() - before
	}
	pdrelay := func() (pps float64, peer uint64) {
		before := rxCount()
		out, err := l.Exec(l.RelayNS, bin, "replay", "--pcap", rateCap, "--interface", dl.Name, "--rate", "max", "--loop", strconv.Itoa(loops), "--json").Output()
		if err != nil {
			b.Fatalf("pdrelay replay: %v", err)
		}
		var s replay.LiveSummary
		if err := json.Unmarshal(out, &s); err != nil || s.Sent != total {
			b.Fatalf("pdrelay replay summary %s: %v", out, err)
		}
		return s.PPS, rxCount() - before
	}

	b.ResetTimer()
	var pdPPS, tcPPS, tcKPPS []float64
	for r := 0; r < rounds; r++ {
		p, pn := pdrelay()
		t, tn := tcpreplay()
		k, kn := tcpreplay("--preload-pcap")
		logf("rate round %d: pdrelay %.0f pps (the peer counted %d for %d sent), tcpreplay %.0f pps (%d), tcpreplay -K %.0f pps (%d)", r+1, p, pn, total, t, tn, k, kn)
		pdPPS, tcPPS, tcKPPS = append(pdPPS, p), append(tcPPS, t), append(tcKPPS, k)
	}
	mp, mt, mk := medianOf(pdPPS), medianOf(tcPPS), medianOf(tcKPPS)
	logf("rate medians over %d rounds: pdrelay --rate max %.0f pps, tcpreplay --topspeed %.0f pps, --topspeed --preload-pcap %.0f pps; pdrelay/tcpreplay %.2f, pdrelay/tcpreplay -K %.2f",
		rounds, mp, mt, mk, mp/mt, mp/mk)
	b.ReportMetric(mp, "pdrelay-pps")
	b.ReportMetric(mt, "tcpreplay-pps")
	b.ReportMetric(mk, "tcpreplay-K-pps")

	// Timing: the peer stamps every frame; the capture's frames carry
	// their index.
	var peer *lab.StampedConn
	if err := l.InNS(dl.PeerNS, func() (err error) { peer, err = lab.ListenStamped(dl.PeerName, 1<<22); return err }); err != nil {
		b.Fatal(err)
	}
	defer peer.Close()
	timed := func(name string, args ...string) (timingResult, string) {
		var mu sync.Mutex
		at := make([]time.Time, timedFrames)
		seen := 0
		stop := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			for {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				if err := peer.Collect(50*time.Millisecond, func(f []byte, t time.Time) {
					if i, ok := replayFrameIndex(f); ok && i < timedFrames {
						mu.Lock()
						if at[i].IsZero() {
							seen++
						}
						at[i] = t
						mu.Unlock()
					}
				}); err != nil {
					done <- err
					return
				}
			}
		}()
		out, err := l.Run(l.RelayNS, args...)
		time.Sleep(100 * time.Millisecond)
		close(stop)
		if cerr := <-done; cerr != nil {
			b.Fatal(cerr)
		}
		if err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if seen != timedFrames {
			b.Fatalf("%s: the peer saw %d of %d frames\n%s", name, seen, timedFrames, out)
		}
		errs := make([]time.Duration, timedFrames)
		for i := range errs {
			e := at[i].Sub(at[0]) - offsets[i]
			errs[i] = max(e, -e)
		}
		slices.Sort(errs)
		return timingResult{max: errs[len(errs)-1], p99: errs[len(errs)*99/100-1], p50: errs[len(errs)/2],
			over1ms: len(errs) - sortIndex(errs, time.Millisecond)}, out
	}
	self := func(out string) string {
		var s replay.LiveSummary
		if err := json.Unmarshal([]byte(out), &s); err != nil || s.Timing == nil {
			b.Fatalf("pdrelay replay summary %s: %v", out, err)
		}
		return fmt.Sprintf("max %.3f ms, p99 %.3f ms", float64(s.Timing.MaxNs)/1e6, float64(s.Timing.P99Ns)/1e6)
	}
	var pdT, pdRT, tcT []timingResult
	for r := 0; r < max(3, rounds/2); r++ {
		p, pout := timed("pdrelay", bin, "replay", "--pcap", timedCap, "--interface", dl.Name, "--json")
		rt, rtout := timed("pdrelay --realtime", bin, "replay", "--pcap", timedCap, "--interface", dl.Name, "--realtime", "--json")
		t, _ := timed("tcpreplay", "tcpreplay", "-i", dl.Name, timedCap)
		logf("timing round %d: pdrelay %v (its own figure: %s); pdrelay --realtime %v (its own: %s); tcpreplay %v", r+1, p, self(pout), rt, self(rtout), t)
		pdT, pdRT, tcT = append(pdT, p), append(pdRT, rt), append(tcT, t)
	}
	logf("timing medians: pdrelay --rate original %v; with --realtime %v; tcpreplay (default timing) %v", medianTiming(pdT), medianTiming(pdRT), medianTiming(tcT))
}

type timingResult struct {
	max, p99, p50 time.Duration
	over1ms       int
}

func (t timingResult) String() string {
	return fmt.Sprintf("max %.3f ms, p99 %.3f ms, p50 %.3f ms, %d frames over 1 ms",
		t.max.Seconds()*1e3, t.p99.Seconds()*1e3, t.p50.Seconds()*1e3, t.over1ms)
}

// medianTiming is the median of each figure separately.
func medianTiming(ts []timingResult) timingResult {
	f := func(get func(timingResult) float64) float64 {
		var xs []float64
		for _, t := range ts {
			xs = append(xs, get(t))
		}
		return medianOf(xs)
	}
	return timingResult{
		max:     time.Duration(f(func(t timingResult) float64 { return float64(t.max) })),
		p99:     time.Duration(f(func(t timingResult) float64 { return float64(t.p99) })),
		p50:     time.Duration(f(func(t timingResult) float64 { return float64(t.p50) })),
		over1ms: int(f(func(t timingResult) float64 { return float64(t.over1ms) })),
	}
}

func sortIndex(s []time.Duration, v time.Duration) int {
	i, _ := slices.BinarySearch(s, v+1)
	return i
}

func medianOf(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// replayMAC is the destination of the benchmark's frames: no host on the
// link has it, so the peer's stack drops them at once.
var replayMAC = [6]byte{0x02, 0, 0, 0, 0x99, 0x99}

// writeReplayCapture writes n 64-byte IPv6/UDP frames to path, frame i
// carrying i in its payload and stamped gap(i) after frame i-1, and
// returns each frame's offset from the first.
func writeReplayCapture(b *testing.B, path string, n int, gap func(int) time.Duration) []time.Duration {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := pcapgo.NewWriterNanos(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		b.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var off time.Duration
	offs := make([]time.Duration, n)
	for i := 0; i < n; i++ {
		if i > 0 {
			off += gap(i)
		}
		offs[i] = off
		fr := replayFrame(i)
		ci := gopacket.CaptureInfo{Timestamp: t0.Add(off), CaptureLength: len(fr), Length: len(fr)}
		if err := w.WritePacket(ci, fr); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return offs
}

// replayFrame is frame i: Ethernet, IPv6 2001:db8::1 → 2001:db8::2, UDP
// 9 → 9 with 2 bytes of payload (64 bytes in all), the index in the
// flow label and the payload.
func replayFrame(i int) []byte {
	f := make([]byte, 64)
	copy(f[0:6], replayMAC[:])
	copy(f[6:12], []byte{0x02, 0, 0, 0, 0x99, 0x01})
	binary.BigEndian.PutUint16(f[12:], 0x86dd)
	ip := f[14:]
	binary.BigEndian.PutUint32(ip[0:], 6<<28|uint32(i)&0xfffff) // version, flow label
	binary.BigEndian.PutUint16(ip[4:], 10)                      // payload length
	ip[6], ip[7] = 17, 64                                       // UDP, hop limit
	ip[8], ip[9], ip[23] = 0x20, 0x01, 1
	ip[10], ip[11] = 0x0d, 0xb8
	ip[24], ip[25], ip[39] = 0x20, 0x01, 2
	ip[26], ip[27] = 0x0d, 0xb8
	udp := ip[40:]
	binary.BigEndian.PutUint16(udp[0:], 9)
	binary.BigEndian.PutUint16(udp[2:], 9)
	binary.BigEndian.PutUint16(udp[4:], 10)
	binary.BigEndian.PutUint16(udp[8:], uint16(i))
	return f
}

// replayFrameIndex reads the index back from a frame of replayFrame.
func replayFrameIndex(f []byte) (int, bool) {
	if len(f) != 64 || [6]byte(f[0:6]) != replayMAC {
		return 0, false
	}
	return int(binary.BigEndian.Uint32(f[14:]) & 0xfffff), true
}
