package dataplane

import (
	"sync"
	"testing"

	"github.com/pdrelay/pdrelay/fib"
)

func TestCount(t *testing.T) {
	f := newForwarder(t, testConfig(false))
	before := totals(t, f)
	f.Count(portU, TxRingFull)
	f.Count(portA, TxRingFull)
	f.Count(portA, TxRingFull)
	f.Count(42, TxRingFull) // not configured: NoPort
	f.Count(portA, NumReasons)
	f.Count(portA, 200)
	got := moved(before, totals(t, f))
	want := map[counterKey]uint64{{portU, "tx_ring_full"}: 1, {portA, "tx_ring_full"}: 2, {NoPort, "tx_ring_full"}: 1}
	if len(got) != len(want) {
		t.Fatalf("moved %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("moved %v, want %v", got, want)
		}
	}
	if _, ok := f.Counters(42); ok {
		t.Fatal("Counters of an unconfigured port")
	}
}

// TestFlush: counts stay in the Forwarder until Flush, or until now has
// moved on by FlushInterval.
func TestFlush(t *testing.T) {
	snap := testSnapshot(t, true)
	f := newForwarder(t, testConfig(false))
	fwd := func(now int64) {
		if v, _, _, _ := f.Forward(snap, portU, fromU("2001:db8:a:100::1").frame(t), now); v != Forward {
			t.Fatal(v)
		}
	}
	forwarded := func() uint64 {
		st, _ := f.Counters(portA)
		return st.ByReason[Forwarded]
	}
	fwd(0)
	fwd(FlushInterval - 1)
	if n := forwarded(); n != 0 {
		t.Fatalf("before Flush: %d", n)
	}
	fwd(FlushInterval) // flushes the two before it
	if n := forwarded(); n != 2 {
		t.Fatalf("after the interval: %d, want 2", n)
	}
	fwd(FlushInterval + 1)
	f.Flush()
	if n := forwarded(); n != 4 {
		t.Fatalf("after Flush: %d, want 4", n)
	}
	f.Flush()
	if n := forwarded(); n != 4 {
		t.Fatalf("after a second Flush: %d, want 4", n)
	}
}

func TestEach(t *testing.T) {
	snap := testSnapshot(t, true)
	f := newForwarder(t, testConfig(false))
	type pr struct {
		port fib.PortID
		r    Reason
	}
	each := func() (map[pr]uint64, []fib.PortID) {
		m := map[pr]uint64{}
		var order []fib.PortID
		f.Each(func(port fib.PortID, r Reason, n uint64) {
			if _, dup := m[pr{port, r}]; dup {
				t.Fatalf("port %d reason %v twice", port, r)
			}
			if len(order) == 0 || order[len(order)-1] != port {
				order = append(order, port)
			}
			m[pr{port, r}] = n
		})
		return m, order
	}
	m, order := each()
	if len(m) != 4*int(NumReasons) || len(order) != 4 || order[0] != portU || order[3] != portB {
		t.Fatalf("Each on a new Forwarder: %d entries, ports %v", len(m), order)
	}
	f.Forward(snap, portA, fromA(clientB1, internet).frame(t), 0)
	f.Forward(snap, 77, fromA(clientB1, internet).frame(t), 0)
	f.Flush()
	m, order = each()
	if len(order) != 5 || order[4] != NoPort || m[pr{portA, Spoofed}] != 1 || m[pr{NoPort, UnknownPort}] != 1 {
		t.Fatalf("Each: ports %v, %v", order, m)
	}
}

// TestConcurrentWorkers runs clones in parallel with readers of the
// counters (for the race detector) and checks that the totals add up.
func TestConcurrentWorkers(t *testing.T) {
	snap := testSnapshot(t, true)
	f := newForwarder(t, testConfig(true))
	const workers, per = 4, 2000
	frames := [][]byte{
		fromU("2001:db8:a:100::1").frame(t),
		fromA(clientA1, internet).frame(t),
		fromA(clientB1, internet).frame(t),
		loopA(10).frame(t),
	}
	ins := []fib.PortID{portU, portA, portA, portA}
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			f.Each(func(fib.PortID, Reason, uint64) {})
			f.Counters(portA)
		}
	})
	var workersWG sync.WaitGroup
	for w := range workers {
		fw := f.Clone()
		workersWG.Go(func() {
			buf := make([]byte, 0, 2048)
			for i := range per {
				k := (i + w) % len(frames)
				buf = append(buf[:0], frames[k]...)
				fw.Forward(snap, ins[k], buf, int64(i)*1e6)
				if i%64 == 0 {
					fw.Flush()
				}
			}
			fw.Flush()
		})
	}
	workersWG.Wait()
	close(done)
	wg.Wait()
	var rx uint64
	f.Each(func(fib.PortID, Reason, uint64) {})
	for _, p := range []fib.PortID{portU, portU2, portA, portB} {
		st, _ := f.Counters(p)
		rx += st.RxPackets
	}
	stA, _ := f.Counters(portA)
	stU, _ := f.Counters(portU)
	if rx != workers*per || stA.ByReason[Forwarded] != workers*per/4 || stU.ByReason[Forwarded] != workers*per/4 ||
		stA.ByReason[Spoofed] != workers*per/4 || stA.ByReason[Loop] != workers*per/4 ||
		stA.ByReason[ICMPSent]+stA.ByReason[ICMPRateLimited] != workers*per/4 {
		t.Fatalf("rx %d; A %+v; U %+v", rx, stA, stU)
	}
}
