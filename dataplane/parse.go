package dataplane

import "encoding/binary"

// Offsets into an untagged Ethernet II frame carrying IPv6. The packet path
// reads headers at these fixed offsets; nothing is decoded into structs.
const (
	offDstMAC    = 0
	offSrcMAC    = 6
	offEtherType = 12
	offIP6       = 14              // start of the IPv6 header
	offPayLen    = offIP6 + 4      // IPv6 payload length
	offNextHdr   = offIP6 + 6      // IPv6 next header
	offHopLimit  = offIP6 + 7      // IPv6 hop limit
	offSrc       = offIP6 + 8      // IPv6 source address
	offDst       = offIP6 + 24     // IPv6 destination address
	offL4        = offIP6 + ip6Len // first byte after the fixed IPv6 header

	ethLen       = 14
	ip6Len       = 40
	etherTypeIP6 = 0x86dd
	minFrame     = offL4 // Ethernet header and fixed IPv6 header

	protoHopByHop = 0
	protoICMPv6   = 58
)

// parse checks that frame is an untagged Ethernet frame carrying one whole
// IPv6 packet: long enough for the fixed headers, IP version 6, and at
// least as long as the IPv6 payload length says (a longer frame is
// Ethernet padding). It returns Forwarded (0) for such a frame, else
// NotIPv6 or Malformed. It allocates nothing and touches only the first
// 54 bytes.
func parse(frame []byte) Reason {
	if len(frame) < ethLen {
		return Malformed
	}
	if binary.BigEndian.Uint16(frame[offEtherType:]) != etherTypeIP6 {
		return NotIPv6
	}
	if len(frame) < minFrame || frame[offIP6]>>4 != 6 {
		return Malformed
	}
	if minFrame+int(binary.BigEndian.Uint16(frame[offPayLen:])) > len(frame) {
		return Malformed
	}
	return Forwarded
}

// ipLen returns the length of the IPv6 packet in a frame that parse
// accepted: the fixed header and the payload, without Ethernet padding.
func ipLen(frame []byte) int {
	return ip6Len + int(binary.BigEndian.Uint16(frame[offPayLen:]))
}

// linkScope reports whether an IPv6 address (network byte order) is
// multicast (ff00::/8) or link-local unicast (fe80::/10): a router never
// forwards a packet to or from such an address (RFC 4291 section 2.5.6).
func linkScope(a *[16]byte) bool {
	return a[0] == 0xff || a[0] == 0xfe && a[1]&0xc0 == 0x80
}

// badSource reports whether a is never a valid source of a forwarded
// packet: multicast, link-local, unspecified (::) or loopback (::1).
func badSource(a *[16]byte) bool {
	if linkScope(a) {
		return true
	}
	return binary.BigEndian.Uint64(a[:8]) == 0 && binary.BigEndian.Uint64(a[8:]) <= 1
}
