// Package fib holds the forwarding tables of the relay's dataplane: routes
// for the delegated prefixes (longest-prefix match on the destination) and
// the per-port source filters (BCP 38; RFC 8987 R-3), plus the uplink
// default route. It is pure Go and does no I/O.
//
// A route and a source filter use exactly the delegated prefix length (RFC
// 8987 ): a route for a /56 matches the addresses of that /56 and no
// others, and a more specific delegated prefix wins over a shorter one.
//
// # Concurrency
//
// The control plane owns a Table. It is not safe for concurrent use: one
// goroutine applies binding changes (AddRoute, DeleteRoute, AddSource, ...)
// and calls Publish after each batch. Publish builds the next Snapshot
// copy-on-write (sharing everything the batch did not touch) and stores it
// with an atomic pointer swap.
//
// A Snapshot never changes after it is published and is safe for any number
// of concurrent readers, which never lock: a dataplane worker calls
// FIB.Load once per batch of packets and uses that one snapshot for the
// batch, so it sees either all of a Publish or none of it. Lookups allocate
// nothing. A nil *Snapshot (nothing published yet) finds no route and
// allows no source: the dataplane fails closed.
//
// # Structure
//
// The prefix lengths in heaviest use (up to six) each get an exact-match
// hash table keyed by the masked address; a lookup probes them longest
// first, so the usual delegation plan (all /56, or /48 and /56 and /64)
// costs one to three hash probes. Prefixes of any further lengths live in a
// persistent bart table (github.com/gaissmai/bart), consulted only when such
// prefixes exist. The hash tables are extendible hash tables whose directory
// and buckets are copied on first write per generation, so a Publish costs
// in proportion to the changes in its batch, not to the table size.
package fib
