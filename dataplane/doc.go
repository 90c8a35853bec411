// Package dataplane is pdrelay's per-packet forwarding function: given a
// received Ethernet frame, the port it came in on and a FIB snapshot, it
// decides the frame's fate and rewrites it in place. It works on byte
// slices, reads headers at fixed offsets, allocates nothing and needs no
// kernel; the AF_XDP sockets that feed it live in dataplane/xsk.
//
// # What Forward does
//
// A frame that is not an untagged Ethernet frame with one whole IPv6
// packet is dropped (NotIPv6, Malformed); so is everything while no FIB
// has been published (NoTable: fail closed). A multicast or link-local
// destination, or a hop-by-hop options header, goes to the kernel (Local).
//
// From a downlink (a client-facing port), the source must be allowed on
// the port (fib.Snapshot.SourceAllowedBytes: the port's delegated
// prefixes and configured sources; BCP 38, RFC 8987 R-3), else Spoofed.
// Hop limit 0 or 1 goes to the kernel, which sends Time Exceeded
// (HopLimit). The destination is looked up among the delegated prefixes;
// when none holds it the packet takes the default route (the uplink
// gateway), and without one it is dropped (NoRoute).
//
// From an uplink there is no source filter (only sources no router may
// forward are dropped); hop limit as above; a destination in a delegated
// prefix goes to its client, any other to the kernel or nowhere as
// PortConfig.NoRoutePass says.
//
// Loops (RFC 8987 R-5): a packet routed back out of the port it came in
// on is looping on a point-to-point port, and on a multi-access port when
// its source MAC is the route's next-hop MAC (else it is one client
// talking to another on the segment, and it is forwarded back out of the
// port). The policy for a looping packet is the most specific of: the
// longest Config.LoopOverrides prefix holding the destination, the
// client's fib.Route.Loop, the port's PortConfig.Loop (default drop).
// Dropped loops are answered with an ICMPv6 Destination Unreachable,
// code 6 (reject route to destination; RFC 4443 3.1), built in place,
// when the port has LoopICMP, RFC 4443 2.4(e) allows it (never for an
// ICMPv6 error, a link-layer multicast frame, or a packet whose type it
// cannot see) and the port's token bucket has a token (2.4(f)).
//
// Forwarding writes the route's MAC as destination, the egress port's MAC
// as source and decrements the hop limit. A route whose MAC is unknown
// (all zero) drops the packet (NoNeighbor).
//
// A frame forwarded from a port with PortConfig.CompleteChecksums also
// has a partial UDP or TCP checksum completed (ChecksumCompleted): a
// Linux host on a veth or another virtual device leaves the checksum for
// the "hardware" to finish, and AF_XDP drops the mark that says so. The
// rules are in csum.go; a correct or a corrupt checksum is left alone.
//
// # Counters
//
// Every frame is counted under exactly one Reason: Forwarded on the
// egress port (with its bytes), every other reason on the ingress port;
// also received frames and bytes per ingress port. ICMPSent and
// ICMPRateLimited count ICMPv6 errors on top of their Loop drop, and
// ChecksumCompleted forwarded frames on top of Forwarded.
// TxRingFull is for the caller to count with Count.
//
// # Concurrency
//
// New returns a Forwarder for one worker goroutine and Clone one for each
// further worker. Forward, Count and Flush of one Forwarder must be
// called from one goroutine at a time: each Forwarder keeps its counts in
// plain memory (no atomic operation per packet) until Flush adds them to
// totals that all clones share. A worker calls Flush after each batch and
// before it blocks; Forward also flushes by itself whenever its now has
// moved on by FlushInterval. Counters and Each read those totals with
// atomic loads and may be called from any goroutine at any time.
//
// The configuration is immutable after New. The ICMPv6 rate limiters are
// per port and shared by all clones (one atomic compare-and-swap per
// ICMPv6 error, never per forwarded packet), so the limit holds for the
// port whatever the number of workers.
//
// The FIB snapshot is an argument: a worker loads it once per batch
// (fib.FIB.Load) and passes the same one for every frame of the batch.
//
// # For the caller
//
//   - Pass the frame with its capacity reaching to the end of its buffer
//     (an AF_XDP frame: xsk.UMEM.Buffer(addr)[:len]): an ICMPv6 error is
//     built in it, up to 1294 bytes (Ethernet and the 1280-byte IPv6
//     minimum MTU), quoting less when the capacity is smaller.
//   - now must be monotonic (for example nanoseconds since the worker
//     started, from time.Since): the rate limiter copes with a clock that
//     goes back but is most exact with one that does not.
//   - ToKernel frames cannot go back into the stack from an AF_XDP socket;
//     the XDP program passes what it recognises before it gets here (hop
//     limit <= 1, link-scope destinations, hop-by-hop, the relay's own
//     addresses), so what is left (chiefly NoRoute on an uplink with
//     NoRoutePass) needs a TAP device or is dropped by the caller; it is
//     counted under its reason either way.
//   - Clients that route a LAN need PortConfig.ICMPSource (a global
//     address): the ICMPv6 error goes to the host behind the client, and
//     the client must not forward a packet from a link-local source.
package dataplane
