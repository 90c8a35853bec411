package dataplane

import (
	"fmt"

	"github.com/pdrelay/pdrelay/fib"
)

// Verdict is what the caller does with a frame after Forward.
type Verdict uint8

const (
	// Drop: free the frame (n is 0; the port returned is the ingress
	// port). The zero Verdict, so that an unset one fails closed.
	Drop Verdict = iota
	// Forward: transmit frame[:n] out of the returned port; it has been
	// rewritten (MACs, hop limit).
	Forward
	// ToKernel: hand the unchanged frame (n == len(frame)) to the kernel
	// of the returned port, which is the ingress port.
	ToKernel
	// ICMPReply: transmit frame[:n], now an ICMPv6 error built in place,
	// back out of the returned port, which is the ingress port.
	ICMPReply
)

// String returns the verdict's name.
func (v Verdict) String() string {
	switch v {
	case Drop:
		return "drop"
	case Forward:
		return "forward"
	case ToKernel:
		return "to-kernel"
	case ICMPReply:
		return "icmp-reply"
	}
	return fmt.Sprintf("Verdict(%d)", uint8(v))
}

// Forwarder decides the fate of frames; see the package documentation for
// who may call which method from where. Create the first with New and one
// per further worker goroutine with Clone.
type Forwarder struct {
	sh      *shared
	counts  []counts // unflushed, by port index; the last is NoPort
	flushed int64    // the now of the last automatic Flush
}

// Forward decides one frame that arrived on port in, using snap (nil:
// nothing is forwarded, Drop with NoTable). frame is the received frame
// (len: its length; cap: the room in its buffer, used to build an ICMPv6
// error in place). now is a monotonic clock in nanoseconds, used for the
// ICMPv6 rate limit and to flush counts; Forward never reads a clock.
//
// It returns the verdict, its reason, the port to send on and the length
// of the frame to send:
//
//	verdict    reason                     out          n             frame
//	Forward    Forwarded                  egress port  len(frame)    rewritten
//	ICMPReply  Loop                       in           <= cap(frame) replaced by the error
//	ToKernel   Local, HopLimit, NoRoute   in           len(frame)    unchanged
//	Drop       any other (Loop included)  in           0             unchanged
//
// A forwarded frame gets the route's next-hop MAC as destination, the
// egress port's MAC as source and its hop limit decremented; nothing else
// changes (IPv6 has no header checksum, and upper-layer checksums do not
// cover the hop limit). Forward allocates nothing, and counts the frame
// (see Reason) in this Forwarder until Flush.
func (f *Forwarder) Forward(snap *fib.Snapshot, in fib.PortID, frame []byte, now int64) (v Verdict, r Reason, out fib.PortID, n int) {
	if now-f.flushed >= FlushInterval {
		f.Flush()
		f.flushed = now
	}
	s := f.sh
	ii, ok := s.index(in)
	if !ok {
		ii = len(s.ports)
	}
	c := &f.counts[ii]
	c[cRxPackets]++
	c[cRxBytes] += uint64(len(frame))
	if !ok {
		c[UnknownPort]++
		return Drop, UnknownPort, in, 0
	}
	if r := parse(frame); r != Forwarded {
		c[r]++
		return Drop, r, in, 0
	}
	if snap == nil {
		c[NoTable]++
		return Drop, NoTable, in, 0
	}
	p := &s.ports[ii]
	src := (*[16]byte)(frame[offSrc : offSrc+16])
	dst := (*[16]byte)(frame[offDst : offDst+16])
	if linkScope(dst) || frame[offNextHdr] == protoHopByHop {
		c[Local]++
		return ToKernel, Local, in, len(frame)
	}
	var rt *fib.Route
	if p.uplink {
		// From the operator network: no source filter, but never forward
		// what no router may (RFC 4291 2.5.6).
		if badSource(src) {
			c[Spoofed]++
			return Drop, Spoofed, in, 0
		}
		if frame[offHopLimit] <= 1 {
			c[HopLimit]++
			return ToKernel, HopLimit, in, len(frame)
		}
		if rt, ok = snap.LookupBytes(dst); !ok {
			c[NoRoute]++
			if p.noRoutePass {
				return ToKernel, NoRoute, in, len(frame)
			}
			return Drop, NoRoute, in, 0
		}
	} else {
		// From a client: the source must lie in what the port allows
		// (RFC 8987 R-3).
		if !snap.SourceAllowedBytes(p.id, src) {
			c[Spoofed]++
			return Drop, Spoofed, in, 0
		}
		if frame[offHopLimit] <= 1 {
			c[HopLimit]++
			return ToKernel, HopLimit, in, len(frame)
		}
		if rt, ok = snap.LookupBytes(dst); !ok {
			if rt, ok = snap.DefaultRoute(); !ok {
				c[NoRoute]++
				return Drop, NoRoute, in, 0
			}
		}
	}
	oi, ok := s.index(rt.Port)
	if !ok {
		c[UnknownPort]++
		return Drop, UnknownPort, in, 0
	}
	if oi == ii && p.isLoop(frame, rt) && s.loopPolicy(p, rt, dst) != fib.LoopForward {
		c[Loop]++
		if p.loopICMP {
			return f.reject(p, c, frame, now)
		}
		return Drop, Loop, in, 0
	}
	if rt.MAC == ([6]byte{}) {
		c[NoNeighbor]++
		return Drop, NoNeighbor, in, 0
	}
	*(*[6]byte)(frame[offDstMAC : offDstMAC+6]) = rt.MAC
	*(*[6]byte)(frame[offSrcMAC : offSrcMAC+6]) = s.ports[oi].mac
	frame[offHopLimit]--
	oc := &f.counts[oi]
	oc[Forwarded]++
	oc[cFwdBytes] += uint64(len(frame))
	return Forward, Forwarded, rt.Port, len(frame)
}
