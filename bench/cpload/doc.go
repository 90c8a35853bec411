// Package cpload is pdrelay's control-plane load generator and a fast
// DHCPv6 server to drive it against.
//
// Generator emulates many requesting routers (RFC 8415 clients asking
// for one IA_PD each) on one downlink, from ONE UDP socket on port 546:
// every emulated client has its own DUID (DUID-LL 0a:00:<4-byte index>)
// and transaction ids, and the socket's replies are told apart by the
// Client Identifier and the transaction id. All clients share the
// socket's link-local address and MAC, so the relay sees one next hop
// with many clients behind it (a multi-access port) and the kernel's
// neighbour table is not what is measured. Each client runs one phase at
// a time: bind (Solicit, Advertise, Request, Reply), renew (Renew,
// Reply) or release (Release, Reply); at most Window clients are in an
// exchange at once, and Rate bounds how many start a second. A message
// unanswered for Timeout is sent again, with the same transaction id.
//
// Responder answers every Relay-Forward at once with a Relay-Reply, as a
// server with no state would: a /56 per client, derived from the
// client's DUID (the generator's index in 2001:db8::/32; other DUIDs a
// hash of them), so that the relay, not the server, is the bottleneck.
//
// Run puts them together in a bench/lab topology: the generator in the
// client namespace, pdrelay (dataplane.mode kernel) in the relay
// namespace, and the fast responder or Kea in the server namespace. It
// watches the relay namespace's routing table over netlink (RouteWatch)
// to time each Reply's route, and pdrelay's /metrics for its message and
// binding counts and its memory. Options.Dataplane off runs pdrelay
// relaying and snooping alone (no routes, no nftables); Options.Relay
// dhcrelay runs ISC dhcrelay -6 in its place, the baseline: a relay that
// keeps no state, measured with the same generator and responder (its
// messages counted at the responder, its CPU time from /proc).
// Options.RelayCPUs starts the relay on the CPUs given (taskset), and
// PinSelf keeps this process's goroutines off them: with "1" and "0",
// the relay has one core of its own, the figure "per core" means, and
// the generator and responder no longer take its CPU or its time slices.
// Options.RelayCPUShare caps the relay below what the lab can drive (a
// CFS quota, lab.LimitCPU), so that it runs saturated: its messages a
// second over the share are then a core's capacity, measured, not
// inferred from CPU time. The generator and the responder read and write
// up to 64 datagrams a system call, so that they, not the relay, have
// room to spare.
//
// Concurrency: a Generator's Run and a Responder's Serve each own their
// goroutines until they return; their counters may be read from any
// goroutine while they run. ParseReply and the message builders are pure
// functions.
package cpload
