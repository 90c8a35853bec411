// Package fib holds the forwarding tables of the relay's dataplane: routes
// for the delegated prefixes (longest-prefix match on the destination), the
// per-port source filters (BCP 38; RFC 8987 R-3) and the uplink default
// route. It is pure Go and does no I/O.
//
// A route and a source filter use exactly the delegated prefix length (RFC
// 8987 ): a route for a /56 matches the addresses of that /56 and no
// others, and a longer delegated prefix inside it wins for its addresses.
// Lookup does not fall back to the default route; the dataplane decides
// when a packet may take it.
//
// # Concurrency
//
// The control plane owns a Table. It is not safe for concurrent use: one
// goroutine applies binding changes (AddRoute, DeleteRoute, AddSource, ...)
// and calls Publish after each batch. Publish builds the next Snapshot
// copy-on-write, sharing all that the batch did not touch, and stores it in
// an atomic pointer.
//
// A Snapshot never changes once published and is safe for any number of
// concurrent readers, which never lock: a dataplane worker calls FIB.Load
// once per batch of packets and uses that snapshot for the whole batch, so
// it sees all of a Publish or none of it. Lookups allocate nothing. A nil
// *Snapshot (nothing published yet) finds no route and allows no source:
// the dataplane fails closed.
//
// # Structure
//
// Delegation plans use few prefix lengths (all /56, or /48 and /56 and
// /64). Each of the up to six most used lengths gets an exact-match hash
// table keyed by the masked address: a lookup probes them longest first, so
// it costs one hash probe per length in use instead of a walk down a trie.
// The probes are issued together, so their cache misses overlap. Prefixes of
// any further lengths live in a persistent bart table
// (github.com/gaissmai/bart), consulted only when such prefixes exist; a
// length moves between the two as the counts change.
//
// In front of the tables, a region filter (outer.go): sorted ranges of the
// /44s that hold prefixes, with the lengths in use in each. A binary search
// ends a lookup for an address outside them (most upstream traffic) at
// once, and one inside probes only the lengths in use there: in a pool of
// one delegated length, one table.
//
// Where a length's prefixes are dense enough (a pool with at least 1 in
// 128 of its prefixes delegated, for routes), blocks (dense.go) index them
// by number as well: 4096 slots per block, a bitmap word per 64 slots and,
// for routes, the taken slots' cells (entry and Hop) packed in order. A
// source check there reads a word, a route lookup a word and a cell,
// instead of a hash probe's directory, bucket, slot and entry. A
// pool's blocks have consecutive numbers, so a lookup finds its block in
// a table of block pointers by number (per namespace, length and run of
// numbers), which stays in cache.
//
// The packet path looks up a batch of addresses at a time (LookupBatch,
// LookupHops, SourceAllowedBatch, SourcesAndHops, Batch; batch.go): the
// lookups advance a step at a time together, blocks and hash tables in the
// same rounds, so that the cache misses of a batch overlap;
// SourcesAndHops runs the rounds of a batch's source checks and route
// lookups together too.
// LookupHops gives each route's Hop (egress port, next-hop MAC and loop
// policy) from the block's cell, without reading the route: the cell packs
// the policy into the port's top bits, which is why a route's port is at
// most MaxPort.
//
// The hash tables are extendible hash tables (a directory of bucket
// pointers, in chunks, indexed by the top bits of a seeded hash; buckets of
// 32 slots with a control byte each that split when full) whose chunks and
// buckets are copied on first write per generation, so a Publish costs in
// proportion to the changes in its batch, not to the size of the table.
package fib
