package relay

import (
	"net/netip"
	"testing"
	"time"
)

func TestTokenBucket(t *testing.T) {
	b := newTokenBucket(100, 200)
	n := 0
	for range 1000 { // a burst at one instant
		if b.allow(t0) {
			n++
		}
	}
	if n != 200 {
		t.Fatalf("burst: %d allowed, want 200", n)
	}
	// Over the next 10 s, 100 a second: 1000 more, however fast they come.
	n = 0
	for i := range 100000 {
		if b.allow(t0.Add(time.Duration(i) * 100 * time.Microsecond)) {
			n++
		}
	}
	if n < 999 || n > 1001 {
		t.Fatalf("10 s at 100/s: %d allowed", n)
	}
	// A quiet minute refills to the burst, not beyond.
	b.allow(t0.Add(time.Hour))
	n = 1
	for b.allow(t0.Add(time.Hour)) {
		n++
	}
	if n != 200 {
		t.Fatalf("after an hour idle: %d in a burst, want 200", n)
	}
	// A clock that steps back takes nothing and gives nothing.
	if b.allow(t0) {
		t.Error("a token from a clock stepping back")
	}
	unlimited := newTokenBucket(0, 0)
	for range 10000 {
		if !unlimited.allow(t0) {
			t.Fatal("rate 0 limited")
		}
	}
}

// A source that floods its queue delays another source's messages by at
// most one of its own each: the engine serves the sources in turn.
func TestFairQueue(t *testing.T) {
	q := newFairQueue(3, func(i int) int { return []int{4, 4, 8}[i] })
	for i := range 10 {
		ok := q.push(0, inbound{slot: 0, dst: ip(i)})
		if ok != (i < 4) {
			t.Fatalf("push %d to a queue of 4: %v", i, ok)
		}
	}
	q.push(1, inbound{slot: 1})
	q.push(2, inbound{slot: 2})
	q.push(1, inbound{slot: 1})
	var order []int
	for {
		m, ok := q.pop()
		if !ok {
			break
		}
		order = append(order, m.slot)
	}
	want := []int{0, 1, 2, 0, 1, 0, 0}
	if len(order) != len(want) {
		t.Fatalf("order %v, want %v", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("order %v, want %v", order, want)
		}
	}
	// Each queue is FIFO, and empties fully.
	for i := range 4 {
		q.push(0, inbound{dst: ip(i)})
	}
	for i := range 4 {
		if m, _ := q.pop(); m.dst != ip(i) {
			t.Fatalf("pop %d: %v", i, m.dst)
		}
	}
	select {
	case <-q.wake:
	default:
		t.Error("push did not wake the engine")
	}
}

func ip(i int) netip.Addr { return netip.AddrFrom16([16]byte{15: byte(i)}) }

// TestFairQueueGrows: a source's queue starts small and grows, in order,
// up to its depth; setDepth changes the depth for what comes next; a
// removed source takes nothing.
func TestFairQueueGrows(t *testing.T) {
	q := newFairQueue(1, func(int) int { return 3 * ringStart })
	if n := len(q.qs[0].buf); n != ringStart {
		t.Errorf("a queue of %d starts with %d slots, want %d", 3*ringStart, n, ringStart)
	}
	// Pop some first, so that the ring has wrapped when it grows.
	for i := range 10 {
		q.push(0, inbound{dst: ip(i)})
	}
	for i := range 10 {
		if m, _ := q.pop(); m.dst != ip(i) {
			t.Fatalf("pop %d: %v", i, m.dst)
		}
	}
	for i := range 3*ringStart + 5 {
		if ok := q.push(0, inbound{dst: ip(i)}); ok != (i < 3*ringStart) {
			t.Fatalf("push %d to a queue of %d: %v", i, 3*ringStart, ok)
		}
	}
	if n := len(q.qs[0].buf); n != 3*ringStart {
		t.Errorf("full queue has %d slots, want %d", n, 3*ringStart)
	}
	for i := range 3 * ringStart {
		if m, ok := q.pop(); !ok || m.dst != ip(i) {
			t.Fatalf("pop %d: %v %v", i, m.dst, ok)
		}
	}
	q.setDepth(0, 2)
	for i := range 3 {
		if ok := q.push(0, inbound{dst: ip(i)}); ok != (i < 2) {
			t.Fatalf("after setDepth(2), push %d: %v", i, ok)
		}
	}
	q.removeSource(0)
	q.setDepth(0, 10)
	if q.push(0, inbound{}) {
		t.Error("a removed source took a message after setDepth")
	}
}

// TestClientQueueDepth: a port's queue holds its burst, within bounds;
// with no rate limit it holds unlimitedQueueDepth.
func TestClientQueueDepth(t *testing.T) {
	for _, c := range []struct {
		r    *Rate
		want int
	}{
		{nil, unlimitedQueueDepth},
		{&Rate{}, unlimitedQueueDepth},
		{&Rate{Rate: 100, Burst: 200}, 200},
		{&Rate{Rate: 10, Burst: 1}, minClientQueueDepth},
		{&Rate{Rate: 1000, Burst: 1_000_000}, maxClientQueueDepth},
	} {
		if got := clientQueueDepth(c.r); got != c.want {
			t.Errorf("clientQueueDepth(%+v) = %d, want %d", c.r, got, c.want)
		}
	}
}
