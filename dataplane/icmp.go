package dataplane

import (
	"github.com/pdrelay/pdrelay/internal/csum"

	"encoding/binary"
	"math"
	"sync/atomic"

	"github.com/pdrelay/pdrelay/fib"
)

// ICMPv6 Destination Unreachable (RFC 4443 section 3.1).
const (
	icmpDstUnreach   = 1
	icmpRejectRoute  = 6    // code: reject route to destination
	icmpHdrLen       = 8    // type, code, checksum, 4 unused bytes
	minMTU           = 1280 // IPv6 minimum MTU: the most an ICMPv6 error may fill
	icmpHopLimit     = 255
	icmpErrorMaxType = 127 // types 0..127 are error messages
)

// Offsets of the ICMPv6 error built in place.
const (
	offICMPType  = offL4
	offICMPCode  = offL4 + 1
	offICMPCsum  = offL4 + 2
	offICMPQuote = offL4 + icmpHdrLen // start of the invoking packet
)

// reject answers a looping packet on p, already counted as Loop in c, with
// an ICMPv6 Destination Unreachable, code 6, built in place in frame, when
// RFC 4443 section 2.4 allows one and p's rate limit has a token left.
func (f *Forwarder) reject(p *port, c *counts, frame []byte, now int64) (Verdict, Reason, fib.PortID, int) {
	if frame[offDstMAC]&1 != 0 || // sent to a link-layer group address (2.4(e.3))
		badSource((*[16]byte)(frame[offSrc:offSrc+16])) || // (2.4(e.4))
		!mayAnswer(frame) || // an ICMPv6 error, or cannot tell (2.4(e.1))
		cap(frame) < offICMPQuote {
		return Drop, Loop, p.id, 0
	}
	if !p.lim.allow(now) {
		c[ICMPRateLimited]++
		return Drop, Loop, p.id, 0
	}
	c[ICMPSent]++
	return ICMPReply, Loop, p.id, buildReject(frame, &p.mac, &p.icmpSrc)
}

// mayAnswer reports whether an ICMPv6 error may be sent for the IPv6
// packet in frame: it is not an ICMPv6 error message itself (RFC 4443
// 2.4(e.1)). It follows the extension headers; when it cannot tell (a
// header cut short, a non-first fragment, too many headers) it says no.
func mayAnswer(frame []byte) bool {
	end := offIP6 + ipLen(frame)
	nh, off := frame[offNextHdr], offL4
	for range 8 {
		switch nh {
		case protoICMPv6:
			return off < end && frame[off] > icmpErrorMaxType
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if off+2 > end {
				return false
			}
			nh, off = frame[off], off+(int(frame[off+1])+1)*8
		case 51: // authentication header
			if off+2 > end {
				return false
			}
			nh, off = frame[off], off+(int(frame[off+1])+2)*4
		case 44: // fragment
			if off+8 > end || binary.BigEndian.Uint16(frame[off+2:])&^7 != 0 {
				return false
			}
			nh, off = frame[off], off+8
		default: // an upper layer (TCP, UDP, ...), ESP or no next header
			return true
		}
	}
	return false
}

// buildReject turns the frame of an IPv6 packet into an ICMPv6 Destination
// Unreachable, code 6, for it, sent from mac and src (the ingress port's)
// back to the frame's source, and returns the new frame length. The error
// quotes as much of the invoking packet (without Ethernet padding) as fits
// in the IPv6 minimum MTU and in cap(frame), which must be at least
// offICMPQuote.
func buildReject(frame []byte, mac *[6]byte, src *[16]byte) int {
	q := min(ipLen(frame), minMTU-ip6Len-icmpHdrLen, cap(frame)-offICMPQuote)
	frame = frame[:offICMPQuote+q]
	copy(frame[offICMPQuote:], frame[offIP6:offIP6+q]) // overlapping: a memmove
	copy(frame[offDstMAC:offDstMAC+6], frame[offSrcMAC:offSrcMAC+6])
	*(*[6]byte)(frame[offSrcMAC : offSrcMAC+6]) = *mac
	plen := icmpHdrLen + q
	binary.BigEndian.PutUint32(frame[offIP6:], 6<<28) // version, class 0, flow 0
	binary.BigEndian.PutUint16(frame[offPayLen:], uint16(plen))
	frame[offNextHdr] = protoICMPv6
	frame[offHopLimit] = icmpHopLimit
	copy(frame[offDst:offDst+16], frame[offSrc:offSrc+16])
	*(*[16]byte)(frame[offSrc : offSrc+16]) = *src
	frame[offICMPType] = icmpDstUnreach
	frame[offICMPCode] = icmpRejectRoute
	clear(frame[offICMPCsum : offICMPCsum+6]) // checksum and unused
	// Pseudo-header (RFC 8200 section 8.1): source and destination (they
	// are adjacent in the header), upper-layer length, next header.
	sum := csum.Sum(frame[offSrc:offL4]) + uint64(plen) + protoICMPv6
	sum += csum.Sum(frame[offL4:])
	binary.BigEndian.PutUint16(frame[offICMPCsum:], ^csum.Fold(sum))
	return len(frame)
}

// limiter is a token bucket for ICMPv6 errors (RFC 4443 2.4(f)), kept as a
// generic cell rate algorithm: one atomic theoretical arrival time, so
// that the workers sharing a port share its limit without a lock.
type limiter struct {
	tat       atomic.Int64 // when the bucket is full again
	interval  int64        // ns per token
	tolerance int64        // (burst-1) * interval
}

// clockSlack is how far the now of one worker may lag another's before
// the limiter takes it for a clock gone back.
const clockSlack = int64(1e9)

func (l *limiter) init(rate, burst int) {
	l.interval = max(int64(1e9)/int64(rate), 1)
	l.tolerance = int64(burst-1) * l.interval
	l.tat.Store(math.MinInt64)
}

// allow takes a token at time now if there is one. While now moves
// forward, tat stays within tolerance+interval of it; more than a second
// beyond that the clock has gone back (workers' nows a little apart do not
// count), and the bucket starts again from now rather than staying empty
// until the clock catches up.
func (l *limiter) allow(now int64) bool {
	for {
		tat := l.tat.Load()
		t := max(tat, now)
		if d := t - now; d > l.tolerance+l.interval+clockSlack || d < 0 {
			t = now // the clock went back (or overflow): start afresh
		} else if d > l.tolerance {
			return false
		}
		if l.tat.CompareAndSwap(tat, t+l.interval) {
			return true
		}
	}
}
