// Package neigh learns the link-layer address of the uplink gateway from
// the kernel's neighbour table, for the userspace forwarding plane, which
// sends upstream traffic straight to that MAC and so never makes the
// kernel resolve or confirm it.
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
// Everything Watch does, it does in one network namespace: the caller's,
// or Options.NetNS, so tests can run it from the root namespace against
// an interface in another.
//
// Watch owns its state in its own goroutine and calls update from it, one
// call at a time; it needs CAP_NET_ADMIN to ask for resolution (without
// it, it sends one UDP datagram to the gateway's discard port instead).
// The package has no other state and is safe for concurrent use.
package neigh
