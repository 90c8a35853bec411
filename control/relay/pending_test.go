package relay

import (
	"testing"
	"time"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func key(b byte, duid string) pendingKey { return pendingKey{xid: [3]byte{0, 0, b}, duid: duid} }

func TestPendingMatchAndTTL(t *testing.T) {
	var p pendingTable
	p.init(0, 10*time.Second)
	p.put(t0, key(1, "a"), pending{port: 1})
	if _, ok := p.take(t0, key(1, "b")); ok {
		t.Fatal("matched another DUID with the same xid")
	}
	if _, ok := p.take(t0, key(2, "a")); ok {
		t.Fatal("matched another xid with the same DUID")
	}
	v, ok := p.take(t0.Add(9*time.Second), key(1, "a"))
	if !ok || v.port != 1 {
		t.Fatalf("take = %+v, %v", v, ok)
	}
	if _, ok := p.take(t0.Add(9*time.Second), key(1, "a")); ok {
		t.Fatal("a request matched two Replies")
	}
	p.put(t0, key(3, "a"), pending{})
	if _, ok := p.take(t0.Add(10*time.Second), key(3, "a")); ok {
		t.Fatal("matched a request exactly TTL old")
	}
	if p.len() != 0 {
		t.Fatalf("len = %d", p.len())
	}
}

func TestPendingDefaults(t *testing.T) {
	var p pendingTable
	p.init(0, 0)
	if p.max != 65536 || p.ttl != 60*time.Second {
		t.Fatalf("defaults: max %d ttl %v", p.max, p.ttl)
	}
}

func TestPendingFull(t *testing.T) {
	var p pendingTable
	p.init(2, 10*time.Second)
	if !p.put(t0, key(1, "a"), pending{}) || !p.put(t0, key(2, "a"), pending{}) {
		t.Fatal("put refused below max")
	}
	if p.put(t0, key(3, "a"), pending{}) {
		t.Fatal("put accepted over max")
	}
	if !p.put(t0.Add(time.Second), key(1, "a"), pending{port: 7}) {
		t.Fatal("a retransmission refused when full")
	}
	// Once the first two are TTL old, there is room again.
	if !p.put(t0.Add(11*time.Second), key(3, "a"), pending{}) {
		t.Fatal("put refused after the old requests aged out")
	}
}

// A retransmission refreshes its request; that must not keep requests
// that arrived after it (and are older than the TTL) alive.
func TestPendingRetransmissionDoesNotBlockAging(t *testing.T) {
	var p pendingTable
	p.init(2, 10*time.Second)
	p.put(t0, key(1, "a"), pending{})                    // A
	p.put(t0.Add(1*time.Second), key(2, "b"), pending{}) // B
	p.put(t0.Add(9*time.Second), key(1, "a"), pending{}) // A retransmitted
	now := t0.Add(12 * time.Second)                      // B is 11 s old, A 3 s
	if !p.put(now, key(3, "c"), pending{}) {
		t.Error("table full of requests older than the TTL")
	}
	if _, ok := p.take(now, key(2, "b")); ok {
		t.Error("matched a request older than the TTL")
	}
	if _, ok := p.take(now, key(1, "a")); !ok {
		t.Error("the retransmitted request was aged out")
	}
}

// The order queue is compacted: a long run of matched requests does not
// grow it without bound.
func TestPendingOrderBounded(t *testing.T) {
	var p pendingTable
	p.init(0, time.Minute)
	now := t0
	for i := range 100000 {
		k := pendingKey{xid: [3]byte{byte(i >> 16), byte(i >> 8), byte(i)}, duid: "x"}
		p.put(now, k, pending{})
		if _, ok := p.take(now, k); !ok {
			t.Fatal("no match")
		}
		now = now.Add(time.Microsecond)
	}
	if len(p.order)-p.head > 2048 || cap(p.order) > 8192 {
		t.Errorf("order queue len %d head %d cap %d", len(p.order), p.head, cap(p.order))
	}
}

// Requests recorded with one and the same time (a batch read with one
// clock reading) and retransmitted keep the order queue bounded.
func TestPendingSameTimeRetransmissions(t *testing.T) {
	var p pendingTable
	p.init(0, time.Minute)
	for i := range 200000 {
		k := pendingKey{xid: [3]byte{0, byte(i >> 8), byte(i)}, duid: "x"} // 65536 keys, each put 3 times
		p.put(t0, k, pending{})
	}
	if len(p.order)-p.head > 2*65536+1024 {
		t.Errorf("order queue holds %d slots for %d requests", len(p.order)-p.head, p.len())
	}
}
