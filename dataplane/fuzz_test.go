package dataplane

import (
	"bytes"
	"testing"

	"github.com/pdrelay/pdrelay/fib"
)

// fuzzPorts are the ports FuzzForward sends frames in on: both kinds of
// uplink and downlink, and an unconfigured one.
var fuzzPorts = []fib.PortID{portU, portU2, portA, portB, portBad}

// FuzzForward feeds arbitrary frames to Forward on every kind of port, with
// arbitrary room in the buffer: it must not panic, must return n ≤
// cap(frame), must leave the frame alone unless it forwards or answers it,
// and must build only well-formed ICMPv6 errors.
func FuzzForward(f *testing.F) {
	for _, c := range forwardCases {
		f.Add(c.pkt.frame(f), uint8(0), uint16(0))
	}
	f.Add(loopA(10).frame(f), uint8(2), uint16(100))
	f.Add(loopA(1500).frame(f), uint8(2), uint16(600))
	f.Add(loopB(0).frame(f), uint8(3), uint16(8))
	f.Add(fromU("2001:db8:b:100::1").frame(f), uint8(0), uint16(0))
	f.Add([]byte{}, uint8(1), uint16(0))
	snap := testSnapshot(f, true)
	fw, fwb := newForwarder(f, testConfig(true)), newForwarder(f, testConfig(true))
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
					fold(sum16(msg[offL4:], sum16(msg[offSrc:offL4], uint64(n-offL4)+protoICMPv6))) != 0xffff {
					t.Fatalf("icmp: bad message %x", msg)
				}
			default:
				t.Fatalf("verdict %v", v)
			}
		}
	})
}
