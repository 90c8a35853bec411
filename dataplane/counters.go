package dataplane

import (
	"fmt"
	"sync/atomic"

	"github.com/pdrelay/pdrelay/fib"
)

// Reason says why Forward gave a frame the verdict it did. Every frame is
// counted under exactly one of Forwarded .. NoNeighbor; TxRingFull is for
// the caller (Count), ICMPSent and ICMPRateLimited count ICMPv6 errors
// on top of the Loop drop that caused them, and ChecksumCompleted counts
// forwarded frames whose checksum was completed.
type Reason uint8

const (
	// Forwarded: the frame was rewritten and goes out of the returned
	// port. Counted on the egress port, with the bytes.
	Forwarded Reason = iota
	// NotIPv6: not an untagged Ethernet frame with EtherType IPv6.
	NotIPv6
	// Malformed: shorter than the Ethernet and IPv6 headers, IP version
	// not 6, or shorter than the IPv6 payload length says.
	Malformed
	// NoTable: no FIB snapshot has been published (nil): fail closed.
	NoTable
	// UnknownPort: the ingress port, or the egress port of the route
	// found, is not in the Config.
	UnknownPort
	// Local: for the relay's own stack (ToKernel): a multicast or
	// link-local destination, or a hop-by-hop options header.
	Local
	// Spoofed: on a downlink, a source the port's filter does not allow
	// (BCP 38, RFC 8987 R-3); on any port, a source that is never valid
	// (multicast, link-local, ::, ::1).
	Spoofed
	// HopLimit: hop limit 0 or 1 (ToKernel: the kernel sends Time
	// Exceeded).
	HopLimit
	// NoRoute: no delegated prefix holds the destination and there is no
	// default route for it (Drop), or it came in on an uplink (ToKernel
	// or Drop by PortConfig.NoRoutePass).
	NoRoute
	// Loop: the packet would leave on the downlink it came in on and the
	// loop policy says drop (RFC 8987 R-5); ICMPReply when an ICMPv6
	// error was sent for it.
	Loop
	// NoNeighbor: the route's next-hop MAC is not known (all zero): a
	// binding learned from a Reply whose request the relay never saw,
	// routed while neighbour discovery resolves its next hop (the
	// control plane fills the MAC in when it resolves).
	NoNeighbor
	// TxRingFull: counted by the caller (Count) when a frame could not be
	// queued for transmission.
	TxRingFull
	// ICMPSent: an ICMPv6 Destination Unreachable (reject route) was
	// built for a looping packet (also counted as Loop).
	ICMPSent
	// ICMPRateLimited: an ICMPv6 error was due but the port's rate limit
	// held it back (the packet is also counted as Loop).
	ICMPRateLimited
	// ChecksumCompleted: a forwarded frame's partial UDP or TCP checksum
	// was completed (PortConfig.CompleteChecksums). Counted on the
	// ingress port, on top of Forwarded on the egress port.
	ChecksumCompleted

	// NumReasons is the number of reasons, for arrays indexed by Reason.
	NumReasons
)

var reasonNames = [NumReasons]string{
	Forwarded:       "forwarded",
	NotIPv6:         "not_ipv6",
	Malformed:       "malformed",
	NoTable:         "no_table",
	UnknownPort:     "unknown_port",
	Local:           "local",
	Spoofed:         "spoofed",
	HopLimit:        "hop_limit",
	NoRoute:         "no_route",
	Loop:            "loop",
	NoNeighbor:      "no_neighbor",
	TxRingFull:      "tx_ring_full",
	ICMPSent:        "icmp_sent",
	ICMPRateLimited: "icmp_rate_limited",

	ChecksumCompleted: "checksum_completed",
}

// String returns the reason's name in snake case, fit for a metrics label.
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("Reason(%d)", uint8(r))
}

// NoPort is the port under which Counters and Each report counts for port
// IDs that are not in the Config (Forward on an unknown ingress port, or
// Count with one). It cannot be configured.
const NoPort fib.PortID = 0xffff

// Indexes of a port's counters after the reasons.
const (
	cRxPackets = int(NumReasons) + iota
	cRxBytes
	cFwdBytes
	numCounters
)

// counts is one worker's unflushed counts for one port.
type counts [numCounters]uint64

// sharedCounts is the published totals for one port.
type sharedCounts [numCounters]atomic.Uint64

// PortStats is a port's counters as of the last Flush of every worker.
type PortStats struct {
	Port      fib.PortID
	RxPackets uint64 // frames given to Forward on this port
	RxBytes   uint64
	// ForwardedBytes is the bytes of the frames forwarded out of this
	// port; ByReason[Forwarded] is their number.
	ForwardedBytes uint64
	// ByReason counts frames by the reason of their verdict: Forwarded on
	// the egress port, every other reason on the ingress port.
	ByReason [NumReasons]uint64
}

// count adds one frame to reason r of port slot i.
func (f *Forwarder) count(i int, r Reason) {
	f.counts[i][r]++
}

// Count adds one to reason r on port, for what the caller sees after
// Forward (TxRingFull when a transmit ring had no room). Like Forward it
// counts locally until Flush.
func (f *Forwarder) Count(port fib.PortID, r Reason) {
	if r >= NumReasons {
		return
	}
	f.count(f.sh.slot(port), r)
}

// Flush adds this worker's counts since the last Flush to the shared
// totals that Counters and Each read. A worker calls it after each batch
// and before it blocks; Forward also flushes on its own once the now it is
// given has moved on by FlushInterval since the last flush.
func (f *Forwarder) Flush() {
	for i := range f.counts {
		c := &f.counts[i]
		t := &f.sh.totals[i]
		for j, n := range c {
			if n != 0 {
				t[j].Add(n)
				c[j] = 0
			}
		}
	}
}

// FlushInterval is how far the now given to Forward moves on before
// Forward flushes its counts by itself (100 ms).
const FlushInterval = int64(100e6)

// Counters returns the totals of a configured port (or NoPort) as of the
// last Flush of every worker sharing this Forwarder's configuration. It is
// safe to call from any goroutine.
func (f *Forwarder) Counters(port fib.PortID) (PortStats, bool) {
	i, ok := f.sh.index(port)
	if !ok && port != NoPort {
		return PortStats{}, false
	}
	if !ok {
		i = len(f.sh.ports)
	}
	return f.sh.stats(i), true
}

func (s *shared) stats(i int) PortStats {
	t := &s.totals[i]
	st := PortStats{
		Port:           NoPort,
		RxPackets:      t[cRxPackets].Load(),
		RxBytes:        t[cRxBytes].Load(),
		ForwardedBytes: t[cFwdBytes].Load(),
	}
	if i < len(s.ports) {
		st.Port = s.ports[i].id
	}
	for r := range st.ByReason {
		st.ByReason[r] = t[r].Load()
	}
	return st
}

// Each calls fn for every configured port, in Config order, and every
// reason with the flushed number of frames; then for NoPort if anything
// was counted there. Zero counts are included so that metrics series
// exist from the start. It is safe to call from any goroutine.
func (f *Forwarder) Each(fn func(port fib.PortID, r Reason, n uint64)) {
	s := f.sh
	for i := range s.totals {
		st := s.stats(i)
		if i == len(s.ports) && st == (PortStats{Port: NoPort}) {
			break
		}
		for r, n := range st.ByReason {
			fn(st.Port, Reason(r), n)
		}
	}
}
