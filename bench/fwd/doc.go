// Package fwd is the forwarding harness: it measures how many packets per
// second the relay forwards end to end, what each packet costs in CPU
// time, and what it loses where, for pdrelay's AF_XDP plane against Linux
// forwarding and against the least an AF_XDP forwarder can do, in one
// topology and one run. bench/cmd/fwdbench is its command (make
// bench-quick, make bench); TestHarnessShort runs it in make test with a
// few thousand packets, asserting counts and verdicts, never speed.
//
// # Topology
//
// A bench/lab topology of its own (namespaces named pdl-<pid>-<hex>-fh*,
// removed by Close, also after an error; fwdbench removes them on SIGINT
// and SIGTERM): the cpe host (c0, eth0) on the relay's downlink dl0, the
// relay namespace (forwarding on: it models the router), the core host
// (srv, eth0) on the relay's uplink up0. Every host keeps its default
// offloads; the only sysctls set are inside these namespaces (the lab's).
// With Config.Queues > 1 every veth has that many rx and tx queues.
//
// On a machine with NIC ports, Config.Phys (fwdbench -phys
// up0=A:B,dl0=C:D; make bench-quick FWDFLAGS=...) lends the harness two
// pairs of ports cabled to each other in place of the veth pairs: A and
// C go into the relay namespace as up0 and dl0, B and D into the core
// and cpe hosts as eth0, each with the lab's MAC, and Close gives them
// back with their names, MACs and up state (lab.Config.Phys). The AF_XDP
// sides then bind in zero-copy where the driver offers it, and no
// receiving host's stack runs on the relay's core; the rest of the
// harness is the same. Queues does not change a NIC's channels (set them
// with ethtool beforehand to match dataplane.queues).
//
// # Bindings
//
// N delegated /56s reach pdrelay through its real control path: at every
// start, Bulk Leasequery (RFC 5460) to `pdrelay lqserver` in the core
// namespace, which reads bench/cmd/fakekea's generated Kea leases. All
// leases name dl0 and one next hop, the cpe host's real link-local
// address and MAC, so forwarded frames reach it addressed to it. The
// store is emptied before each start; a side is up when pdrelay's
// pdrelay_bindings gauge says N and, in kernel mode, N routes of
// protocol 157 exist; then Ready sends probes in both directions until
// they arrive in full (neighbours resolved, routes published).
//
// # Sides
//
//   - linux: pdrelay with dataplane.mode kernel. Linux forwards; pdrelay
//     writes a route per prefix and its nftables source and loop table.
//     This is the Linux baseline.
//   - pdrelay: dataplane.mode xdp (AF_XDP; copy mode on veth, zero-copy
//     on a NIC whose driver offers it), with
//     dataplane.queues = Config.Queues.
//   - xdpfast: bench/cmd/xdpfast, the prototype XDP fast path
//     (bench/xdpfast): sources and routes in BPF maps, XDP_REDIRECT
//     through a devmap, no AF_XDP. Skipped with the UDP sink (a veth
//     takes XDP_REDIRECTed frames only when its peer runs XDP).
//   - ceiling: bench/cmd/xskfwd, AF_XDP rx on one port and tx on the
//     other with no lookup: what AF_XDP allows on this path. Skipped when
//     the command is not in the tree.
//   - floor: nothing forwards; a count-and-drop XDP program on the relay's
//     ingress port takes the frames. Its peak is the generator's own
//     ceiling, its CPU time the floor of the CPU figure.
//
// pdrelay and xskfwd are pinned to Config.RelayCPU (taskset), the
// generator to Config.GenCPU. Rounds alternate the sides (A B C D, then
// D C B A, ...).
//
// # Traffic and counting
//
// trafgen (netsniff-ng), one process (-P 1), sends a generated config of
// explicit Ethernet/IPv6/UDP frames (Traffic.Frames: one frame per flow,
// flows spread over the N prefixes, spoofed frames interleaved at the
// given share with sources in 2001:db8:ff00::/40, outside every prefix;
// checksums computed here). Upstream the cpe host sends from delegated
// addresses to the core host; downstream the core host sends to them.
// Frame sizes count the frame as handed to the device, without FCS (62
// bytes is the least: Ethernet, IPv6, UDP).
//
//   - Offered: the generator's interface tx counter (netlink, IFLA_STATS64), not
//     trafgen's word.
//   - Delivered: the sink's count. The default sink is an XDP program on
//     the sink host's veth that counts legitimate (UDP port 9000) and
//     spoofed (9001) frames in a per-CPU array and drops them, and passes
//     everything else, so the receiving stack costs almost nothing. Sink
//     "udp" counts with sockets instead: a normal stack receives (the
//     cpe host takes the delegated space as local).
//   - Rates come from a window after a warm-up; loss from the totals of
//     the whole run, after the frames in flight arrived.
//   - At peak the generator is trafgen. At the fixed rate it is `pdrelay
//     replay --rate R --burst 32 --loop 0` (control/replay's live mode):
//     the same frames in the same order, from a pcap, through an AF_XDP
//     socket, 32 at a time every 32/R seconds, sleeping in between. trafgen's --rate (netsniff-ng 0.6.8) sends
//     each second's frames as one burst at full speed, and its --gap
//     stopped sending after about a second here, so loss under it would
//     be loss under bursts, not the knee. The floor uses the same
//     generator at the same rate, so the CPU figure subtracts its cost.
//   - pdrelay's counters (GET /v1/stats, as `pdrelay stats --json`:
//     dataplane reasons and the xsk_* reasons of XDP_STATISTICS; in
//     kernel mode the nftables table's) are read before and after each
//     run; the report shows the nonzero increases other than forwarded
//     and spoofed, and checks spoofed frames: sent, through to the sink
//     (must be 0 for linux and pdrelay), counted as spoofed by pdrelay.
//
// # CPU per packet
//
// At a fixed rate below every side's peak: the machine's busy time over
// all cores in the window (cores × time less /proc/stat's idle and
// iowait, which a tickless kernel measures at each idle entry and exit;
// the user, system and softirq fields are sampled at the tick and alias
// with a periodic sender), per second, minus the floor's at the same rate in the same
// round, divided by the delivered rate. It counts everything the relay
// causes wherever it runs (the kernel's softirqs on the generator's core
// included) and, on a shared machine, everything else too: the figure is
// only as good as the machine is quiet, which the busy column shows.
//
// # What to read
//
// The ratios (pdrelay/linux, pdrelay/ceiling) of peak delivered rates,
// per round then the median, not the absolute rates; the generator's
// ceiling (a side close to it is limited by the generator, not by
// itself); loss at the fixed rate (the knee lies above it); the drops by
// stage, which say where the frames that did not arrive were lost.
//
// # Concurrency
//
// A Harness and its sides are used by one goroutine. Abort may be
// called from another (a signal handler) to tear the topology down.
package fwd
