// Package kroute writes the routes of delegated prefixes into the Linux
// kernel's FIB for dataplane.mode kernel, through rtnetlink
// (github.com/vishvananda/netlink and its nl package). The kernel then
// forwards; pdrelay only keeps its routes equal to the bindings.
//
// # What it writes
//
// One route per delegated prefix, of exactly the delegated length (RFC
// 8987 R-2), via the client's address (the relayed peer-address, usually
// link-local) on its downlink:
//
//	2001:db8:1:100::/56 via fe80::2 dev dl0 proto 157 metric 1024
//
// in the table of Config.Table (main by default). A next hop that is not
// link-local is written onlink. A route without a next hop yet is not
// written (a route "dev dl0" alone would make the kernel ask neighbour
// discovery for every address in the prefix); it waits for the Update
// that brings one.
//
// The routes carry protocol 157 (Protocol): `ip -6 route show proto
// 157`; /etc/iproute2/rt_protos.d/pdrelay.conf can name it ("157
// pdrelay"). 157 was chosen free of: the kernel's RTPROT_* values
// (linux/rtnetlink.h: 0-4, 8-18, 42, 99, 186-189, 192), iproute2's
// rt_protos on the build machine (the same less 17), FRR's
// rt_protos.d/frr.conf (186-197, one per FRR daemon) and BIRD's (12,
// RTPROT_BIRD, unless configured otherwise). The Router owns every route of Protocol in its
// table: a reconcile deletes those no binding backs, so two pdrelays
// must not share a namespace and table.
//
// # Neighbour entries
//
// Where the binding knows the client's MAC, the Router writes a
// neighbour entry for the next hop before the first route through it,
// so that the first packet leaves at once instead of waiting for
// neighbour discovery:
//
//	fe80::2 dev dl0 lladdr 02:00:00:00:00:12 extern_learn STALE proto 157
//
// STALE, because the kernel must still verify it: a STALE entry is used
// at once, then, when traffic uses it and no upper layer confirms the
// neighbour within delay_first_probe_time (5 s), the kernel probes it by
// unicast; a wrong MAC fails the probes and is resolved afresh
// (TestKernelNeighbourVerified), and a solicitation or advertisement
// from the client with another MAC replaces it at once
// (TestKernelNeighbourFollows). REACHABLE would claim a confirmation
// pdrelay does not have. PERMANENT (or NOARP) would never be verified,
// would ignore a client's new MAC, and would stay after a crash until
// someone deleted it.
//
// extern_learn (NTF_EXT_LEARNED), because the entries are many and
// quiet: the kernel exempts such entries from its garbage collector and
// from the neighbour table's limits (gc_thresh1-3: by default it evicts
// unused STALE entries past 512 and refuses new ones past 1,024, so a
// port of 100k clients would lose the entries as soon as they were
// written). The flag does not change how the kernel verifies the entry
// or learns a new MAC; it keeps the entry until pdrelay deletes it. It
// does so when the last route through the next hop goes, or with a
// forgotten MAC. Protocol 157 (NDA_PROTOCOL, Linux 5.3) marks them, so
// that the reconcile after a crash finds and deletes those no binding
// backs any more. At the reconcile, an entry the kernel already holds
// for a wanted next hop stands, whoever wrote it and whatever its MAC
// (the kernel may have followed the client to a new one); a binding
// change that brings a MAC later replaces it. The kernel flushes a
// port's entries when it goes down or loses carrier; the Router writes
// them again when it is back.
//
// # What it guarantees
//
//   - The desired state is the Router's: the wanted route of each prefix
//     (Add, Update, Restore; Delete) and, per next hop, the routes
//     through it and its MAC. Nothing the kernel does or refuses loses
//     it: a refused change is logged, counted and written again by Run
//     after a pause (100 ms, doubling to 30 s); a change through a
//     downlink that is down or absent (the kernel refuses it with
//     ENETDOWN or ENODEV) waits for the downlink, and its old route, if
//     any, is deleted: a route the old way would send the prefix's
//     traffic to the wrong client.
//   - Flush writes the changes since the last Flush, each route and
//     entry once, in batches of Config.Batch (one per binding manager
//     batch in the daemon). Deleting a route that is gone (ESRCH) or an
//     entry that is gone (ENOENT) counts as done; a route is written
//     with NLM_F_REPLACE, so an existing one (EEXIST) is replaced in
//     place and a new next hop never leaves a gap. A delete names
//     Protocol: the kernel deletes only pdrelay's route of the prefix,
//     never an operator's.
//   - Run's first step reconciles (Restore gives it the restored routes):
//     it reads the kernel's routes of Protocol in the table and its
//     neighbour entries, deletes the routes and entries of Protocol no
//     wanted route backs, writes the missing and different ones, and
//     leaves the equal ones alone. A wanted route is never deleted, so
//     traffic keeps flowing across a pdrelay restart or crash (RFC 8987
//     S-1, S-2).
//   - Run repairs the kernel from its events: an interface change makes
//     it look at the downlinks at once, and a downlink that is back (up
//     again, made anew, or that flapped meanwhile: the kernel dropped its
//     routes and entries) gets every route and entry through it written
//     again; a route of Protocol deleted from outside is written again as
//     soon as the kernel says so (the event socket's filter passes only
//     deletions of Protocol's routes asked by another socket than the
//     Router's: its own deletes wake nothing). Events the kernel drops,
//     and what no event tells (a route replaced by hand), are caught by
//     a check every Config.Check (30 s), which reads the routes back and
//     repairs them; the interval grows to 20 times the last check's
//     duration when that is longer (a check takes seconds at 1M routes),
//     so the checks take at most a twentieth of a core. A periodic check
//     waits for a second without route writes, for at most ten periods:
//     the kernel's dump restarts its walk whenever the table changes, so
//     one taken while bindings pour in costs about the square of the
//     table.
//     Entries deleted by hand are not noticed until their route is.
//   - Close leaves the routes and entries in place by default: the kernel
//     goes on forwarding while pdrelay restarts. With Config.FlushOnStop
//     (kernel.flush_on_stop) it deletes every route of Protocol in the
//     table and every entry of Protocol, a previous run's included.
//
// # What it costs
//
// Measured on the project's 2-core build machine (kernel 6.18), shared
// with other jobs (load average 7 during the runs below), with the
// benchmarks in this package (root; each in a namespace of its own,
// every route with a next hop and MAC of its own, so with an entry):
//
//	go test -c -o kr.bench ./dataplane/kroute/
//	for i in 1 2 3 4 5; do for m in pipelined serial; do
//		./kr.bench -test.run '^$' -test.bench "Program100k/$m\$" -test.benchtime 1x
//	done; done
//	./kr.bench -test.run '^$' -test.bench 'Reconcile100k|Batch|Check100k' -test.count 3
//
// gave (medians):
//
//   - 100k restored routes into an empty kernel (a first start, a
//     reboot): 2.5 s (2.2-3.0 s), some 40k routes and 40k entries a
//     second; 1.4 s (70k routes a second) on a quiet machine. Written one
//     request and ack at a time, as netlink.RouteReplace does, the same
//     took 5.3 s (5.0-6.2 s; 3.5 s quiet): pipelining is 2.3 times
//     faster, run for run. The Router pipelines: as many requests as fit
//     in 256 KiB go in one sendmsg, only the last asks for an ack, and
//     the kernel, which goes on after a refusal, answers only the
//     refusals and that ack. Half the CPU time is the kernel's inserts;
//     building the requests with nl's allocations is a fifth.
//   - A restart with the 100k routes and entries in the kernel: 1.1 s
//     (0.65-1.3 s) to read them back and compare; nothing written.
//   - A Flush of 1,000 new bindings (route and entry each): 12-13 ms; of
//     one: 25 us.
//   - A periodic check at 100k routes: 0.3-0.5 s, most of it the kernel's
//     dump; every 30 s, 1-1.5% of a core. Since the dump is read into a
//     buffer the socket keeps (not through nl.NetlinkSocket.Receive) and
//     the prefixes seen are marked on their entries (not kept in a map),
//     a check allocates 8.2 MB at 100k routes instead of 70.8 MB, and
//     takes 0.68-0.73 of the time it took, alternated with the previous
//     build in three pairs (Check100k: 133-156 ms against 183-230 ms).
//
// # Concurrency
//
// A Router's methods are safe for concurrent use. Add, Update, Delete
// and Flush are meant for one binding sink (the binding manager's
// goroutine); Restore comes before them; Run is one goroutine of its own.
// Flush holds the Router's lock while it writes its changes (one binding
// manager batch); each step of Run holds it for one batch of writes (at
// most Config.Batch changes, some 15-50 ms), so a binding change waits
// at most that long behind a reconcile. Run's reads of the
// kernel (a check's dump of 100k routes) hold no lock and use a socket
// of their own: a prefix written meanwhile keeps the state its write
// left. Writes go over one netlink socket, reads over another, events
// over a third; the kernel side serializes its callers per socket.
package kroute
