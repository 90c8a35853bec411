package relay

import (
	"slices"
	"testing"
	"time"
)

// TestPendingRemap: the requests of the ports that stay move to their new
// index in order of arrival, with their age; a removed port's go; when the
// new shares are smaller, each port keeps its newest requests and the
// evictions are counted.
func TestPendingRemap(t *testing.T) {
	var p pendingTable
	p.init(12, 0, 2, 10*time.Second) // 6 a port
	for i := range 6 {
		p.put(t0.Add(time.Duration(i)*time.Second), portKey(0, i), pending{port: 0, iaids: []uint32{uint32(i)}})
		p.put(t0.Add(time.Duration(i)*time.Second), portKey(1, i), pending{port: 1})
	}
	p.evicted = 5 // counted before: kept
	// Port 1 becomes port 0, port 0 goes, two new ports: 3 a port.
	evicted := p.remap(pendingConfig{max: 12, ttl: 10 * time.Second}, 4, func(old int) (int, bool) { return 0, old == 1 })
	if evicted != 3 || p.evicted != 8 {
		t.Errorf("evicted %d (table %d), want 3 (8)", evicted, p.evicted)
	}
	if p.len() != 3 || p.portLen(0) != 3 {
		t.Fatalf("len %d, port 0 %d", p.len(), p.portLen(0))
	}
	var got []int
	for e := p.all.head; e != nil; e = e.next {
		if e.key.port != 0 || e.v.port != 0 {
			t.Errorf("entry %+v not on port 0", e.key)
		}
		got = append(got, int(e.key.xid[2]))
	}
	if !slices.Equal(got, []int{3, 4, 5}) {
		t.Errorf("kept requests %v, want the newest 3, oldest first", got)
	}
	// Their age is kept: request 3 (at t0+3s) ages out at t0+13s.
	if _, ok := p.take(t0.Add(13*time.Second), portKey(0, 3)); ok {
		t.Error("a remapped request outlived its TTL")
	}
	if _, ok := p.take(t0.Add(13*time.Second), portKey(0, 4)); !ok {
		t.Error("a remapped request was lost")
	}
	if _, ok := p.take(t0.Add(13*time.Second), portKey(1, 5)); ok {
		t.Error("a request under its old index")
	}
}

// TestTokenBucketRetune: a new rate applies at once; the tokens saved stay,
// up to the new burst.
func TestTokenBucketRetune(t *testing.T) {
	b := newTokenBucket(10, 100)
	for range 50 {
		b.allow(t0)
	}
	b.retune(10, 20) // 50 saved, burst now 20
	n := 0
	for b.allow(t0) {
		n++
	}
	if n != 20 {
		t.Errorf("%d allowed after the burst fell to 20", n)
	}
	b.retune(0, 0)
	for range 1000 {
		if !b.allow(t0) {
			t.Fatal("limited after the limit was lifted")
		}
	}
	b.retune(1, 1)
	if !b.allow(t0.Add(time.Second)) || b.allow(t0.Add(time.Second)) {
		t.Error("rate 1 burst 1 not applied")
	}
}
