package relay

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func key(b byte, duid string) pendingKey { return pendingKey{xid: [3]byte{0, 0, b}, duid: duid} }

func portKey(port, i int) pendingKey {
	return pendingKey{port: port, xid: [3]byte{byte(i >> 16), byte(i >> 8), byte(i)}, duid: "duid"}
}

func TestPendingMatchAndTTL(t *testing.T) {
	var p pendingTable
	p.init(0, 0, 1, 10*time.Second)
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
	if p.len() != 0 || p.bytes() != 0 {
		t.Fatalf("len = %d, bytes %d", p.len(), p.bytes())
	}
}

func TestPendingDefaults(t *testing.T) {
	var p pendingTable
	p.init(0, 0, 1, 0)
	if p.max != 65536 || p.share != 65536 || p.maxBytes != 65536*512 || p.ttl != 60*time.Second {
		t.Fatalf("defaults, one port: max %d share %d bytes %d ttl %v", p.max, p.share, p.maxBytes, p.ttl)
	}
	p.init(0, 0, 4096, 0)
	if p.max != 64*4096 || p.share != 64 || p.shareBytes != 64*512 {
		t.Fatalf("defaults, 4096 ports: max %d share %d share bytes %d", p.max, p.share, p.shareBytes)
	}
}

// A retransmission replaces its entry: the table does not grow with the
// message rate.
func TestPendingRetransmissionReplaces(t *testing.T) {
	var p pendingTable
	p.init(0, 0, 1, time.Minute)
	for i := range 100000 {
		if n := p.put(t0.Add(time.Duration(i)*time.Microsecond), key(1, "a"), pending{port: i}); n != 0 {
			t.Fatalf("a retransmission evicted %d", n)
		}
	}
	if p.len() != 1 || p.all.n != 1 || p.bytes() != entryOverhead+1 {
		t.Fatalf("len %d list %d bytes %d after 100,000 retransmissions", p.len(), p.all.n, p.bytes())
	}
	if v, ok := p.take(t0, key(1, "a")); !ok || v.port != 99999 {
		t.Fatalf("the newest copy was not kept: %+v", v)
	}
}

// When the table is full the oldest request goes: the newest is always
// recorded.
func TestPendingFullEvictsOldest(t *testing.T) {
	var p pendingTable
	p.init(2, 0, 1, 10*time.Second)
	p.put(t0, key(1, "a"), pending{})
	p.put(t0, key(2, "a"), pending{})
	if n := p.put(t0, key(3, "a"), pending{}); n != 1 {
		t.Fatalf("evicted %d, want 1", n)
	}
	if _, ok := p.take(t0, key(1, "a")); ok {
		t.Error("the oldest survived")
	}
	for _, k := range []byte{2, 3} {
		if _, ok := p.take(t0, key(k, "a")); !ok {
			t.Errorf("request %d lost", k)
		}
	}
	if p.evicted != 1 {
		t.Errorf("evicted counter %d", p.evicted)
	}
}

// A port flooding distinct requests holds at most its share and evicts
// only its own: another port's requests all survive.
func TestPendingPortShare(t *testing.T) {
	var p pendingTable
	p.init(1000, 0, 4, time.Minute) // share 250
	for i := range 100 {
		p.put(t0, portKey(2, i), pending{port: 2})
	}
	for i := range 100000 {
		p.put(t0.Add(time.Duration(i)), portKey(0, i), pending{})
	}
	if n := p.portLen(0); n != 250 {
		t.Errorf("the flooding port holds %d, want its share 250", n)
	}
	for i := range 100 {
		if _, ok := p.take(t0.Add(time.Second), portKey(2, i)); !ok {
			t.Fatalf("port 2's request %d was evicted by port 0's flood", i)
		}
	}
	// The flood's newest are the ones kept.
	if _, ok := p.take(t0.Add(time.Second), portKey(0, 99999)); !ok {
		t.Error("the newest request of the flood was not recorded")
	}
	if _, ok := p.take(t0.Add(time.Second), portKey(0, 0)); ok {
		t.Error("the oldest request of the flood survived")
	}
}

// Bytes bound the table too: long DUIDs and Releases naming many IA_PDs
// cannot make it hold more than its bytes.
func TestPendingBytes(t *testing.T) {
	var p pendingTable
	p.init(1000, 40000, 2, time.Minute) // 20000 bytes a port
	big := strings.Repeat("d", maxDUIDLen)
	for i := range 10000 {
		k := pendingKey{port: 0, xid: [3]byte{byte(i >> 16), byte(i >> 8), byte(i)}, duid: big}
		p.put(t0, k, pending{iaids: make([]uint32, 1000)})
		if p.ports[0].bytes > 20000 || p.bytes() > 40000 {
			t.Fatalf("port bytes %d, table %d", p.ports[0].bytes, p.bytes())
		}
	}
	want := entryOverhead + maxDUIDLen + 4*maxIAIDs
	if n := p.portLen(0); n != 20000/want {
		t.Errorf("port 0 holds %d entries of %d bytes, want %d", n, want, 20000/want)
	}
	for k, e := range p.m {
		if len(e.v.iaids) > maxIAIDs {
			t.Fatalf("%v holds %d IAIDs", k, len(e.v.iaids))
		}
	}
	// An entry larger than a port's share still goes in, alone.
	p.init(1000, 200, 1, time.Minute)
	p.put(t0, key(1, big), pending{})
	if p.len() != 1 {
		t.Errorf("an oversized request was not recorded")
	}
}

// A retransmission refreshes its request; that must not keep requests
// that arrived after it (and are older than the TTL) alive.
func TestPendingRetransmissionDoesNotBlockAging(t *testing.T) {
	var p pendingTable
	p.init(2, 0, 1, 10*time.Second)
	p.put(t0, key(1, "a"), pending{})                    // A
	p.put(t0.Add(1*time.Second), key(2, "b"), pending{}) // B
	p.put(t0.Add(9*time.Second), key(1, "a"), pending{}) // A retransmitted
	now := t0.Add(12 * time.Second)                      // B is 11 s old, A 3 s
	if n := p.put(now, key(3, "c"), pending{}); n != 0 {
		t.Errorf("evicted %d: B should have aged out", n)
	}
	if _, ok := p.take(now, key(2, "b")); ok {
		t.Error("matched a request older than the TTL")
	}
	if _, ok := p.take(now, key(1, "a")); !ok {
		t.Error("the retransmitted request was aged out")
	}
}

// TestPendingAgainstModel checks the table against an obvious model (a
// slice in arrival order) over random puts, takes and clock steps on a
// few ports.
func TestPendingAgainstModel(t *testing.T) {
	type ent struct {
		k    pendingKey
		at   time.Time
		port int
		size int
	}
	const ttl = 5 * time.Second
	rng := rand.New(rand.NewPCG(1, 2))
	var p pendingTable
	p.init(40, 40*200, 3, ttl)
	var model []ent
	now := t0
	for step := range 200000 {
		now = now.Add(time.Duration(rng.IntN(50)) * time.Millisecond)
		// Age the model.
		model = slices.DeleteFunc(model, func(e ent) bool { return now.Sub(e.at) >= ttl })
		port := rng.IntN(3)
		k := pendingKey{port: port, xid: [3]byte{0, 0, byte(rng.IntN(30))}, duid: strings.Repeat("x", rng.IntN(60))}
		if rng.IntN(3) == 0 {
			_, ok := p.take(now, k)
			i := slices.IndexFunc(model, func(e ent) bool { return e.k == k })
			if ok != (i >= 0) {
				t.Fatalf("step %d: take %v = %v, model %v", step, k, ok, i >= 0)
			}
			if i >= 0 {
				model = slices.Delete(model, i, i+1)
			}
			continue
		}
		size := entryOverhead + len(k.duid)
		model = slices.DeleteFunc(model, func(e ent) bool { return e.k == k })
		portN, portB, allB := 0, 0, 0
		for _, e := range model {
			allB += e.size
			if e.port == port {
				portN++
				portB += e.size
			}
		}
		for portN > 0 && (portN >= p.share || portB+size > p.shareBytes) {
			i := slices.IndexFunc(model, func(e ent) bool { return e.port == port })
			portN--
			portB -= model[i].size
			allB -= model[i].size
			model = slices.Delete(model, i, i+1)
		}
		for len(model) > 0 && (len(model) >= p.max || allB+size > p.maxBytes) {
			allB -= model[0].size
			model = model[1:]
		}
		model = append(model, ent{k, now, port, size})
		p.put(now, k, pending{})
		if p.len() != len(model) {
			t.Fatalf("step %d: len %d, model %d", step, p.len(), len(model))
		}
	}
	for _, e := range model {
		if _, ok := p.take(now, e.k); !ok {
			t.Fatalf("the model holds %v, the table does not", e.k)
		}
	}
	if p.len() != 0 || p.bytes() != 0 {
		t.Fatalf("left over: len %d bytes %d", p.len(), p.bytes())
	}
	for i, pl := range p.ports {
		if pl != (pendingList{}) {
			t.Fatalf("port %d's list left over: %+v", i, pl)
		}
	}
}
