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
	DropMalformed               Drop = iota // not a parsable DHCPv6 message
	DropHopLimit                            // Relay-Forward from below at HOP_COUNT_LIMIT
	DropRelayReplyFromClient                // Relay-Reply arriving on a downlink
	DropReleaseRequestUntrusted             // RELEASE-REQUEST from an untrusted port
	DropUnknownServer                       // Relay-Reply from an address not configured
	DropNotRelayReply                       // server side message that is not a Relay-Reply
	DropUnknownPort                         // Relay-Reply naming no known port
	DropSendError                           // the socket refused the message
	numDrops
)

var dropNames = [numDrops]string{
	"malformed", "hop_limit", "relay_reply_from_client", "release_request_untrusted",
	"unknown_server", "not_relay_reply", "unknown_port", "send_error",
}

func (d Drop) String() string { return dropNames[d] }

// SnoopEvent counts what snooping saw; the message itself was relayed.
type SnoopEvent uint8

// Snoop events.
const (
	SnoopUnparsable  SnoopEvent = iota // Reply or IA_PD the snooper could not decode
	SnoopUnmatched                     // Reply with no recorded request (still learned)
	SnoopPendingFull                   // request not recorded: correlation table full
	numSnoop
)

var snoopNames = [numSnoop]string{"unparsable", "unmatched_reply", "pending_full"}

func (s SnoopEvent) String() string { return snoopNames[s] }

// Counters are the engine's counters; safe to read while the engine runs.
type Counters struct {
	msgs  [2][256]atomic.Uint64
	drops [numDrops]atomic.Uint64
	snoop [numSnoop]atomic.Uint64
}

func (c *Counters) msg(d Direction, t dhcp6.MessageType) { c.msgs[d][t].Add(1) }

// Drop counts a drop.
func (c *Counters) Drop(r Drop) { c.drops[r].Add(1) }

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
