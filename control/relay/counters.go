package relay

import (
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
	DropQueueFull                           // the port's queue to the relay was full
	DropSocketOverflow                      // the kernel dropped the frame: the port's packet socket buffer was full
	numDrops
)

var dropNames = [numDrops]string{
	"malformed", "hop_limit", "relay_reply_from_client", "release_request_untrusted",
	"untrusted_server", "not_relay_reply", "unknown_port", "send_error",
	"relay_forward_untrusted", "bad_checksum", "bad_destination", "rate_limited", "queue_full", "socket_overflow",
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
// Drops of client messages are counted per downlink as well.
type Counters struct {
	msgs  [2][256]atomic.Uint64
	drops [numDrops]atomic.Uint64
	snoop [numSnoop]atomic.Uint64
	ports [][numDrops]atomic.Uint64 // by port; sized once by init
	// pending and pendingBytes mirror the pending table's size.
	pending, pendingBytes atomic.Int64
}

// Pending returns how many requests await their Reply and the bytes they
// are accounted to hold.
func (c *Counters) Pending() (n, bytes int64) { return c.pending.Load(), c.pendingBytes.Load() }

func (c *Counters) init(nports int) { c.ports = make([][numDrops]atomic.Uint64, nports) }

func (c *Counters) msg(d Direction, t dhcp6.MessageType) { c.msgs[d][t].Add(1) }

// Drop counts a drop not tied to a downlink.
func (c *Counters) Drop(r Drop) { c.drops[r].Add(1) }

// DropPort counts the drop of a message from downlink port i (an index
// into Config.Ports), in the total and in the port's counts.
func (c *Counters) DropPort(i int, r Drop) {
	c.drops[r].Add(1)
	if i >= 0 && i < len(c.ports) {
		c.ports[i][r].Add(1)
	}
}

func (c *Counters) dropPortN(i int, r Drop, n uint64) {
	if n == 0 {
		return
	}
	c.drops[r].Add(n)
	if i >= 0 && i < len(c.ports) {
		c.ports[i][r].Add(n)
	}
}

// PortDrops returns port i's count of drop reason r.
func (c *Counters) PortDrops(i int, r Drop) uint64 {
	if i < 0 || i >= len(c.ports) {
		return 0
	}
	return c.ports[i][r].Load()
}

// EachPortDrop calls fn for every port and every drop reason.
func (c *Counters) EachPortDrop(fn func(port int, r Drop, n uint64)) {
	for i := range c.ports {
		for r := range c.ports[i] {
			fn(i, Drop(r), c.ports[i][r].Load())
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
