package dataplane

import (
	"bytes"
	"testing"

	"github.com/pdrelay/pdrelay/fib"
)

// TestForwardAllocs: Forward allocates nothing on any path, checksum
// completion included.
func TestForwardAllocs(t *testing.T) {
	snap := testSnapshot(t, true)
	f := newForwarder(t, csumConfig()) // completion on U and A, off on U2 and B
	now := int64(0)
	for _, c := range []struct {
		name    string
		in      fib.PortID
		pkt     pkt
		snap    *fib.Snapshot
		want    Verdict
		partial bool // send it with a partial checksum: completed
	}{
		{"forward up, udp checksum completed", portA, fromA(clientA1, internet), snap, Forward, true},
		{"forward up, tcp checksum completed", portA, tcpFromA, snap, Forward, true},
		{"forward down, udp checksum completed", portU, fromU("2001:db8:a:100::1"), snap, Forward, true},
		{"forward down", portU, fromU("2001:db8:a:100::1"), snap, Forward, false},
		{"forward up", portA, fromA(clientA1, internet), snap, Forward, false},
		{"forward client to client", portB, fromB(macB1, clientB1, "2001:db8:b:200::1"), snap, Forward, false},
		{"drop spoofed", portA, fromA(clientB1, internet), snap, Drop, false},
		{"drop no table", portA, fromA(clientA1, internet), nil, Drop, false},
		{"drop no route", portU2, fromU("2001:db8:dead::1"), snap, Drop, false},
		{"drop loop (override lookup)", portA, fromA(clientA1, "2001:db8:a:30f::1"), snap, ICMPReply, false},
		{"icmp", portA, loopA(1400), snap, ICMPReply, false},
		{"kernel", portU, fromU(internet), snap, ToKernel, false},
	} {
		orig := c.pkt.frame(t)
		if c.partial {
			orig = partial(orig)
		}
		buf := make([]byte, len(orig), 2048)
		n := testing.AllocsPerRun(200, func() {
			buf = append(buf[:0], orig...)
			now += 1e9 // a full ICMP bucket every time
			if v, _, _, _ := f.Forward(c.snap, c.in, buf, now); v != c.want {
				t.Fatalf("%s: %v", c.name, v)
			}
		})
		if n != 0 {
			t.Errorf("%s: %v allocations per Forward", c.name, n)
		}
		if c.partial && bytes.Equal(buf[offL4:], orig[offL4:]) {
			t.Errorf("%s: checksum not completed", c.name)
		}
	}
	// ForwardBatch, over a batch of all the cases above but no table, with
	// partial checksums and complete ones.
	var frames, origs [][]byte
	for range 3 {
		for _, p := range []pkt{fromU("2001:db8:a:100::1"), fromA(clientA1, internet), fromA(clientB1, internet), fromU("2001:db8:dead::1"), loopA(1400), fromU(internet), tcpFromA} {
			for _, orig := range [][]byte{p.frame(t), partial(p.frame(t))} {
				origs = append(origs, orig)
				frames = append(frames, make([]byte, len(orig), 2048))
			}
		}
	}
	res := make([]Result, len(frames))
	for _, in := range []fib.PortID{portU, portA} {
		n := testing.AllocsPerRun(200, func() {
			for i := range frames {
				frames[i] = append(frames[i][:0], origs[i]...)
			}
			now += 1e9
			f.ForwardBatch(snap, in, frames, now, res)
		})
		if st, _ := f.Counters(in); st.ByReason[ChecksumCompleted] == 0 {
			t.Errorf("ForwardBatch on port %d: no checksum completed", in)
		}
		if n != 0 {
			t.Errorf("ForwardBatch on port %d: %v allocations per batch", in, n)
		}
	}
	if n := testing.AllocsPerRun(100, f.Flush); n != 0 {
		t.Errorf("Flush: %v allocations", n)
	}
}
