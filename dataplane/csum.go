package dataplane

import (
	"github.com/pdrelay/pdrelay/internal/csum"

	"encoding/binary"
)

// CompleteChecksum completes a partial UDP or TCP checksum of the IPv6
// packet in an Ethernet frame, as a Forwarder does for the frames it
// forwards from a port with CompleteChecksums, and reports whether it
// changed the frame (the two checksum bytes, nothing else). A frame that
// is not one whole IPv6 packet is left alone. It allocates nothing. Code
// that forwards frames without a Forwarder (test forwarders) uses it.
//
// A Linux host sending UDP or TCP through a virtual device (veth, tun, a
// virtio NIC, ...) does not finish the upper-layer checksum: it leaves it
// for the "hardware" (CHECKSUM_PARTIAL), writing into the checksum field
// the folded, NOT complemented, sum of the pseudo-header (RFC 8200
// section 8.1: source, destination, upper-layer length, next header). A
// virtual device hands such a packet to its peer with a mark saying so,
// but XDP and AF_XDP drop the mark: the frame reaches the dataplane with
// the partial checksum in it, and a receiver behind it would discard the
// packet. CompleteChecksum finishes what the hardware would have, by
// these rules:
//
//   - The upper layer is found by walking the extension headers the
//     dataplane knows (hop-by-hop, routing, destination options, AH; at
//     most 8). A fragment header, ESP, an unknown header, or one cut
//     short leaves the packet alone: a fragment's checksum covers the
//     whole datagram, and the others cannot be followed.
//   - Only UDP (17) and TCP (6) are completed. The upper-layer length is
//     UDP's own length field (RFC 8200 8.1), which must be at least 8 and
//     fit in the packet, and for TCP the rest of the packet, at least the
//     20-byte header. UDP length 0 (a jumbogram) is left alone, and so is
//     TCP whose data offset is below 5 or beyond the segment.
//   - The pseudo-header's destination is the IPv6 destination, or, behind
//     a routing header with segments left, the final destination it
//     names: the first address of a type 2 (RFC 6275) or type 4 (segment
//     routing, RFC 8754: Segment List[0]) header. Other routing types
//     with segments left, and a second routing header, are left alone.
//   - The checksum field is compared with P, the folded pseudo-header
//     sum. When it differs, nothing else is read: this is the common case
//     (a complete checksum, correct or not, equals P about once in 65536
//     packets), and all it costs is the pseudo-header sum.
//   - When it equals P, the whole checksum is computed over the
//     pseudo-header and the upper-layer bytes. If the field already
//     verifies (a correct checksum that happens to equal P), the packet is
//     left alone; otherwise the full checksum is stored, 0xffff for a UDP
//     checksum that computes to 0 (RFC 768; 0 means "none" for UDP).
//   - A UDP checksum of 0 is not partial (P is never 0) and stays.
//
// A corrupt checksum that happens to equal P is "completed" too (about
// one corrupt frame in 65536), which is why only ports whose driver can
// hand over partial checksums complete them (PortConfig.CompleteChecksums).
// Frames from real NICs are complete and have passed the Ethernet FCS.
func CompleteChecksum(frame []byte) bool {
	return parse(frame) == Forwarded && completeChecksum(frame)
}

// The upper layers whose checksums are completed, the offsets of their
// checksum fields, and the extension headers followed to find them.
const (
	protoTCP      = 6
	protoUDP      = 17
	udpHdrLen     = 8
	tcpHdrLen     = 20 // without options
	offUDPCsum    = 6
	offTCPCsum    = 16
	protoRouting  = 43
	protoFragment = 44
	protoAH       = 51
	protoDstOpts  = 60
)

// extMax is the most extension headers completeChecksum follows.
const extMax = 8

// completeChecksum completes a partial UDP or TCP checksum of the IPv6
// packet in frame, which parse accepted, by the rules of CompleteChecksum.
// It reports whether it wrote the checksum field; it writes nothing else.
// It allocates nothing. The common case, UDP or TCP right after the IPv6
// header with a checksum other than P, is written out here: one call.
func completeChecksum(frame []byte) bool {
	nh, off, dst := frame[offNextHdr], offL4, (*[16]byte)(frame[offDst:offDst+16])
	if nh != protoUDP && nh != protoTCP {
		var ok bool
		if nh, off, dst, ok = upperLayer(frame); !ok {
			return false
		}
	}
	end := offIP6 + ipLen(frame)
	var n, at int
	if nh == protoUDP {
		if off+udpHdrLen > end {
			return false
		}
		n, at = int(binary.BigEndian.Uint16(frame[off+4:])), off+offUDPCsum
		if n < udpHdrLen || off+n > end {
			return false
		}
	} else {
		n, at = end-off, off+offTCPCsum
		if n < tcpHdrLen {
			return false
		}
	}
	p := fold47(addrSum((*[16]byte)(frame[offSrc:offSrc+16])) + addrSum(dst) + uint64(n) + uint64(nh))
	if binary.BigEndian.Uint16(frame[at:]) != p {
		return false
	}
	return complete(frame, off, n, nh, at, p)
}

// upperLayer walks the extension headers of the IPv6 packet in frame to
// its upper layer, and returns its protocol (UDP or TCP: ok), its offset
// and the pseudo-header's destination, by the rules of CompleteChecksum.
func upperLayer(frame []byte) (nh uint8, off int, dst *[16]byte, ok bool) {
	end := offIP6 + ipLen(frame)
	nh, off, dst = frame[offNextHdr], offL4, (*[16]byte)(frame[offDst:offDst+16])
	routed := false
	for range extMax + 1 { // the headers and the upper layer
		switch nh {
		case protoUDP, protoTCP:
			return nh, off, dst, true
		case protoHopByHop, protoDstOpts:
			if off+8 > end {
				return 0, 0, nil, false
			}
			nh, off = frame[off], off+(int(frame[off+1])+1)*8
		case protoRouting:
			if off+8 > end || routed {
				return 0, 0, nil, false
			}
			routed = true
			next := off + (int(frame[off+1])+1)*8
			if frame[off+3] != 0 { // segments left: the final destination is in the header
				if t := frame[off+2]; t != 2 && t != 4 || next > end || frame[off+1] < 2 {
					return 0, 0, nil, false
				}
				dst = (*[16]byte)(frame[off+8 : off+24])
			}
			nh, off = frame[off], next
		case protoAH:
			if off+8 > end {
				return 0, 0, nil, false
			}
			nh, off = frame[off], off+(int(frame[off+1])+2)*4
		case protoFragment: // the checksum covers the reassembled datagram
			return 0, 0, nil, false
		default: // ESP, no next header, another upper layer
			return 0, 0, nil, false
		}
	}
	return 0, 0, nil, false
}

// complete finishes the n-byte upper-layer packet (protocol proto) at
// frame[off:], whose checksum field at frame[at:] holds its pseudo-header
// sum p: it stores the full checksum unless p already verifies.
func complete(frame []byte, off, n int, proto uint8, at int, p uint16) bool {
	if proto == protoTCP {
		if hl := int(frame[off+12]>>4) * 4; hl < tcpHdrLen || hl > n {
			return false // a data offset no receiver accepts
		}
	}
	// The field holds P: sum the upper layer as it is, P included, which
	// is the pseudo-header and the data with a zero field.
	s := csum.Fold(csum.Sum(frame[off : off+n]))
	if csum.Fold(uint64(s)+uint64(p)) == 0xffff {
		return false // P is the correct checksum: it verifies as it stands
	}
	c := ^s
	if c == 0 && proto == protoUDP {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(frame[at:], c)
	return true
}

// fold47 is fold for a sum below 2^47 (the pseudo-header's is below
// 2^36), in three steps without a loop.
func fold47(s uint64) uint16 {
	s = s&0xffff + s>>16 // < 2^31 + 2^16
	s = s&0xffff + s>>16 // < 0x18000
	s = s&0xffff + s>>16 // <= 0xffff
	return uint16(s)
}

// addrSum is the ones' complement sum of an IPv6 address as 32-bit words,
// to be folded: the same as summing its 16-bit words.
func addrSum(a *[16]byte) uint64 {
	h, l := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
	return h>>32 + h&0xffffffff + l>>32 + l&0xffffffff
}
