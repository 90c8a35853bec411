// Package neigh learns link-layer addresses from the kernel's neighbour
// table for the userspace forwarding plane, which sends frames straight
// to a next hop's MAC and so never makes the kernel resolve or confirm
// it: the uplink gateway's (Watch) and the clients' next hops on the
// downlinks (Resolver).
//
// # Watch
//
// Watch reads the gateway's entry over netlink, follows it through
// neighbour notifications and reports each change: a MAC learned or
// changed, or the gateway lost (entry FAILED, INCOMPLETE or deleted). It
// asks the kernel to resolve a missing gateway (neighbour discovery, at
// most one request every few seconds, backing off), sends a STALE entry to
// be confirmed every poll, and reads the tables again every poll (30 s) in
// case a notification was lost. Without a configured gateway, it follows
// the next hop of the IPv6 default route through the uplink.
//
// Watch owns its state in its own goroutine and calls update from it, one
// call at a time.
//
// # Resolver
//
// A binding learned from a Reply whose request the relay never saw (its
// pending table was full, or the relay restarted before the client
// renewed) has a next hop address but no MAC. The Resolver finds it: a
// caller asks with Resolve(port, address) and is called back with the MAC
// once the kernel holds a usable entry (REACHABLE, STALE, DELAY, PROBE,
// PERMANENT or NOARP, with a MAC). Each next hop is reported once and then
// forgotten; asking again starts over.
//
// The relay's own Reply to the client usually makes the kernel resolve
// the client within milliseconds, so the Resolver first waits for the
// entry to appear (neighbour notifications, Grace 0.5 s). Then it asks
// the kernel itself, as Watch does, and again while the next hop stays
// unresolved: every Retry (1 s), doubling up to MaxRetry (30 s), never
// while the kernel is still soliciting, and logs one warning per next hop
// unresolved after WarnAfter (1 min). It gives up only when told to
// (Forget). The work is bounded: at most MaxTracked next hops (16384) are
// tracked (further Resolve calls are refused and counted in
// Stats.Dropped), at most MaxInFlight requests (64) are outstanding, the
// longest waiting first, and the kernel's table is read at most every
// 50 ms, and for every tracked next hop every Poll (30 s) in case a
// notification was lost.
//
// Resolve, Forget and Stats are safe for concurrent use and never block
// on the kernel: Resolve records the next hop and wakes Run's goroutine.
// Run does every read and request, and calls the callback from its
// goroutine, one call at a time, holding no lock (the callback may call
// Resolve or Forget). A Resolver runs once.
//
// # Both
//
// Everything Watch and a Resolver do, they do in one network namespace:
// the caller's, or the one their options name, so tests can run them from
// the root namespace against interfaces in another. Asking for resolution
// needs CAP_NET_ADMIN (a netlink NTF_USE request); without it, one UDP
// datagram to the neighbour's discard port does the same. The package has
// no other state.
package neigh
