package dataplane

import (
	"github.com/pdrelay/pdrelay/internal/csum"

	"bytes"
	"encoding/binary"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/pdrelay/pdrelay/fib"
)

// fuzzPorts are the ports FuzzForward sends frames in on: both kinds of
// uplink and downlink, and an unconfigured one.
var fuzzPorts = []fib.PortID{portU, portU2, portA, portB, portBad}

// FuzzForward feeds arbitrary frames to Forward on every kind of port, with
// arbitrary room in the buffer: it must not panic, must return n ≤
// cap(frame), must leave the frame alone unless it forwards or answers it,
// and must build only well-formed ICMPv6 errors. A second pair of
// Forwarders completes checksums on every port (CompleteChecksums): it
// must give the same answers and the same frames but for the checksum
// field of a UDP or TCP packet whose checksum was partial, which then
// verifies (see checkCompletion).
func FuzzForward(f *testing.F) {
	for _, c := range forwardCases {
		f.Add(c.pkt.frame(f), uint8(0), uint16(0))
		f.Add(partial(c.pkt.frame(f)), uint8(1), uint16(0))
	}
	for _, c := range csumCases {
		f.Add(c.frame(), uint8(2), uint16(0)) // arrive on A: forwarded up
	}
	f.Add(tcpFromA.frame(f), uint8(2), uint16(0))
	f.Add(loopA(10).frame(f), uint8(2), uint16(100))
	f.Add(loopA(1500).frame(f), uint8(2), uint16(600))
	f.Add(loopB(0).frame(f), uint8(3), uint16(8))
	f.Add(fromU("2001:db8:b:100::1").frame(f), uint8(0), uint16(0))
	f.Add([]byte{}, uint8(1), uint16(0))
	snap := testSnapshot(f, true)
	fw, fwb := newForwarder(f, testConfig(true)), newForwarder(f, testConfig(true))
	ccfg := testConfig(true)
	for i := range ccfg.Ports {
		ccfg.Ports[i].CompleteChecksums = true
	}
	fwc, fwcb := newForwarder(f, ccfg), newForwarder(f, ccfg)
	var res [1]Result
	var now int64
	f.Fuzz(func(t *testing.T, data []byte, port uint8, room uint16) {
		const guard = 64
		room %= 2048
		buf := make([]byte, len(data)+int(room)+guard)
		for i := range buf {
			buf[i] = 0xa5
		}
		copy(buf, data)
		frame := buf[: len(data) : len(data)+int(room)]
		for i := range fuzzPorts {
			in := fuzzPorts[(int(port)+i)%len(fuzzPorts)]
			copy(frame, data)
			now += int64(port) * 1e6
			v, r, out, n := fw.Forward(snap, in, frame, now)
			// ForwardBatch must answer and rewrite the same.
			bbuf := make([]byte, len(data), cap(frame))
			copy(bbuf, data)
			fwb.ForwardBatch(snap, in, [][]byte{bbuf}, now, res[:])
			if want := (Result{v, r, out, n}); res[0] != want || !bytes.Equal(bbuf[:max(n, len(data))], buf[:max(n, len(data))]) {
				t.Fatalf("port %d: ForwardBatch %+v, Forward %+v, or frames differ", in, res[0], want)
			}
			// With completion: the same answer from Forward and
			// ForwardBatch, and the same frame but for a completed
			// checksum.
			cbuf := make([]byte, len(data), cap(frame))
			copy(cbuf, data)
			if cv, cr, cout, cn := fwc.Forward(snap, in, cbuf, now); (Result{cv, cr, cout, cn}) != (Result{v, r, out, n}) {
				t.Fatalf("port %d: with completion %v %v %d %d, without %v %v %d %d", in, cv, cr, cout, cn, v, r, out, n)
			}
			cbbuf := make([]byte, len(data), cap(frame))
			copy(cbbuf, data)
			fwcb.ForwardBatch(snap, in, [][]byte{cbbuf}, now, res[:])
			if want := (Result{v, r, out, n}); res[0] != want || !bytes.Equal(cbbuf[:max(n, len(data))], cbuf[:max(n, len(data))]) {
				t.Fatalf("port %d, completion: ForwardBatch %+v, Forward %+v, or frames differ", in, res[0], want)
			}
			checkCompletion(t, v, buf[:max(n, len(data))], cbuf[:max(n, len(data))])
			if n < 0 || n > cap(frame) {
				t.Fatalf("port %d: n = %d, cap %d", in, n, cap(frame))
			}
			for j := len(data) + int(room); j < len(buf); j++ {
				if buf[j] != 0xa5 {
					t.Fatalf("byte %d beyond cap written", j)
				}
			}
			switch v {
			case Drop:
				if n != 0 || !bytes.Equal(frame, data) {
					t.Fatalf("drop %v: n = %d or frame changed", r, n)
				}
			case ToKernel:
				if n != len(data) || !bytes.Equal(frame, data) {
					t.Fatalf("to kernel %v: n = %d or frame changed", r, n)
				}
			case Forward:
				if n != len(data) || r != Forwarded || out == 0 {
					t.Fatalf("forward: n = %d of %d, %v, port %d", n, len(data), r, out)
				}
			case ICMPReply:
				if r != Loop || n < offICMPQuote || n-ethLen > minMTU {
					t.Fatalf("icmp: %v n = %d", r, n)
				}
				msg := buf[:n]
				if parse(msg) != Forwarded || offL4+int(msg[offPayLen])<<8+int(msg[offPayLen+1]) != n ||
					csum.Fold(csum.Sum(msg[offL4:])+csum.Sum(msg[offSrc:offL4])+uint64(n-offL4)+protoICMPv6) != 0xffff {
					t.Fatalf("icmp: bad message %x", msg)
				}
			default:
				t.Fatalf("verdict %v", v)
			}
		}
	})
}

// checkCompletion checks the frame a Forwarder with checksum completion
// made (done) against the one a Forwarder without it made (plain) from the
// same input, with the verdict v:
//
//   - Unless forwarded, they are the same.
//   - Forwarded, they differ at most in the checksum field of the UDP or
//     TCP packet gopacket finds in done, which was partial in plain (it
//     held the pseudo-header sum) and verifies in done (refSum, with the
//     final destination of a routing header with segments left).
//   - A forwarded UDP or TCP packet right after the IPv6 header (UDP: with
//     the payload's length; TCP: with a data offset that fits), whose
//     checksum was partial and did not verify, comes out completed.
func checkCompletion(t *testing.T, v Verdict, plain, done []byte) {
	t.Helper()
	diff := -1
	for i := range plain {
		if plain[i] != done[i] {
			if diff >= 0 && i > diff+1 {
				t.Fatalf("completion changed bytes %d and %d:\n%x\n%x", diff, i, plain, done)
			}
			if diff < 0 {
				diff = i
			}
		}
	}
	if v != Forward {
		if diff >= 0 {
			t.Fatalf("verdict %v, but completion changed byte %d", v, diff)
		}
		return
	}
	if diff < 0 {
		// Unchanged: then it was not a simple partial packet that fails to
		// verify.
		nh, n := plain[offNextHdr], ipLen(plain)-ip6Len
		at := map[uint8]int{17: 6, 6: 16}[nh]
		if at == 0 || n < 8 || nh == 17 && int(binary.BigEndian.Uint16(plain[offL4+4:])) != n ||
			nh == 6 && (n < 20 || plain[offL4+12]>>4 < 5 || int(plain[offL4+12]>>4)*4 > n) {
			return
		}
		l4 := plain[offL4 : offL4+n]
		src, dst := plain[offSrc:offSrc+16], plain[offDst:offDst+16]
		if binary.BigEndian.Uint16(l4[at:]) == refSum(src, dst, nh, make([]byte, n)) && refSum(src, dst, nh, l4) != 0xffff {
			t.Fatalf("partial checksum not completed: %x", plain)
		}
		return
	}
	proto, field, l4, final, ok := gopacketL4(done)
	if !ok {
		proto, field, l4, final, ok = refL4(done)
	}
	if !ok {
		t.Fatalf("completion changed byte %d of a frame with no UDP or TCP packet:\n%x", diff, done)
	}
	if diff != field && diff != field+1 {
		t.Fatalf("completion changed byte %d, the checksum is at %d:\n%x\n%x", diff, field, plain, done)
	}
	src := done[offSrc : offSrc+16]
	if p := refSum(src, final, proto, make([]byte, len(l4))); binary.BigEndian.Uint16(plain[field:]) != p {
		t.Fatalf("completed a checksum that was not partial (%#04x, P %#04x):\n%x", binary.BigEndian.Uint16(plain[field:]), p, plain)
	}
	if refSum(src, final, proto, l4) != 0xffff {
		t.Fatalf("completed checksum does not verify:\n%x", done)
	}
}

// gopacketL4 finds the UDP or TCP packet in fr as gopacket decodes it: its
// protocol, the offset of its checksum field in fr, its bytes, and the
// pseudo-header's destination (that of a routing header with segments
// left, or the IPv6 destination). ok is false when gopacket finds none.
func gopacketL4(fr []byte) (proto uint8, field int, l4, final []byte, ok bool) {
	pk := gopacket.NewPacket(fr, layers.LayerTypeEthernet, gopacket.NoCopy)
	final = fr[offDst : offDst+16]
	for _, l := range pk.Layers() {
		var at int
		switch l := l.(type) {
		case *layers.IPv6Routing:
			if l.SegmentsLeft > 0 && len(l.Contents) >= 24 {
				final = l.Contents[8:24]
			}
			continue
		case *layers.UDP:
			proto, at, l4 = 17, 6, append(bytes.Clone(l.Contents), l.Payload...)
		case *layers.TCP:
			proto, at, l4 = 6, 16, append(bytes.Clone(l.Contents), l.Payload...)
		default:
			continue
		}
		if len(l4) < at+2 {
			return 0, 0, nil, nil, false // gopacket could not decode it: an empty layer
		}
		// gopacket.NoCopy: the layer is a slice of fr.
		return proto, cap(fr) - cap(l.LayerContents()) + at, l4, final, true
	}
	return 0, 0, nil, nil, false
}

// refL4 is gopacketL4 for the packets gopacket refuses (malformed options
// inside an extension header, which the dataplane skips by their length):
// it walks at most 8 extension headers the plain way.
func refL4(fr []byte) (proto uint8, field int, l4, final []byte, ok bool) {
	end := offIP6 + ipLen(fr)
	nh, off := fr[offNextHdr], offL4
	final = fr[offDst : offDst+16]
	for hdrs := 0; ; hdrs++ {
		switch nh {
		case 17:
			if off+8 > end {
				return 0, 0, nil, nil, false
			}
			n := int(binary.BigEndian.Uint16(fr[off+4:]))
			if n < 8 || off+n > end {
				return 0, 0, nil, nil, false
			}
			return 17, off + 6, fr[off : off+n], final, true
		case 6:
			if off+20 > end {
				return 0, 0, nil, nil, false
			}
			return 6, off + 16, fr[off:end], final, true
		}
		if hdrs == 8 || off+8 > end {
			return 0, 0, nil, nil, false
		}
		l := (int(fr[off+1]) + 1) * 8
		switch nh {
		case 0, 60:
		case 43:
			if fr[off+3] > 0 && l >= 24 && off+24 <= end {
				final = fr[off+8 : off+24]
			}
		case 51:
			l = (int(fr[off+1]) + 2) * 4
		default:
			return 0, 0, nil, nil, false
		}
		nh, off = fr[off], off+l
	}
}
