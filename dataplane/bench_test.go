package dataplane

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/fib"
)

// The benchmark network: 1M delegated /56s out of 2001:db8:1000::/36,
// alternately on the point-to-point downlink A and the multi-access
// downlink B, each also an allowed source on its port, and the default
// route to the gateway on U.
const benchRoutes = 1_000_000

type benchNet struct {
	snap     *fib.Snapshot
	prefixes [2][]uint64 // top 64 bits of the /56s on A and on B
}

var (
	benchOnce sync.Once
	benchFIB  benchNet
)

func benchBuild(b *testing.B) *benchNet {
	benchOnce.Do(func() {
		start := time.Now()
		r := rand.New(rand.NewPCG(1, 2))
		tb := fib.NewTable()
		perm := r.Perm(1 << 20)
		for i, x := range perm[:benchRoutes] {
			hi := uint64(0x20010db8_10000000) | uint64(x)<<8
			var a [16]byte
			binary.BigEndian.PutUint64(a[:], hi)
			p := netip.PrefixFrom(netip.AddrFrom16(a), 56)
			port, mac := portA, [6]byte{0x0c, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
			if i%2 == 1 {
				port = portB
			}
			if err := tb.AddRoute(fib.Route{Prefix: p, Port: port, MAC: mac}); err != nil {
				b.Fatal(err)
			}
			if err := tb.AddSource(port, p); err != nil {
				b.Fatal(err)
			}
			benchFIB.prefixes[i%2] = append(benchFIB.prefixes[i%2], hi)
		}
		if err := tb.SetDefault(&fib.Route{Port: portU, MAC: macGW}); err != nil {
			b.Fatal(err)
		}
		benchFIB.snap = tb.Publish()
		b.Logf("1M routes and sources built in %v", time.Since(start).Round(time.Millisecond))
	})
	return &benchFIB
}

// benchFrame is a frame as a worker gets it: in a 2 KiB UMEM-like slot.
type benchFrame struct {
	in  fib.PortID
	buf []byte
}

// benchFrames builds n 110-byte UDP frames of one kind in a slab of 2 KiB
// slots: down (uplink to a random client), up (client to a random
// Internet address), spoofed (on A from a source of B), loop (on A to
// another prefix of A), cross (a client on A to a client on B: every step
// of the path, the source check and a route found included).
func benchFrames(b *testing.B, bn *benchNet, kind string, n int) []benchFrame {
	return benchFramesPayload(b, bn, kind, n, 20)
}

// benchFramesPayload is benchFrames with payload bytes of UDP data.
func benchFramesPayload(b *testing.B, bn *benchNet, kind string, n, payload int) []benchFrame {
	r := rand.New(rand.NewPCG(3, uint64(n)))
	in := func(side int) uint64 { // a random address inside a random prefix of A (0) or B (1)
		ps := bn.prefixes[side]
		return ps[r.IntN(len(ps))] | r.Uint64N(256)
	}
	foreign := func() uint64 { return 0x2a00_0000_0000_0000 | r.Uint64()>>12 }
	tp := fromU("2001:db8:a:100::1")
	tp.payload = payload
	tmpl := tp.frame(b) // 54 + 8 + payload bytes
	slab := make([]byte, n*benchStride)
	frames := make([]benchFrame, n)
	for i := range frames {
		buf := slab[i*benchStride : i*benchStride+len(tmpl) : (i+1)*benchStride]
		copy(buf, tmpl)
		var src, dst uint64
		port, mac := portU, macGW
		switch kind {
		case "down":
			src, dst = foreign(), in(i%2)
		case "up":
			side := i % 2
			port, mac = []fib.PortID{portA, portB}[side], [6]byte{0x0c, 0, 0, 0, 0, 1}
			src, dst = in(side), foreign()
		case "spoofed":
			port, src, dst = portA, in(1), foreign()
		case "loop":
			port, src, dst = portA, in(0), in(0)
		case "cross":
			port, mac, src, dst = portA, [6]byte{0x0c, 0, 0, 0, 0, 1}, in(0), in(1)
		}
		copy(buf[offSrcMAC:], mac[:])
		binary.BigEndian.PutUint64(buf[offSrc:], src)
		binary.BigEndian.PutUint64(buf[offSrc+8:], r.Uint64())
		binary.BigEndian.PutUint64(buf[offDst:], dst)
		binary.BigEndian.PutUint64(buf[offDst+8:], r.Uint64())
		frames[i] = benchFrame{port, buf}
	}
	return frames
}

var benchWant = map[string]struct {
	v Verdict
	r Reason
}{
	"down": {Forward, Forwarded}, "up": {Forward, Forwarded},
	"spoofed": {Drop, Spoofed}, "loop": {Drop, Loop}, "cross": {Forward, Forwarded},
}

var sinkN int

// BenchmarkForward is the whole per-packet path with 1M bindings in the
// FIB: parse, source check, route lookup, loop check, MAC and hop limit
// rewrite, counting, and a Flush every 64 frames as a worker does per
// batch. down: uplink to a client; up: client to the Internet (default
// route); spoofed: a client using another port's source; loop: a client
// sending to another prefix of its own point-to-point port (drop); cross:
// a client sending to a client on another downlink (forwarded). Each
// case cycles through 4096 frames with random addresses (the FIB does not
// stay in cache); "-hot" cycles through 16.
func BenchmarkForward(b *testing.B) {
	bn := benchBuild(b)
	for _, kind := range []string{"down", "up", "spoofed", "loop", "cross"} {
		for _, v := range []struct {
			name string
			n    int
		}{{kind + "/1M", 4096}, {kind + "-hot/1M", 16}} {
			b.Run(v.name, func(b *testing.B) {
				frames := benchFrames(b, bn, kind, v.n)
				f := newForwarder(b, testConfig(false))
				snap := bn.snap
				for _, fr := range frames {
					fr.buf[offHopLimit] = 64
					if got, r, _, _ := f.Forward(snap, fr.in, fr.buf, 0); got != benchWant[kind].v || r != benchWant[kind].r {
						b.Fatalf("%s: %v %v", kind, got, r)
					}
				}
				mask := v.n - 1
				n := 0
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					fr := &frames[i&mask]
					fr.buf[offHopLimit] = 64
					_, _, _, m := f.Forward(snap, fr.in, fr.buf, 0)
					n += m
					if i&63 == 63 {
						f.Flush()
					}
				}
				sinkN = n
			})
		}
	}
}

// BenchmarkForwardBatch is BenchmarkForward through ForwardBatch, in
// batches of 64 frames from one port as a worker receives them; ns/op is
// per frame. Each case cycles through 4096 frames per port (-hot: 64).
func BenchmarkForwardBatch(b *testing.B) {
	bn := benchBuild(b)
	for _, kind := range []string{"down", "up", "spoofed", "loop", "cross"} {
		for _, v := range []struct {
			name string
			n    int
		}{{kind + "/1M", 8192}, {kind + "-hot/1M", 128}} {
			b.Run(v.name, func(b *testing.B) {
				// The frames by ingress port ("up" alternates A and B).
				byPort := map[fib.PortID][][]byte{}
				var ports []fib.PortID
				for _, fr := range benchFrames(b, bn, kind, v.n) {
					if byPort[fr.in] == nil {
						ports = append(ports, fr.in)
					}
					byPort[fr.in] = append(byPort[fr.in], fr.buf)
				}
				f := newForwarder(b, testConfig(false))
				snap := bn.snap
				res := make([]Result, benchBatch)
				for _, in := range ports {
					frames := byPort[in]
					for i := 0; i < len(frames); i += benchBatch {
						batch := frames[i : i+benchBatch]
						for _, fr := range batch {
							fr[offHopLimit] = 64
						}
						f.ForwardBatch(snap, in, batch, 0, res)
						for _, r := range res {
							if r.Verdict != benchWant[kind].v || r.Reason != benchWant[kind].r {
								b.Fatalf("%s: %v %v", kind, r.Verdict, r.Reason)
							}
						}
					}
				}
				n, k := 0, 0
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					if i%benchBatch != 0 {
						continue
					}
					in := ports[k%len(ports)]
					frames := byPort[in]
					j := (k / len(ports) * benchBatch) % len(frames)
					k++
					batch := frames[j : j+benchBatch]
					for _, fr := range batch {
						fr[offHopLimit] = 64
					}
					f.ForwardBatch(snap, in, batch, 0, res)
					for _, r := range res {
						n += r.Len
					}
					f.Flush()
				}
				sinkN = n
			})
		}
	}
}

const benchBatch = 64 // frames per batch, as a worker takes them

// BenchmarkParse is the header check alone, over 16 frames.
func BenchmarkParse(b *testing.B) {
	var frames [16][]byte
	for i := range frames {
		frames[i] = fromU("2001:db8:a:100::1").frame(b)
	}
	b.ReportAllocs()
	var bad int
	for i := 0; b.Loop(); i++ {
		if parse(frames[i&15]) != Forwarded {
			bad++
		}
	}
	sinkN = bad
}

// BenchmarkFIBParts is the FIB's share of BenchmarkForward: the same 4096
// (or 16) frames, only the lookups Forward makes for them. route: the
// destination lookup of "down"; source: the source check of "up".
func BenchmarkFIBParts(b *testing.B) {
	bn := benchBuild(b)
	for _, n := range []int{4096, 16} {
		name := "/1M"
		if n == 16 {
			name = "-hot/1M"
		}
		b.Run("route"+name, func(b *testing.B) {
			frames := benchFrames(b, bn, "down", n)
			snap, mask, hits := bn.snap, n-1, 0
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if rt, ok := snap.LookupBytes((*[16]byte)(frames[i&mask].buf[offDst:])); ok {
					hits += int(rt.Port)
				}
			}
			sinkN = hits
		})
		b.Run("source"+name, func(b *testing.B) {
			frames := benchFrames(b, bn, "up", n)
			snap, mask, hits := bn.snap, n-1, 0
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				fr := &frames[i&mask]
				if snap.SourceAllowedBytes(fr.in, (*[16]byte)(fr.buf[offSrc:])) {
					hits++
				}
			}
			sinkN = hits
		})
	}
}

const benchStride = 2048 // bytes per frame slot, as in a UMEM

// BenchmarkChecksum is BenchmarkForwardBatch's "up" case (clients on A
// and B to the Internet, 1M bindings) with checksum completion off and
// on, for 82-byte and 1514-byte frames: off (CompleteChecksums unset);
// on-complete (set, the frames' UDP checksums complete, as from a NIC:
// only the pseudo-header sum is added); on-partial (set, every checksum
// partial, as from a veth host: the whole UDP packet is summed and the
// checksum stored). ns/op is per frame; every case writes the hop limit
// and the checksum field back before each batch. /1M cycles through
// 8192 frames, -hot through 128.
func BenchmarkChecksum(b *testing.B) {
	bn := benchBuild(b)
	for _, size := range []struct {
		name    string
		payload int
	}{{"82B", 20}, {"1514B", 1452}} {
		for _, v := range []struct {
			name string
			n    int
		}{{"/1M", 8192}, {"-hot/1M", 128}} {
			for _, c := range []struct {
				name          string
				on, isPartial bool
			}{{"off", false, false}, {"on-complete", true, false}, {"on-partial", true, true}} {
				b.Run(size.name+"/"+c.name+v.name, func(b *testing.B) {
					benchChecksum(b, bn, size.payload, v.n, c.on, c.isPartial)
				})
			}
		}
	}
}

func benchChecksum(b *testing.B, bn *benchNet, payload, n int, on, isPartial bool) {
	cfg := testConfig(false)
	for i := range cfg.Ports {
		cfg.Ports[i].CompleteChecksums = on
	}
	f := newForwarder(b, cfg)
	const at = offL4 + offUDPCsum
	byPort := map[fib.PortID][][]byte{}
	sums := map[fib.PortID][]uint16{} // the checksum field to write back
	var ports []fib.PortID
	for _, fr := range benchFramesPayload(b, bn, "up", n, payload) {
		// The frame as a host sends it: partial, or complete.
		p := partial(fr.buf)
		want := binary.BigEndian.Uint16(p[at:])
		if !isPartial {
			if !CompleteChecksum(p) {
				b.Fatal("not completed")
			}
			want = binary.BigEndian.Uint16(p[at:])
		}
		if byPort[fr.in] == nil {
			ports = append(ports, fr.in)
		}
		byPort[fr.in] = append(byPort[fr.in], fr.buf)
		sums[fr.in] = append(sums[fr.in], want)
	}
	snap := bn.snap
	res := make([]Result, benchBatch)
	reset := func(in fib.PortID, j int) [][]byte {
		batch, sum := byPort[in][j:j+benchBatch], sums[in][j:j+benchBatch]
		for i, fr := range batch {
			fr[offHopLimit] = 64
			binary.BigEndian.PutUint16(fr[at:], sum[i])
		}
		return batch
	}
	// Once through: every frame forwarded, completed when it should be,
	// and its checksum then correct (or left as it was).
	for _, in := range ports {
		for j := 0; j < len(byPort[in]); j += benchBatch {
			batch := reset(in, j)
			before := binary.BigEndian.Uint16(batch[0][at:])
			f.ForwardBatch(snap, in, batch, 0, res)
			for i, r := range res {
				if r.Verdict != Forward {
					b.Fatalf("%v %v", r.Verdict, r.Reason)
				}
				fr := batch[i]
				if ok := refSum(fr[offSrc:offSrc+16], fr[offDst:offDst+16], protoUDP, fr[offL4:offIP6+ipLen(fr)]) == 0xffff; ok != (on || !isPartial) {
					b.Fatalf("checksum %#04x (was %#04x) verifies: %v", binary.BigEndian.Uint16(fr[at:]), before, ok)
				}
			}
		}
	}
	f.Flush()
	var completed uint64
	for _, in := range ports {
		st, _ := f.Counters(in)
		completed += st.ByReason[ChecksumCompleted]
	}
	if want := map[bool]uint64{true: uint64(n)}[on && isPartial]; completed != want {
		b.Fatalf("%d checksums completed, want %d", completed, want)
	}
	sink, k := 0, 0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%benchBatch != 0 {
			continue
		}
		in := ports[k%len(ports)]
		j := (k / len(ports) * benchBatch) % len(byPort[in])
		k++
		f.ForwardBatch(snap, in, reset(in, j), 0, res)
		for _, r := range res {
			sink += r.Len
		}
		f.Flush()
	}
	sinkN = sink
}
