// Package replay runs a captured trace through pdrelay's real forwarding
// function offline, or sends it out of an interface live (see Live
// replay below): `pdrelay replay`. Offline, it reads a pcap or pcapng
// file of Ethernet frames, decides every frame with dataplane.Forwarder.ForwardBatch
// on a FIB built from a set of bindings (the JSON `pdrelay bindings --json`
// prints, or fetched from a running relay) and the relay's config, and
// writes what would leave the relay (forwarded frames with their rewritten
// MACs and hop limits, and the ICMPv6 errors it would send) to a pcapng
// file, one interface per port, together with a summary of the verdicts by
// the dataplane's reason names.
//
// The output's interfaces are the ports in config order (the uplink
// first), each named as its port, so that `tshark -T fields -e
// frame.interface_name` shows the egress port; each frame keeps the
// timestamp of the captured frame it came from.
//
// # Where the ports come from
//
// The ports, their kinds and policies are those of a pdrelay config
// (control/config, `-c pdrelay.yaml`): the uplink and its no_route, each
// downlink's link_type, loop_policy, loop_icmp, loop_overrides and
// allowed_sources. What the config does not hold is given by flags: each
// port's MAC (--mac NAME=MAC, required for every port; the relay reads it
// from the interface) and the uplink gateway's MAC (--gateway-mac; without
// it there is no default route). Each port's ICMPv6 source is its EUI-64
// link-local address, derived from its MAC as the kernel does by default.
//
// A frame's ingress port is the port named by --in, for the whole
// capture, or else the port whose MAC is the frame's destination MAC. A
// frame that matches no port (a multicast frame, another host's unicast)
// is counted as "unmatched" and not forwarded; a frame the capture cut
// short (capture length < wire length) is counted as "truncated".
//
// # What the replay does not model
//
// Lifetimes: every binding given is routed, whatever its remaining
// lifetime; the bindings describe the FIB at one moment, and a replay
// uses that FIB for the whole capture. Frames for the kernel (ToKernel)
// are counted under their reason and not written: the kernel decides
// them, not pdrelay.
//
// The XDP program in front of the live plane passes frames for the
// relay's own addresses to the kernel before the dataplane sees them; the
// replay does not know those addresses, so such a frame is decided like
// any other (a client's ping of the relay's uplink address takes the
// default route). Checksum completion (PortConfig.CompleteChecksums) is
// off: a capture holds frames as the wire saw them, and the live relay
// turns it on only for virtual devices.
//
// # Determinism
//
// The dataplane's clock (ICMPv6 rate limit) is the capture's timestamp of
// each frame; nothing reads the wall clock, and the output file's
// section and interface headers carry no host information, so the same
// input gives byte-identical output.
//
// # Live replay
//
// With --interface (Live) the command sends the capture's frames out of
// a network interface instead, as tcpreplay does, through a TX-only
// AF_XDP socket (dataplane/xsk) with a UMEM of its own: zero-copy where
// the driver has it, copy mode elsewhere (veth). The frames are sent as
// captured: the forwarding function does not run (to send what the
// relay would emit, replay offline with --out and replay that file live;
// its frames of every egress port then leave by the one interface).
//
//   - Pacing (--rate): original (the default) sends frame i at the
//     capture offset of frame i from the first frame; N (frames per
//     second, 2.5k and 1M forms too) sends frame g of the whole replay at
//     g/N s; max sends as fast as the kernel takes frames, 64 per system
//     call. Frames due together (equal timestamps, or after a late
//     wake-up) go in one batch; a frame stamped before its predecessor is
//     sent right after it; nothing is sent early.
//   - The clock: the sending thread sleeps in the kernel (timer slack
//     1 ns) until 200 µs before a frame is due, then polls the clock.
//     --realtime runs it under SCHED_FIFO for the paced rates, so that a
//     wake-up does not wait behind other tasks on a busy machine
//     (bench/results/issue15-replay.txt has the figures); it is off by
//     default because a real-time thread spinning at a high fixed rate
//     takes its CPU from everything else.
//   - Loops (--loop K): the capture is sent K times (default 1); 0
//     repeats it until SIGINT or SIGTERM (then exit 0; an interrupt
//     before K loops are done prints the summary too and exits 130). At
//     the original timing loop k starts k capture-lengths (first to last
//     timestamp) after the start, so the last frame of a loop and the
//     first of the next go together.
//   - The capture is read into memory first (as tcpreplay
//     --preload-pcap), so that reading it costs nothing while sending.
//     Frames that cannot be sent are counted and left out: larger than
//     the UMEM frame (4096 bytes), larger than the interface's MTU plus
//     an Ethernet header and a VLAN tag, shorter than an Ethernet header,
//     or on a pcapng interface that is not Ethernet. Frames the capture
//     cut short are sent as captured, and counted.
//   - The summary (text, or --json): frames sent and their bytes, the
//     rate achieved in pps and bit/s (Ethernet bytes without preamble and
//     FCS, from the first frame to the kernel's last completion), and for
//     paced rates the timing error |sent - scheduled| of every frame
//     (max, p99, p50, and how many were over 1 ms; "sent" is when the
//     system call that handed the frame to the kernel returned: in copy
//     mode the frame has left by then). A progress line goes to stderr
//     every second once a replay has run for two seconds, when stderr is
//     a terminal or with --progress.
//
// # Concurrency
//
// Run is a function of its arguments: it may be called from several
// goroutines at once, each with its own Options. It forwards on one
// goroutine. Live sends on the calling goroutine, locked to its OS
// thread for the duration; several Live calls may run at once on
// different interfaces or queues.
package replay
