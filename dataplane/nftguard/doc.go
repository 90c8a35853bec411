// Package nftguard keeps the kernel from forwarding what pdrelay's
// dataplane would drop as spoofed. In the xdp modes the XDP program hands
// some frames to the kernel instead of the AF_XDP plane: a hop-by-hop
// header, UDP to or from port 546 or 547, ICMPv6 types 133-137, hop limit
// 1 or less, link-local and multicast destinations, the relay's own
// addresses, and every frame of a receive queue that has no AF_XDP
// socket. With IPv6 forwarding on in the relay's namespace (as on any
// router) the kernel forwards those it can route, and checks no source.
// The guard checks it in nf_tables, with the same sources as the FIB.
//
// # The table
//
// The guard owns one table, family ip6, named "pdrelay" (Config.Table):
//
//	table ip6 pdrelay {
//		counter drops_dl0 { }                  # one per downlink
//		map ports { type ifname : verdict; elements = { "dl0" : jump port_dl0, ... } }
//		set src_dl0_56 { type ipv6_addr; }      # one per (downlink, prefix length in use)
//		chain forward {
//			type filter hook forward priority filter; policy accept;
//			iifname vmap @ports
//		}
//		chain port_dl0 {
//			ip6 saddr & ffff:ffff:ffff:ff00:: == @src_dl0_56 accept
//			...                                 # one rule per length
//			counter name "drops_dl0" drop
//		}
//	}
//
// Traffic from other interfaces (the uplink) meets the chain's policy,
// accept: the guard never decides for it, and an operator's own tables
// still see everything (an accept here ends only this table's chain).
// The sets hold masked prefixes in plain hash sets, not interval sets:
// measured with nft(8) on kernel 6.18, 1M /56s took 33 s and some 500 MB
// in one interval set, 4.2 s and some 110 MB as masked addresses in a hash
// set. A set and its rule are created with the first prefix of their
// length on the port, in the same transaction; an emptied set stays until
// the table is next rebuilt.
//
// # What it guarantees
//
//   - From New until Close, a packet the kernel forwards that arrived on
//     a downlink leaves only if its source lies in a prefix the Guard was
//     given for that port (Add, Restore, Port.AllowedSources); the others
//     are dropped and counted per port (Drops). Packets the kernel
//     delivers locally (DHCPv6 to the relay, ND) are not touched: they
//     never reach the forward hook. Neither are packets the AF_XDP plane
//     forwards: it checks sources itself.
//   - It fails closed. New replaces any table of its name (one a crashed
//     relay left) in the same transaction that creates the new one, so
//     there is no moment without a table; the new one allows only the
//     allowed_sources until Run has written the restored bindings, and
//     the restored clients' traffic through the kernel is dropped until
//     then (some 3 s at 1M bindings).
//   - The kernel follows the desired state, which is kept in the Guard:
//     a count of holders per (port, prefix), so the same prefix held by a
//     binding and by allowed_sources goes only when both let go. Flush
//     writes the changes since the last Flush as one netlink transaction
//     (several above Config.Batch changes); a transaction is applied
//     whole or not at all. If one fails the Guard logs it and Run
//     rebuilds the table from the desired state (a fresh table first,
//     which drops all downlink traffic through the kernel until it is
//     written again): no failed element can leave the kernel out of
//     step.
//   - Every Config.Check (5 s) Run checks that the table exists and that
//     its chains hold the rules the Guard wrote, and rebuilds it if not
//     (an operator's `nft flush ruleset`, `nft -f` of a file that starts
//     with it, a deleted or flushed chain). Until then the kernel
//     forwards unchecked. Elements deleted or added by hand are not
//     noticed.
//
// It does not cover IPv4 (pdrelay relays and routes IPv6 only; IPv4 that
// the kernel forwards is the operator's policy), nor the time after Close,
// which deletes the table: a stopped relay detaches its XDP program too,
// and then the kernel forwards everything it routes.
//
// # What it costs
//
// Measured on the project's 2-core build machine (kernel 6.18), with the
// benchmarks in this package (root; each in a namespace of its own):
//
//	go test -run '^$' -bench Fill1M -benchtime 1x ./dataplane/nftguard/
//	go test -run '^$' -bench Batch ./dataplane/nftguard/
//
// gave:
//
//   - Filling 1M /56 sources (a restart): 2.1-3.7 s beside the running
//     relay, in 123 transactions of 8,192; some 70 MiB of kernel slab;
//     67 B of Go heap per source for the desired state.
//   - A batch of 1,000 changes: 1.6-3.1 ms (into an empty table and into
//     one of 1M); a batch of one change, 25 us. The Guard keeps one
//     netlink socket open: closing a NETLINK_NETFILTER socket costs the
//     kernel some 7 ms, and a socket per transaction made a batch of one
//     change cost 7 ms too.
//   - Per packet, only for packets the kernel forwards from a downlink:
//     one verdict-map lookup by input interface, then per prefix length
//     in use on the port a mask and a hash lookup. The AF_XDP path does
//     not pass the kernel and costs nothing more.
//
// # Concurrency
//
// A Guard's methods are safe for concurrent use. Add, Delete and Flush
// are meant for one binding sink (the binding manager's goroutine); Run
// is one goroutine of its own; Drops may be called from anywhere (a
// metrics scrape). Flush and each step of Run hold the Guard's lock for
// one netlink transaction (at most Config.Batch changes, some 30 ms at
// the default), so a binding change waits at most that long behind the
// fill. The kernel side uses one netlink socket, which every call
// serializes on.
package nftguard
