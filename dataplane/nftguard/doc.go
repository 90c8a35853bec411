// Package nftguard keeps pdrelay's source filter (BCP 38, RFC 8987 R-3)
// and, in kernel mode, its loop prevention in nf_tables, for the
// packets the Linux kernel forwards. It has two uses.
//
// In the xdp modes the XDP program hands some frames to the kernel
// instead of the AF_XDP plane: a hop-by-hop header, UDP to or from port
// 546 or 547, ICMPv6 types 133-137, hop limit 1 or less, link-local and
// multicast destinations, the relay's own addresses, and every frame of a
// receive queue that has no AF_XDP socket. With IPv6 forwarding on in the
// relay's namespace (as on any router) the kernel forwards those it can
// route, and checks no source. The guard checks it, with the same sources
// as the FIB.
//
// In kernel mode (dataplane.mode: kernel, Config.Kernel) the kernel
// forwards everything, along the routes dataplane/kroute programs, and
// the guard is the router's whole anti-spoofing and loop prevention.
//
// # The table
//
// The guard owns one table, family ip6, named "pdrelay" (Config.Table).
// In the xdp modes:
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
// Kernel mode adds the loop check and the counters, and gives the element
// sets a generation suffix (_g2):
//
//	table ip6 pdrelay {
//		counter drops_dl0, loop_dl0, icmp_dl0, icmprl_dl0, fwd_dl0 { }   # per downlink; fwd_up0 for the uplink
//		map ports { ... }
//		map outs { type ifname : verdict; elements = { "dl0" : jump fwd_dl0, "up0" : jump fwd_up0, ... } }
//		set src_dl0_56_g2 { type ipv6_addr; }                 # allowed sources, as above
//		set dst_dl0_56_c1_g2 { type ipv6_addr; }              # delegated on point-to-point dl0, client loop code 1
//		set dstm_dl1_56_c1_g2 { type ether_addr . ipv6_addr; } # delegated on multi-access dl1: client MAC . prefix
//		chain forward {
//			type filter hook forward priority filter; policy accept;
//			iifname vmap @ports
//			oifname vmap @outs                 # counts what the port chains let through
//		}
//		chain port_dl0 {
//			ip6 saddr & ffff:ffff:ffff:ff00:: == @src_dl0_56_g2 goto dst_dl0
//			counter name "drops_dl0" drop
//		}
//		chain dst_dl0 {                        # the source is good: is it a loop?
//			oifname != "dl0" return
//			ip6 daddr & ffff:ffff:ffff:ff00:: == @dst_dl0_56_c1_g2 goto lp1_dl0   # per (length, code)
//		}
//		chain dst_dl1 {
//			oifname != "dl1" return
//			ether saddr . ip6 daddr & ffff:ffff:ffff:ff00:: @dstm_dl1_56_c1_g2 goto lp1_dl1
//		}
//		chain lp1_dl0 {                        # client code 1 (default); lp2 drop, lp3 forward
//			ip6 daddr 2001:db8:2400:ff00::/56 goto loop_dl0   # loop_overrides, longest first
//			ip6 daddr 2001:db8:2400::/40 return
//			goto loop_dl0                      # the port's loop_policy: drop (forward: return)
//		}
//		chain loop_dl0 {                       # with loop_icmp
//			counter name "loop_dl0"
//			limit rate over 100/second burst 10 packets counter name "icmprl_dl0" drop
//			counter name "icmp_dl0" reject with icmpv6 reject-route
//		}
//		chain fwd_dl0 { counter name "fwd_dl0" }
//	}
//
// Traffic from other interfaces (the uplink) meets no port chain: the
// guard never drops it, only counts it as forwarded on its output port,
// and an operator's own tables still see everything (an accept here ends
// only this table's chain).
//
// The sets hold masked prefixes in plain hash sets, one per prefix
// length, not interval sets. Measured with nft(8) on kernel 6.18, 1M /56s
// took 33 s and some 500 MB in one interval set, 4.2 s and some 110 MB as
// masked addresses in a hash set; with google/nftables, as the guard
// writes (BenchmarkSetKind), 100k /56s took 0.18-0.23 s and 12 MiB in a
// hash set, 0.71-0.82 s and 20-21 MiB in an interval set. A lookup in a hash
// set costs the same at any size, one per prefix length in use; an
// interval set's grows with it. A set and its rule are created with the
// first element of their kind, length and code on the port, in the same
// transaction; an emptied set stays until the sets are next rebuilt.
//
// # Loops (kernel mode)
//
// A packet from a downlink whose source is allowed is a loop when the
// kernel would send it back out of the same downlink (oifname) to a
// prefix delegated on it (Delegate): on a point-to-point port, any such
// packet; on a multi-access port only one whose source MAC is the MAC of
// the client the prefix is delegated to, the next hop its route goes back
// to. Another client on the segment sending to that prefix is not a loop:
// the kernel forwards the packet back out of the port, as the xdp mode
// does. Until a delegation's MAC is known (Delegation.MAC zero) it has no
// element on a multi-access port, so its loops are not recognised: the
// kernel forwards them back, resolving the client by neighbour discovery.
// The policy is, most specific first: the longest of the port's
// loop_overrides prefixes holding the destination, the client's own
// (Delegation.Loop), the port's loop_policy (default drop). A dropped loop
// is counted (loop), and with loop_icmp answered with an ICMPv6
// Destination Unreachable, code 6, within the port's rate
// (Config.ICMPRate a second, ICMPBurst back to back; beyond it the error
// is held back and counted as icmp_rate_limited). The kernel applies its
// own ICMPv6 rules too: no error for an ICMPv6 error or a multicast
// destination, and its own rate limit (net.ipv6.icmp.ratelimit). A loop
// whose policy is forward goes back out, counted as forwarded. The check
// costs a packet that does not go back out of its port one comparison.
//
// The client's policy picks the element's set (one per code), not a
// verdict map from prefix to chain: the kernel checks every chain a
// jumping verdict map can reach at each commit, walking the whole map (a
// change took 85 ms at 200k elements).
//
// # What it guarantees
//
//   - From New until Close, a packet the kernel forwards that arrived on
//     a downlink leaves only if its source lies in a prefix the Guard was
//     given for that port (Add, Restore, RestoreDelegations,
//     Port.AllowedSources); the others are dropped and counted per port
//     (spoofed). Packets the kernel delivers locally (DHCPv6 to the
//     relay, ND) are not touched: they never reach the forward hook.
//     Neither are packets the AF_XDP plane forwards: it checks sources
//     itself.
//   - In the xdp modes it fails closed: New replaces any table of its
//     name (one a crashed relay left) in the same transaction that
//     creates the new one, so there is no moment without a table; the new
//     one allows only the allowed_sources until Run has written the
//     restored bindings, and the restored clients' traffic through the
//     kernel is dropped until then.
//   - In kernel mode a restart loses no packet (S-1, S-2). Close with
//     Config.Keep leaves the table in force (kernel.flush_on_stop: false);
//     after a crash it is there too. New adopts it: it stays as it is
//     while the Guard writes the restored state (RestoreDelegations) into
//     a new generation of sets beside it, without rules; when that is
//     whole, one transaction rewrites the chains in place to the new sets
//     and deletes the old ones, and with them every element no restored
//     binding backs. Counters keep their counts. Changes made meanwhile
//     go into the new sets: a binding made during the fill is allowed at
//     the switch. A port the old table has no chain for gets one that
//     drops its forwarded traffic at once. Without a table to adopt, New
//     installs one and fails closed as in the xdp modes.
//   - The kernel follows the desired state, which is kept in the Guard:
//     a count of holders per (port, prefix) source, so the same prefix
//     held by a binding and by allowed_sources goes only when both let
//     go; one delegation per (port, prefix). Flush writes the changes
//     since the last Flush as one netlink transaction (several above
//     Config.Batch changes); a transaction is applied whole or not at
//     all. If one fails the Guard logs it and Run repairs: the xdp modes
//     reinstall the table (dropping downlink traffic through the kernel
//     until it is written again); kernel mode writes a new generation of
//     sets beside the live one and switches, with no gap.
//   - Every Config.Check (5 s) Run checks that the table exists and that
//     its chains hold the rules the Guard wrote, and repairs it if not (an
//     operator's `nft flush ruleset`, `nft -f` of a file that starts with
//     it, a deleted or flushed chain): kernel mode rewrites the rules in
//     place at once, then writes a new generation; a table that is gone
//     is installed afresh (fail closed). Until the check the kernel
//     forwards unchecked. Elements deleted or added by hand are not
//     noticed.
//   - Reconfigure applies a reload (ports added or removed, new
//     allowed_sources, link type, loop settings, ICMPv6 rate) in one
//     transaction that rewrites the skeleton in place: the ports that stay
//     are guarded throughout, their elements untouched.
//
// It does not cover IPv4 (pdrelay relays and routes IPv6 only; IPv4 that
// the kernel forwards is the operator's policy), nor the time after a
// Close without Keep, which deletes the table: a stopped relay detaches
// its XDP program too, and then the kernel forwards everything it routes.
//
// # Kernel mode's calls
//
// The daemon creates the Guard with New (Kernel, Keep unless
// kernel.flush_on_stop, the ports with their loop settings), calls
// BeginRestore before its binding sink passes on a change, hands the
// restored bindings to RestoreDelegations, then runs Run. Its binding
// sink calls, per change, Add and Delegate (added), Delegate (a new MAC
// or policy), Delete and Undelegate (removed), then Flush once per
// batch; Counters feeds `pdrelay stats` and /metrics; Reconfigure takes a
// reload; Close ends it.
//
// # What it costs
//
// Measured on the project's 2-core build machine (kernel 6.18, shared
// with other work), with the benchmarks in this package (root; each in a
// namespace of its own):
//
//	go test -run '^$' -bench Fill1M -benchtime 1x ./dataplane/nftguard/
//	go test -run '^$' -bench Batch ./dataplane/nftguard/
//	go test -run '^$' -bench KernelFill -benchtime 1x ./dataplane/nftguard/
//	go test -run '^$' -bench KernelBatch ./dataplane/nftguard/
//	go test -run '^$' -bench SetKind -benchtime 1x ./dataplane/nftguard/
//	go test -run '^$' -bench KernelPPS -benchtime 1x ./dataplane/nftguard/
//
// gave:
//
//   - xdp modes, filling 1M /56 sources (a restart): 2.1-3.7 s beside the
//     running relay, in 123 transactions of 8,192; some 70 MiB of kernel
//     slab; 67 B of Go heap per source for the desired state.
//   - xdp modes, a batch of 1,000 changes: 1.6-3.1 ms (into an empty
//     table and into one of 1M); a batch of one change, 25 us (33-38 us
//     on a busier machine, in the run that compared kernel mode's). The
//     Guard keeps one netlink socket open: closing a NETLINK_NETFILTER
//     socket costs the kernel some 7 ms, and a socket per transaction
//     made a batch of one change cost 7 ms too.
//   - Kernel mode, 100k restored bindings (each a source and a
//     destination element, half of them on a multi-access port): 0.43-0.63
//     s from New to a whole table into no table, 0.56-0.61 s adopting a
//     table of the same bindings (the switch itself 2-3 ms): 317k-470k
//     elements a second; some 21 MiB of kernel slab. 1M bindings: 6.5-10
//     s fresh, 4.8-7.3 s adopting (200k-410k elements a second; switch 2-4
//     ms), some 137 MiB of slab per generation (both live until the
//     switch), 151 B of Go heap per binding.
//   - Kernel mode, a batch of 1,000 binding changes (2,000 elements):
//     3.8-6.8 ms into an empty table, 7.6-11.6 ms into one of 1M; a batch
//     of one binding, 53-112 us.
//   - Per packet, only for packets the kernel forwards from a downlink:
//     one verdict-map lookup by input interface, then per prefix length
//     in use on the port a mask and a hash lookup; in kernel mode then a
//     comparison of the output interface and, for the packets that go
//     back out of their port, a lookup per (length, code) in use; and for
//     every forwarded packet a verdict-map lookup by output interface and
//     a counter. The AF_XDP path does not pass the kernel and costs
//     nothing more. Through veth at some 100k-150k packets a second
//     (BenchmarkKernelPPS, 100k bindings, medians of 30 rotations, three
//     runs on a loaded machine), kernel mode's table forwarded 0.88-0.91
//     of the packets that no table did, the xdp modes' 0.93-0.95; without
//     its forwarded count kernel mode's rate was 1-4% higher. veth costs
//     little per packet, so on a real NIC the tables' share is smaller.
//
// # Concurrency
//
// A Guard's methods are safe for concurrent use. Add, Delete, Delegate,
// Undelegate and Flush are meant for one binding sink (the binding
// manager's goroutine); Run is one goroutine of its own; Drops and
// Counters may be called from anywhere (a metrics scrape); Reconfigure
// from the goroutine that reloads. Flush, Reconfigure and each step of
// Run hold the Guard's lock for one netlink transaction (at most
// Config.Batch changes, some 30 ms at the default), so a binding change
// waits at most that long behind the fill. The kernel side uses one
// netlink socket, which every call serializes on.
package nftguard
