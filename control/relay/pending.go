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
}

// Bounds of what one request may make the table hold: a DUID is at most
// 130 bytes (RFC 8415 section 11.1), and a Release naming more IA_PDs than
// maxIAIDs is recorded with the first maxIAIDs (the Release itself removes
// them all when it is relayed; the Reply repeats the removal).
const (
	maxDUIDLen    = 130
	maxIAIDs      = 64
	entryOverhead = 160 // bytes: the entry, its map slot and links, roughly
)

// pendingEntry is one request in the table, on two lists: the table's, in
// order of arrival, and its port's.
type pendingEntry struct {
	key          pendingKey
	v            pending
	at           time.Time
	size         int
	prev, next   *pendingEntry // all ports, oldest first
	pprev, pnext *pendingEntry // this port, oldest first
}

// pendingList is a doubly linked list of entries, oldest first.
type pendingList struct {
	head, tail *pendingEntry
	n, bytes   int
}

// pendingTable holds the requests that await a Reply. It is bounded in
// entries and in bytes, and no port holds more than its share of either,
// so a flood on one port cannot push out another port's requests:
//
//   - a retransmission (same port, transaction id and DUID) replaces its
//     entry and moves it to the back;
//   - a port at its share evicts its own oldest request;
//   - a full table evicts the oldest request of all (with every port
//     within its share this happens only when shares are uneven);
//   - requests older than the TTL age out.
//
// So the newest request is always recorded. Owned by the engine's
// goroutine.
type pendingTable struct {
	m          map[pendingKey]*pendingEntry
	all        pendingList
	ports      []pendingList // by port index
	max        int           // entries
	maxBytes   int
	share      int // entries per port
	shareBytes int
	ttl        time.Duration
	evicted    uint64        // requests pushed out before their TTL
	free       *pendingEntry // entries to reuse, linked by next
}

// Defaults of the table's bounds.
const (
	defaultPendingMax      = 65536
	defaultPendingPerPort  = 64  // the least share a port gets by default
	defaultPendingEntryMax = 512 // bytes an entry may average before bytes bound the table
	defaultPendingTTL      = 60 * time.Second
)

// init sizes the table for nports ports: max entries (default the larger
// of 65536 and 64 per port), maxBytes bytes (default 512 per entry), each
// port a 1/nports share of both.
func (p *pendingTable) init(entries, bytes, nports int, ttl time.Duration) {
	nports = max(nports, 1)
	if entries <= 0 {
		entries = max(defaultPendingMax, defaultPendingPerPort*nports)
	}
	if bytes <= 0 {
		bytes = entries * defaultPendingEntryMax
	}
	if ttl <= 0 {
		ttl = defaultPendingTTL
	}
	*p = pendingTable{
		m:     make(map[pendingKey]*pendingEntry),
		ports: make([]pendingList, nports),
		max:   entries, maxBytes: bytes, ttl: ttl,
		share: max(entries/nports, 1), shareBytes: max(bytes/nports, 1),
	}
}

// put records a request, replacing a retransmission's entry, and returns
// how many other requests it evicted to make room.
func (p *pendingTable) put(now time.Time, k pendingKey, v pending) (evicted int) {
	p.age(now)
	if old, ok := p.m[k]; ok {
		p.unlink(old)
	}
	if len(v.iaids) > maxIAIDs {
		v.iaids = v.iaids[:maxIAIDs:maxIAIDs]
	}
	e := p.free
	if e != nil {
		p.free = e.next
	} else {
		e = new(pendingEntry)
	}
	*e = pendingEntry{key: k, v: v, at: now, size: entryOverhead + len(k.duid) + 4*len(v.iaids)}
	pl := &p.ports[k.port]
	for pl.head != nil && (pl.n >= p.share || pl.bytes+e.size > p.shareBytes) {
		p.unlink(pl.head)
		evicted++
	}
	for p.all.head != nil && (p.all.n >= p.max || p.all.bytes+e.size > p.maxBytes) {
		p.unlink(p.all.head)
		evicted++
	}
	p.m[k] = e
	p.link(e, pl)
	p.evicted += uint64(evicted)
	return evicted
}

// take removes and returns the request k, if it is there and younger than
// the TTL.
func (p *pendingTable) take(now time.Time, k pendingKey) (pending, bool) {
	p.age(now)
	e, ok := p.m[k]
	if !ok {
		return pending{}, false
	}
	v := e.v
	p.unlink(e)
	return v, true
}

// age drops requests as old as the TTL or older.
func (p *pendingTable) age(now time.Time) {
	for e := p.all.head; e != nil && now.Sub(e.at) >= p.ttl; e = p.all.head {
		p.unlink(e)
	}
}

func (p *pendingTable) link(e *pendingEntry, pl *pendingList) {
	e.prev, e.next = p.all.tail, nil
	if p.all.tail != nil {
		p.all.tail.next = e
	} else {
		p.all.head = e
	}
	p.all.tail = e
	p.all.n++
	p.all.bytes += e.size
	e.pprev, e.pnext = pl.tail, nil
	if pl.tail != nil {
		pl.tail.pnext = e
	} else {
		pl.head = e
	}
	pl.tail = e
	pl.n++
	pl.bytes += e.size
}

func (p *pendingTable) unlink(e *pendingEntry) {
	delete(p.m, e.key)
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		p.all.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		p.all.tail = e.prev
	}
	p.all.n--
	p.all.bytes -= e.size
	pl := &p.ports[e.key.port]
	if e.pprev != nil {
		e.pprev.pnext = e.pnext
	} else {
		pl.head = e.pnext
	}
	if e.pnext != nil {
		e.pnext.pprev = e.pprev
	} else {
		pl.tail = e.pprev
	}
	pl.n--
	pl.bytes -= e.size
	*e = pendingEntry{next: p.free} // nothing kept alive; reused by put
	p.free = e
}

func (p *pendingTable) len() int { return len(p.m) }

// bytes returns the bytes the table accounts for.
func (p *pendingTable) bytes() int { return p.all.bytes }

// portLen returns how many requests port holds.
func (p *pendingTable) portLen(port int) int { return p.ports[port].n }
