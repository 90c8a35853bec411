package dataplane

import (
	"testing"

	"github.com/pdrelay/pdrelay/fib"
)

// TestForwardAllocs: Forward allocates nothing on any path.
func TestForwardAllocs(t *testing.T) {
	snap := testSnapshot(t, true)
	f := newForwarder(t, testConfig(true))
	now := int64(0)
	for _, c := range []struct {
		name string
		in   fib.PortID
		pkt  pkt
		snap *fib.Snapshot
		want Verdict
	}{
		{"forward down", portU, fromU("2001:db8:a:100::1"), snap, Forward},
		{"forward up", portA, fromA(clientA1, internet), snap, Forward},
		{"forward client to client", portB, fromB(macB1, clientB1, "2001:db8:b:200::1"), snap, Forward},
		{"drop spoofed", portA, fromA(clientB1, internet), snap, Drop},
		{"drop no table", portA, fromA(clientA1, internet), nil, Drop},
		{"drop no route", portU2, fromU("2001:db8:dead::1"), snap, Drop},
		{"drop loop (override lookup)", portA, fromA(clientA1, "2001:db8:a:30f::1"), snap, ICMPReply},
		{"icmp", portA, loopA(1400), snap, ICMPReply},
		{"kernel", portU, fromU(internet), snap, ToKernel},
	} {
		orig := c.pkt.frame(t)
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
	}
	// ForwardBatch, over a batch of all the cases above but no table.
	var frames, origs [][]byte
	for range 3 {
		for _, p := range []pkt{fromU("2001:db8:a:100::1"), fromA(clientA1, internet), fromA(clientB1, internet), fromU("2001:db8:dead::1"), loopA(1400), fromU(internet)} {
			orig := p.frame(t)
			origs = append(origs, orig)
			frames = append(frames, make([]byte, len(orig), 2048))
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
		if n != 0 {
			t.Errorf("ForwardBatch on port %d: %v allocations per batch", in, n)
		}
	}
	if n := testing.AllocsPerRun(100, f.Flush); n != 0 {
		t.Errorf("Flush: %v allocations", n)
	}
}
