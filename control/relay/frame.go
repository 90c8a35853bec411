package relay

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// ErrFrame is returned for a frame that is not Ethernet/IPv6/UDP to port
// 547 with consistent lengths.
var ErrFrame = errors.New("not a DHCPv6 server-port frame")

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
// 547, by offsets and without allocating. Extension headers are not
// followed (DHCPv6 from clients carries none).
func ParseClientFrame(f []byte) (ClientFrame, error) {
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
	return ClientFrame{
		SrcMAC:  [6]byte(f[6:12]),
		Src:     netip.AddrFrom16([16]byte(ip[8:24])),
		Dst:     netip.AddrFrom16([16]byte(ip[24:40])),
		SrcPort: binary.BigEndian.Uint16(udp[0:2]),
		Payload: udp[udpLen:ulen],
	}, nil
}
