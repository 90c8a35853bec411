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
//
// # Map
//
// The files from the bottom layer up, with the types a reader (a lookup,
// on any goroutine) and the writer (the Table's one goroutine) use in
// each:
//
//	file         layer                  reader side                        writer side
//	route.go     types, validation      Route, Hop, packedHop (unpackTo)   checkRoute, checkPrefix, Hop.pack
//	exact.go     exact-match tables     exact, bkt, chunk (find, get)      exact (put, del, clone, split)
//	dense.go     dense blocks           block, word, cell, denseIndex,     denseWriter, blockInfo, blockCells,
//	                                    runFinder                          lpmWriter.freezeDense
//	outer.go     region filter          outerEnt (findOuter)               lpmWriter (count, buildOuter),
//	                                                                       coalesce, overlay
//	lpm.go       one table of a kind    lpm, fastLen                       lpmWriter (put, del, rebalance,
//	             (routes or sources)                                       migrate, freeze)
//	snapshot.go  single lookups         Snapshot, routeEnt, srcEnt         none: Table makes the entries
//	batch.go     batch lookups          Batch, batchState, probe, dprobe   none
//	table.go     the writer's API       FIB (Load)                         Table (AddRoute ... Publish)
//
// and the tests that cover each:
//
//	file         tests
//	route.go     TestHopPacking, TestInvalid
//	exact.go     TestExact, TestHashSpread, TestMatchTag, TestEntryLayout
//	dense.go     TestBlockCells, TestDenseIndex, TestOneLengthBatch, TestPublishDeferred, TestOracle
//	outer.go     TestOuterFilter, TestOuterRanges, TestCoalesce
//	lpm.go       TestOracle (lengths move between the exact tables and bart), TestPublishCost
//	snapshot.go  TestOracle, TestNilFailsClosed, TestAllocs, TestEntryLayout
//	batch.go     TestOracle, TestOneLengthBatch, TestAllocs, TestConcurrentReaders
//	table.go     TestExactLength, TestSources, TestRouteReplaceAndDeleteIf, TestDefaultRoute,
//	             TestConcurrentReaders, TestPublishCost
//
// The tests: oracle_test.go holds the oracle (maps and a linear scan)
// and TestOracle; fib_test.go the behaviour of the API and of each
// structure; exact_test.go and dense_test.go the structures alone;
// concurrent_test.go the readers against a publishing writer;
// publish_test.go the cost of a Publish; inline_test.go the hot helpers
// (TestHotHelpersInline) and doc_test.go this comment (TestDocNames);
// bench_test.go the benchmarks.
//
// # Invariants
//
// A change must keep each of these; the test named checks it.
//
//   - Lookup finds the longest delegated prefix that holds the address,
//     at its exact length, and never the default route; SourceAllowed
//     holds for a source in a prefix allowed on that port by a binding
//     or by the configuration, counted per (port, prefix): TestOracle,
//     TestExactLength, TestSources, TestDefaultRoute.
//   - The batch lookups (LookupBatch, LookupHops, SourceAllowedBatch,
//     SourcesAndHops) answer as the single ones, a nil address as none,
//     and write nothing past the batch; through the one-length shortcut
//     of the batch setup and through its general path: TestOracle (its
//     checkBatch), TestOneLengthBatch.
//   - A published Snapshot never changes. Everything a snapshot reaches
//     carries the generation that may change it in place (exact.gen,
//     bkt.gen, exact.topGen, block.gen, blockCells.gen,
//     lpmWriter.slowGen); the writer copies anything older before it
//     writes, and Publish moves the writer to a new generation:
//     TestOracle (it checks the last three snapshots again after each
//     Publish), TestExact, TestBlockCells, TestRouteReplaceAndDeleteIf.
//   - A reader sees all of a Publish or none of it, without locks: one
//     atomic store of the snapshot, nothing reachable from it written
//     after: TestConcurrentReaders (run it with -race).
//   - A Publish costs in proportion to the changes since the last one,
//     not to the size of the table: TestPublishCost (BenchmarkPublish
//     measures it).
//   - Lookups, single and batch, allocate nothing: TestAllocs (and the
//     dataplane's dataplane.TestForwardAllocs for a whole frame).
//   - A nil Snapshot finds no route and allows no source: TestNilFailsClosed.
//   - The entry types have their key as first field (entryKey and
//     routeOf read through a pointer to it), a routeEnt is 128 bytes
//     (a size class that starts on a cache line) and its Port, MAC and
//     Loop end within its first 64 bytes: TestEntryLayout.
//   - A route's port is at most MaxPort and its loop policy fits 2 bits,
//     so a dense block's cell packs them in 16 bits, and the hop read
//     from a cell is the route's: TestHopPacking, TestInvalid.
//   - A tag is never ctrlEmpty, and matchTag has no false matches (a
//     lookup stops at a group with an empty slot, so a removal in a
//     full group leaves ctrlDeleted): TestMatchTag, TestExact. The hash
//     spreads consecutive prefixes without overflow buckets:
//     TestHashSpread.
//   - A dense block holds exactly the table's prefixes in its range, a
//     cell at its slot's rank; the index finds every block and no
//     other; the lookups look for blocks in exactly the lengths that
//     have some: TestBlockCells, TestDenseIndex, TestOracle (its
//     checkDense and checkBlockFlags), TestPublishDeferred.
//   - The region filter never hides a match: every region holding an
//     entry lies in a range with that entry's length, coalescing only
//     widens ranges, and past maxShort prefixes shorter than a region
//     the filter is off: TestOuterRanges, TestCoalesce, TestOuterFilter.
//   - The helpers of the packet path written out for the inliner stay
//     inlined where they are hot: TestHotHelpersInline (the list,
//     hotHelpers, says why for each).
//   - Every test and benchmark this comment names exists, and every
//     file of the package has a row in the map: TestDocNames.
//
// # Changing fib safely
//
// Correctness first. TestOracle compares the tables with the oracle
// over random nested prefixes drawn from a small universe, random
// changes and addresses, after every Publish and PublishDeferred. It
// runs four times: with the real dense block thresholds, and with
// thresholds so low (setThresholds lowers denseOn, denseOff, srcDenseOn
// and srcDenseOff to 1-3 entries) that blocks are made, copied and
// dropped all the time in tables of a few hundred prefixes; swapSlack
// is 2, so that prefix lengths move between the exact tables and bart
// (more than maxFast lengths are in use); it fails if no length moved,
// or at the low thresholds if no block was made, so that it cannot pass
// without taking those paths. A new path that depends on a size or a threshold needs the
// same: make the threshold a variable and lower it in the test, as
// setThresholds does, rather than growing the test's tables. Mutate the
// new code and see TestOracle fail before trusting it. Then:
//
//	go test ./fib/
//	go test -race -short ./fib/
//	go test -race -run 'TestConcurrentReaders|TestOracle' ./fib/
//
// Then speed. This machine is shared and its memory speed drifts from
// run to run (docs/benchmarks.md), so compare the code before and after
// in one run, alternately, and report medians and their ratio, never a
// figure against one from another run. Build the test binary of the old
// code in a second worktree and the new one here, and run them in turn:
//
//	git worktree add --detach /tmp/fib-old HEAD   # or the commit before the change
//	(cd /tmp/fib-old && go test -c -o /tmp/fib-old.test ./fib/)
//	go test -c -o /tmp/fib-new.test ./fib/
//	for i in 1 2 3 4 5; do for v in old new; do
//		/tmp/fib-$v.test -test.run '^$' -test.bench '^BenchmarkLookup$/hit/1M/fib-hops' | tee -a /tmp/$v.txt
//	done; done
//
// (-test.bench matches the whole name: BenchmarkLookup alone would take
// BenchmarkLookupHot and the others too, and each builds its tables of
// 1M routes first.)
//
// Which benchmarks: BenchmarkLookup at 1M routes, cold (fib-hops is
// what the dataplane calls; hit, miss and foreign addresses);
// BenchmarkLookupHot for the instructions alone; BenchmarkLookupOneLength
// for a plan of one length (the batch setup's shortcut);
// BenchmarkLookupByPool for mixes of pools (a batch waits for its
// slowest pool); BenchmarkSourceAllowed for the source checks;
// BenchmarkPublish and BenchmarkMemory for a change to the writer or to
// what an entry holds; BenchmarkDRAM to read a run's memory phase. The
// fib's nanoseconds matter through forwarding: run the dataplane's
// dataplane.BenchmarkForwardBatch the same way (its cases cross, down
// and loop), built from ./dataplane/. A change that touches a helper of
// hotHelpers: go build -gcflags=-m=2 ./fib/ shows its inlining cost
// against the budget of 80.
package fib
