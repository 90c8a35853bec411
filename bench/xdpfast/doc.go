// Package xdpfast is a prototype, for the forwarding harness only, of a
// fast path that forwards in XDP itself instead of in userspace: the
// delegated prefixes and the allowed sources live in BPF maps, the
// program checks the source of a frame from a downlink, looks up the
// destination, drops a loop, decrements the hop limit, rewrites the MAC
// addresses and sends the frame out of its port with XDP_REDIRECT
// through a device map. Everything else (neighbour discovery, DHCPv6,
// link-local and multicast destinations, hop limit 1, destinations with
// no route) goes to the kernel with XDP_PASS.
//
// It exists to measure what such a path costs per packet against
// AF_XDP in copy mode, which allocates and copies an skb for every
// frame it transmits, and against Linux forwarding. It is not the
// plane: it has no ICMPv6 errors, no loop overrides, no neighbour
// learning and no counters beyond four verdicts.
//
// On veth, XDP_REDIRECT into an interface needs its peer to run NAPI,
// which it does when an XDP program is attached to the peer (the
// harness's counting sink has one). Physical NICs have no such
// condition.
//
// A Fast is set up (ports, routes, sources) before and while the
// program runs; its methods are not safe for concurrent use, the maps
// themselves are.
package xdpfast
