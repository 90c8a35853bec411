// Package replay runs a captured trace through pdrelay's real forwarding
// function offline: `pdrelay replay`. It reads a pcap or pcapng file of
// Ethernet frames, decides every frame with dataplane.Forwarder.ForwardBatch
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
// # Concurrency
//
// Run is a function of its arguments: it may be called from several
// goroutines at once, each with its own Options. It forwards on one
// goroutine.
package replay
