package relay

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// Direction of a relayed message.
type Direction uint8

// Directions.
const (
	Up   Direction = iota // client side to servers
	Down                  // servers to client side
)

func (d Direction) String() string {
	if d == Up {
		return "up"
	}
	return "down"
}

// Drop is a reason a message was not relayed.
type Drop uint8

// Drop reasons. Each is counted; none is logged per packet.
const (
	DropMalformed               Drop = iota // not a parsable DHCPv6 message, or not a UDP/IPv6 frame to port 547
	DropHopLimit                            // Relay-Forward from below at HOP_COUNT_LIMIT
	DropRelayReplyFromClient                // Relay-Reply arriving on a downlink
	DropReleaseRequestUntrusted             // RELEASE-REQUEST from an untrusted port
	DropUntrustedServer                     // Relay-Reply not from a trusted server address on the uplink
	DropNotRelayReply                       // server side message that is not a Relay-Reply
	DropUnknownPort                         // Relay-Reply naming no known port
	DropSendError                           // the socket refused the message
	DropRelayForwardUntrusted               // Relay-Forward on a port without trust_relay_forward
	DropBadChecksum                         // client frame whose UDP checksum is wrong (or zero)
	DropBadDestination                      // client message not to ff02::1:2 or the relay's address on the port
	DropRateLimited                         // over the port's max_client_rate
	DropSocketOverflow                      // the kernel dropped the message: its socket's buffer was full
	numDrops
)

var dropNames = [numDrops]string{
	"malformed", "hop_limit", "relay_reply_from_client", "release_request_untrusted",
	"untrusted_server", "not_relay_reply", "unknown_port", "send_error",
	"relay_forward_untrusted", "bad_checksum", "bad_destination", "rate_limited", "socket_overflow",
}

// NumDrops is the number of drop reasons.
const NumDrops = int(numDrops)

func (d Drop) String() string { return dropNames[d] }

// SnoopEvent counts what snooping saw; the message itself was relayed.
type SnoopEvent uint8

// Snoop events.
const (
	SnoopUnparsable     SnoopEvent = iota // Reply or IA_PD the snooper could not decode
	SnoopUnmatched                        // Reply with no recorded request (still learned)
	SnoopPendingEvicted                   // a recorded request pushed out, before its Reply, by a newer one (table or port share full)
	numSnoop
)

var snoopNames = [numSnoop]string{"unparsable", "unmatched_reply", "pending_evicted"}

func (s SnoopEvent) String() string { return snoopNames[s] }

// Counters are the engine's counters; safe to read while the engine runs.
// Drops of client messages are counted per downlink as well, by name: a
// port's counts live as long as the Counters, so a port removed by
// Engine.Reconfigure keeps its (frozen) counts, and a port added again
// goes on from them.
type Counters struct {
	msgs  [2][256]atomic.Uint64
	drops [numDrops]atomic.Uint64
	snoop [numSnoop]atomic.Uint64
	// cur are the engine's ports' counts in port order; all are every
	// port's the Counters have known, in order of first use. Both are
	// replaced, never changed, under mu (copy on write), so readers only
	// load them.
	mu  sync.Mutex
	cur atomic.Pointer[[]*portCounters]
	all atomic.Pointer[[]*portCounters]
	// pending and pendingBytes mirror the pending table's size.
	pending, pendingBytes atomic.Int64
}

// portCounters are one downlink's drop counts.
type portCounters struct {
	name  string
	drops [numDrops]atomic.Uint64
}

// Pending returns how many requests await their Reply and the bytes they
// are accounted to hold.
func (c *Counters) Pending() (n, bytes int64) { return c.pending.Load(), c.pendingBytes.Load() }

// setPorts makes names, in order, the current ports, finding each one's
// counts by name (new ones start at zero), and returns them.
func (c *Counters) setPorts(names []string) []*portCounters {
	c.mu.Lock()
	defer c.mu.Unlock()
	var all []*portCounters
	if p := c.all.Load(); p != nil {
		all = *p
	}
	byName := make(map[string]*portCounters, len(all))
	for _, pc := range all {
		byName[pc.name] = pc
	}
	cur := make([]*portCounters, len(names))
	grown := false
	for i, n := range names {
		pc := byName[n]
		if pc == nil {
			pc = &portCounters{name: n}
			byName[n] = pc
			if !grown {
				all = slices.Clip(all) // never append into a slice readers hold
				grown = true
			}
			all = append(all, pc)
		}
		cur[i] = pc
	}
	c.all.Store(&all)
	c.cur.Store(&cur)
	return cur
}

// port returns the counts of current port i, or nil.
func (c *Counters) port(i int) *portCounters {
	p := c.cur.Load()
	if p == nil || i < 0 || i >= len(*p) {
		return nil
	}
	return (*p)[i]
}

func (c *Counters) msg(d Direction, t dhcp6.MessageType) { c.msgs[d][t].Add(1) }

// Drop counts a drop not tied to a downlink.
func (c *Counters) Drop(r Drop) { c.drops[r].Add(1) }

// DropPort counts the drop of a message from downlink port i (an index
// into the engine's current ports), in the total and in the port's counts.
func (c *Counters) DropPort(i int, r Drop) { c.dropOn(c.port(i), r, 1) }

// dropOn counts n drops of a message from the port whose counts are p
// (nil: the total only).
func (c *Counters) dropOn(p *portCounters, r Drop, n uint64) {
	if n == 0 {
		return
	}
	c.drops[r].Add(n)
	if p != nil {
		p.drops[r].Add(n)
	}
}

// PortDrops returns current port i's count of drop reason r.
func (c *Counters) PortDrops(i int, r Drop) uint64 {
	if p := c.port(i); p != nil {
		return p.drops[r].Load()
	}
	return 0
}

// EachPortDrop calls fn for every current port (by index) and every drop
// reason.
func (c *Counters) EachPortDrop(fn func(port int, r Drop, n uint64)) {
	p := c.cur.Load()
	if p == nil {
		return
	}
	for i, pc := range *p {
		for r := range pc.drops {
			fn(i, Drop(r), pc.drops[r].Load())
		}
	}
}

// EachPortDropByName calls fn for every port the counters have known,
// removed ones included, and every drop reason.
func (c *Counters) EachPortDropByName(fn func(port string, r Drop, n uint64)) {
	p := c.all.Load()
	if p == nil {
		return
	}
	for _, pc := range *p {
		for r := range pc.drops {
			fn(pc.name, Drop(r), pc.drops[r].Load())
		}
	}
}

func (c *Counters) snooped(e SnoopEvent) { c.snoop[e].Add(1) }

// EachMessage calls fn for every non-zero message counter.
func (c *Counters) EachMessage(fn func(d Direction, t dhcp6.MessageType, n uint64)) {
	for d := range c.msgs {
		for t := range c.msgs[d] {
			if n := c.msgs[d][t].Load(); n != 0 {
				fn(Direction(d), dhcp6.MessageType(t), n)
			}
		}
	}
}

// EachDrop calls fn for every drop reason.
func (c *Counters) EachDrop(fn func(r Drop, n uint64)) {
	for r := range c.drops {
		fn(Drop(r), c.drops[r].Load())
	}
}

// EachSnoop calls fn for every snoop event.
func (c *Counters) EachSnoop(fn func(e SnoopEvent, n uint64)) {
	for e := range c.snoop {
		fn(SnoopEvent(e), c.snoop[e].Load())
	}
}

// Messages returns one message counter.
func (c *Counters) Messages(d Direction, t dhcp6.MessageType) uint64 { return c.msgs[d][t].Load() }

// Drops returns one drop counter.
func (c *Counters) Drops(r Drop) uint64 { return c.drops[r].Load() }

// Snoops returns one snoop counter.
func (c *Counters) Snoops(e SnoopEvent) uint64 { return c.snoop[e].Load() }
