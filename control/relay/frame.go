package relay

import (
	"github.com/pdrelay/pdrelay/internal/csum"

	"encoding/binary"
	"errors"
	"net/netip"
)

// ErrFrame is returned for a frame that is not Ethernet/IPv6/UDP to port
// 547 with consistent lengths.
var ErrFrame = errors.New("not a DHCPv6 server-port frame")

// ErrChecksum is returned for a frame whose UDP checksum is wrong, or zero
// (which IPv6 does not allow, RFC 8200 section 8.1).
var ErrChecksum = errors.New("bad UDP checksum")

// Checksum is what the kernel said of a received frame's UDP checksum
// (PACKET_AUXDATA's tp_status).
type Checksum uint8

// Checksum states.
const (
	// ChecksumUnknown: nobody checked it; ParseClientFrame does.
	ChecksumUnknown Checksum = iota
	// ChecksumPartial: a local sender (a veth or another virtual device's
	// peer) left it for "hardware" to finish (TP_STATUS_CSUMNOTREADY).
	// The frame never crossed a wire, so it is not corrupt; the field
	// holds only the pseudo-header's sum.
	ChecksumPartial
	// ChecksumValid: the NIC verified it (TP_STATUS_CSUM_VALID).
	ChecksumValid
)

const (
	ethLen  = 14
	ip6Len  = 40
	udpLen  = 8
	etherV6 = 0x86dd
	protUDP = 17
)

// ClientFrame is what the relay needs from a client's frame.
type ClientFrame struct {
	SrcMAC  [6]byte
	Src     netip.Addr
	Dst     netip.Addr
	SrcPort uint16
	Payload []byte // aliases the frame
}

// ParseClientFrame decodes an Ethernet frame carrying IPv6/UDP to port
// 547, by offsets and without allocating, and verifies its UDP checksum
// unless cs says the kernel vouches for it. Extension headers are not
// followed (DHCPv6 from clients carries none).
func ParseClientFrame(f []byte, cs Checksum) (ClientFrame, error) {
	if len(f) < ethLen+ip6Len+udpLen ||
		binary.BigEndian.Uint16(f[12:14]) != etherV6 ||
		f[ethLen]>>4 != 6 || f[ethLen+6] != protUDP {
		return ClientFrame{}, ErrFrame
	}
	ip := f[ethLen:]
	plen := int(binary.BigEndian.Uint16(ip[4:6]))
	if plen < udpLen || len(ip) < ip6Len+plen {
		return ClientFrame{}, ErrFrame
	}
	udp := ip[ip6Len : ip6Len+plen]
	ulen := int(binary.BigEndian.Uint16(udp[4:6]))
	if binary.BigEndian.Uint16(udp[2:4]) != 547 || ulen < udpLen || ulen > len(udp) {
		return ClientFrame{}, ErrFrame
	}
	if cs == ChecksumUnknown && !udpChecksumOK(ip[8:40], udp[:ulen]) {
		return ClientFrame{}, ErrChecksum
	}
	return ClientFrame{
		SrcMAC:  [6]byte(f[6:12]),
		Src:     netip.AddrFrom16([16]byte(ip[8:24])),
		Dst:     netip.AddrFrom16([16]byte(ip[24:40])),
		SrcPort: binary.BigEndian.Uint16(udp[0:2]),
		Payload: udp[udpLen:ulen],
	}, nil
}

// udpChecksumOK reports whether the UDP datagram d (header and data) sent
// between the addresses in addrs (source then destination, 32 bytes) has
// a correct, non-zero checksum: the one's complement sum of the IPv6
// pseudo-header (RFC 8200 section 8.1) and the datagram is all ones.
func udpChecksumOK(addrs, d []byte) bool {
	if binary.BigEndian.Uint16(d[6:8]) == 0 {
		return false
	}
	s := csum.Sum(addrs) + uint64(len(d)) + protUDP + csum.Sum(d)
	return csum.Fold(s) == 0xffff
}
