package relay

import (
	"net/netip"
	"time"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// pendingKey correlates a Reply with its request: transaction id and
// client DUID (RFC 8415 section 16.10: a client matches them the same way).
type pendingKey struct {
	port int // the downlink: the same DUID may be active on several (G-4)
	xid  [3]byte
	duid string
}

type pending struct {
	port  int
	mac   [6]byte
	peer  netip.Addr
	typ   dhcp6.MessageType
	iaids []uint32
	at    time.Time
	seq   uint64 // of the put that stored it
}

// pendingTable is a bounded map of requests awaiting a Reply, aged out in
// arrival order.
type pendingTable struct {
	m     map[pendingKey]pending
	order []orderSlot // FIFO of insertions; stale slots are skipped
	head  int
	max   int
	ttl   time.Duration
	seq   uint64
}

// orderSlot is one insertion: a retransmission queues its key again, and
// only the slot of the entry's latest put ages it out.
type orderSlot struct {
	k   pendingKey
	seq uint64
}

func (p *pendingTable) init(max int, ttl time.Duration) {
	if max <= 0 {
		max = 65536
	}
	if ttl <= 0 {
		ttl = 60 * time.Second
	}
	p.m = make(map[pendingKey]pending)
	p.max, p.ttl = max, ttl
}

// put records a request; a retransmission refreshes it. It reports false
// when the table is full of live requests.
func (p *pendingTable) put(now time.Time, k pendingKey, v pending) bool {
	p.age(now)
	if _, ok := p.m[k]; !ok && len(p.m) >= p.max {
		return false
	}
	p.seq++
	v.at, v.seq = now, p.seq
	p.order = append(p.order, orderSlot{k, p.seq})
	p.m[k] = v
	return true
}

func (p *pendingTable) take(now time.Time, k pendingKey) (pending, bool) {
	p.age(now)
	v, ok := p.m[k]
	if ok {
		delete(p.m, k)
	}
	return v, ok
}

// age drops requests older than the TTL and compacts the order queue.
func (p *pendingTable) age(now time.Time) {
	for p.head < len(p.order) {
		s := p.order[p.head]
		if v, ok := p.m[s.k]; ok && v.seq == s.seq {
			if now.Sub(v.at) < p.ttl {
				break
			}
			delete(p.m, s.k)
		}
		p.order[p.head] = orderSlot{}
		p.head++
	}
	if p.head > 1024 && p.head*2 > len(p.order) {
		p.order = append(p.order[:0], p.order[p.head:]...)
		p.head = 0
	}
}

func (p *pendingTable) len() int { return len(p.m) }
