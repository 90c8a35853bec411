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
	batch   batchScratch
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
// cover the hop limit), except that from a port with CompleteChecksums a
// partial UDP or TCP checksum is completed (see completeChecksum).
// Forward allocates nothing, and counts the frame (see Reason) in this
// Forwarder until Flush.
func (f *Forwarder) Forward(snap *fib.Snapshot, in fib.PortID, frame []byte, now int64) (v Verdict, r Reason, out fib.PortID, n int) {
	ii, p, c, res, done := f.head(snap, in, frame, now)
	if done {
		return res.Verdict, res.Reason, res.Port, res.Len
	}
	dst := (*[16]byte)(frame[offDst : offDst+16])
	srcOK := !p.uplink && snap.SourceAllowedBytes(p.id, (*[16]byte)(frame[offSrc:offSrc+16]))
	rt, _ := snap.LookupBytes(dst)
	res = f.tail(snap, ii, p, c, frame, now, srcOK, rt, nil)
	return res.Verdict, res.Reason, res.Port, res.Len
}

// Result is Forward's answer for one frame of a batch.
type Result struct {
	Verdict Verdict
	Reason  Reason
	Port    fib.PortID // the port to send on
	Len     int        // the length of the frame to send
}

// batchMax is how many frames ForwardBatch looks up together.
const batchMax = 64

// ForwardBatch decides frames that arrived together on port in, each as
// Forward would, and stores the answers in res, which must be at least as
// long as frames. It looks up the sources and destinations of up to 64
// frames at a time with the FIB's batch lookups, whose cache misses
// overlap: with a FIB larger than the CPU caches a batch costs much less
// than its frames one by one. It allocates nothing.
func (f *Forwarder) ForwardBatch(snap *fib.Snapshot, in fib.PortID, frames [][]byte, now int64, res []Result) {
	res = res[:len(frames)]
	b := &f.batch
	for len(frames) > 0 {
		n := min(len(frames), batchMax)
		// What is the same for every frame of the batch is done once: the
		// flush, the port, the receive counts.
		ii, p, c, ok := f.ingress(in, now)
		c[cRxPackets] += uint64(n)
		any := false
		for i, frame := range frames[:n] {
			c[cRxBytes] += uint64(len(frame))
			b.src[i], b.dst[i] = nil, nil
			if !ok {
				c[UnknownPort]++
				res[i] = Result{Drop, UnknownPort, in, 0}
				continue
			}
			if r, done := admit(snap, c, frame, in); done {
				res[i] = r
				continue
			}
			any = true
			b.dst[i] = (*[16]byte)(frame[offDst : offDst+16])
			if !p.uplink {
				b.src[i] = (*[16]byte)(frame[offSrc : offSrc+16])
			}
		}
		if any {
			// The hops are all tail reads of the routes, the looping
			// frames' included (the hop holds the loop policy). A
			// client's frames are checked at their sources in the same
			// memory rounds.
			if p.uplink {
				b.fib.LookupHops(snap, b.dst[:n], b.rt[:n], b.hop[:n])
			} else {
				b.fib.SourcesAndHops(snap, p.id, b.src[:n], b.srcOK[:n], b.dst[:n], b.rt[:n], b.hop[:n])
			}
			for i, frame := range frames[:n] {
				if b.dst[i] != nil {
					res[i] = f.tail(snap, ii, p, c, frame, now, b.srcOK[i], b.rt[i], &b.hop[i])
				}
			}
		}
		frames, res = frames[n:], res[n:]
	}
}

// batchScratch is ForwardBatch's working set, kept in the Forwarder so
// that a batch allocates nothing.
type batchScratch struct {
	src, dst [batchMax]*[16]byte
	srcOK    [batchMax]bool
	rt       [batchMax]*fib.Route
	hop      [batchMax]fib.Hop
	fib      fib.Batch
}

// head counts a frame in and makes the checks that need no lookup. It
// returns the index and state of the ingress port and the frame's counts,
// and done with the answer if the checks settled it.
func (f *Forwarder) head(snap *fib.Snapshot, in fib.PortID, frame []byte, now int64) (ii int, p *port, c *counts, res Result, done bool) {
	ii, p, c, ok := f.ingress(in, now)
	c[cRxPackets]++
	c[cRxBytes] += uint64(len(frame))
	if !ok {
		c[UnknownPort]++
		return ii, nil, c, Result{Drop, UnknownPort, in, 0}, true
	}
	res, done = admit(snap, c, frame, in)
	return ii, p, c, res, done
}

// ingress flushes the counts if FlushInterval has passed since the last
// flush, and returns the index and state of port in and its counts; if
// in is not a port of the plane (ok false), p is nil and c the counts of
// NoPort.
func (f *Forwarder) ingress(in fib.PortID, now int64) (ii int, p *port, c *counts, ok bool) {
	if now-f.flushed >= FlushInterval {
		f.Flush()
		f.flushed = now
	}
	s := f.sh
	ii, ok = s.index(in)
	if !ok {
		return len(s.ports), nil, &f.counts[len(s.ports)], false
	}
	return ii, &s.ports[ii], &f.counts[ii], true
}

// admit makes the checks of a frame from port in that need no lookup,
// counting a frame they settle in c: done with the answer if they do.
func admit(snap *fib.Snapshot, c *counts, frame []byte, in fib.PortID) (res Result, done bool) {
	if r := parse(frame); r != Forwarded {
		c[r]++
		return Result{Drop, r, in, 0}, true
	}
	if snap == nil {
		c[NoTable]++
		return Result{Drop, NoTable, in, 0}, true
	}
	dst := (*[16]byte)(frame[offDst : offDst+16])
	if linkScope(dst) || frame[offNextHdr] == protoHopByHop {
		c[Local]++
		return Result{ToKernel, Local, in, len(frame)}, true
	}
	return Result{}, false
}

// tail finishes the decision for a frame head did not settle, given
// whether its source is allowed on the port (downlinks; ignored on an
// uplink) and the route of its destination (nil: none) with its hop (nil:
// take it from the route). Given the hop, it does not read the route: the
// hop holds the route's loop policy too. The hop is passed by
// pointer and read field by field: a Hop written in parts and then read
// whole defeats store-to-load forwarding (12 ns a frame).
func (f *Forwarder) tail(snap *fib.Snapshot, ii int, p *port, c *counts, frame []byte, now int64, srcOK bool, rt *fib.Route, hop *fib.Hop) Result {
	s, in := f.sh, p.id
	if p.uplink {
		// From the operator network: no source filter, but never forward
		// what no router may (RFC 4291 2.5.6). From a client, srcOK says
		// whether the source lies in what the port allows (RFC 8987 R-3).
		srcOK = !badSource((*[16]byte)(frame[offSrc : offSrc+16]))
	}
	if !srcOK {
		c[Spoofed]++
		return Result{Drop, Spoofed, in, 0}
	}
	if frame[offHopLimit] <= 1 {
		c[HopLimit]++
		return Result{ToKernel, HopLimit, in, len(frame)}
	}
	if rt == nil && !p.uplink {
		// A client's traffic for elsewhere: the gateway (nil if none).
		rt, _ = snap.DefaultRoute()
		hop = nil
	}
	if rt == nil {
		c[NoRoute]++
		if p.uplink && p.noRoutePass {
			return Result{ToKernel, NoRoute, in, len(frame)}
		}
		return Result{Drop, NoRoute, in, 0}
	}
	if hop == nil {
		hop = &fib.Hop{Port: rt.Port, MAC: rt.MAC, Loop: rt.Loop}
	}
	oi, ok := s.index(hop.Port)
	if !ok {
		c[UnknownPort]++
		return Result{Drop, UnknownPort, in, 0}
	}
	dst := (*[16]byte)(frame[offDst : offDst+16])
	if oi == ii && p.isLoop(frame, hop.MAC) && s.loopPolicy(p, hop.Loop, dst) != fib.LoopForward {
		c[Loop]++
		if p.loopICMP {
			v, r, out, n := f.reject(p, c, frame, now)
			return Result{v, r, out, n}
		}
		return Result{Drop, Loop, in, 0}
	}
	if hop.MAC == ([6]byte{}) {
		c[NoNeighbor]++
		return Result{Drop, NoNeighbor, in, 0}
	}
	*(*[6]byte)(frame[offDstMAC : offDstMAC+6]) = hop.MAC
	*(*[6]byte)(frame[offSrcMAC : offSrcMAC+6]) = s.ports[oi].mac
	frame[offHopLimit]--
	oc := &f.counts[oi]
	oc[Forwarded]++
	oc[cFwdBytes] += uint64(len(frame))
	// Completion comes last: with the call before the counting, values
	// live across it cost every forwarded frame 8 instructions more, on
	// ports without completion too (cachegrind); here 3.
	out := hop.Port
	if p.csum && completeChecksum(frame) {
		c[ChecksumCompleted]++
	}
	return Result{Forward, Forwarded, out, len(frame)}
}
