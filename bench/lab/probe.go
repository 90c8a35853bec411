package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Probe is one hand-made IPv6 test frame: UDP, or ICMPv6 of a given type,
// optionally behind a hop-by-hop header, with any source address. Tests
// use probes to send what a host's socket API would not (a spoofed source,
// a hop-by-hop header, an ND type to a global address) and to recognise
// them at the far end by their Tag, whatever checksum offloads did to
// them on the way.
type Probe struct {
	Src, Dst netip.Addr
	HopLimit uint8 // 0 means 64
	// HopByHop puts an 8-byte hop-by-hop options header (one PadN
	// option) before the upper layer.
	HopByHop bool
	// ICMPType, when nonzero, makes the probe ICMPv6 of this type (code
	// 0, then 4 zero bytes and Dst as the target address, as NS and NA
	// have) instead of UDP.
	ICMPType         uint8
	SrcPort, DstPort uint16 // UDP ports
	Tag              uint32 // carried in the payload; tells probes apart
}

// probeMagic follows the tag in every probe's payload.
var probeMagic = []byte("pdrelay-probe")

// Frame returns p as an Ethernet frame from src to dst, with correct
// checksums.
func (p Probe) Frame(src, dst net.HardwareAddr) []byte {
	var l4 []byte
	proto := byte(17) // UDP
	if p.ICMPType != 0 {
		proto = 58
		l4 = []byte{p.ICMPType, 0, 0, 0, 0, 0, 0, 0} // type, code, checksum, reserved
		l4 = append(l4, p.Dst.AsSlice()...)          // target address
	} else {
		l4 = make([]byte, 8) // ports, length, checksum
		binary.BigEndian.PutUint16(l4[0:], p.SrcPort)
		binary.BigEndian.PutUint16(l4[2:], p.DstPort)
	}
	l4 = binary.BigEndian.AppendUint32(l4, p.Tag)
	l4 = append(l4, probeMagic...)
	if proto == 17 {
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	}
	sumAt := 6 // UDP
	if proto == 58 {
		sumAt = 2
	}
	binary.BigEndian.PutUint16(l4[sumAt:], L4Checksum(p.Src, p.Dst, proto, l4))

	hl := p.HopLimit
	if hl == 0 {
		hl = 64
	}
	next := proto
	var ext []byte
	if p.HopByHop {
		next = 0
		ext = []byte{proto, 0, 1, 4, 0, 0, 0, 0} // next header, length 8, PadN of 4
	}
	f := make([]byte, 0, 14+40+len(ext)+len(l4))
	f = append(f, dst...)
	f = append(f, src...)
	f = append(f, 0x86, 0xdd)
	f = append(f, 0x60, 0, 0, 0)
	f = binary.BigEndian.AppendUint16(f, uint16(len(ext)+len(l4)))
	f = append(f, next, hl)
	f = append(f, p.Src.AsSlice()...)
	f = append(f, p.Dst.AsSlice()...)
	f = append(f, ext...)
	return append(f, l4...)
}

// L4Checksum is the UDP or ICMPv6 checksum of b (its checksum field zero)
// with the IPv6 pseudo-header.
func L4Checksum(src, dst netip.Addr, proto byte, b []byte) uint16 {
	var sum uint32
	add := func(p []byte) {
		for i := 0; i+1 < len(p); i += 2 {
			sum += uint32(p[i])<<8 | uint32(p[i+1])
		}
		if len(p)%2 == 1 {
			sum += uint32(p[len(p)-1]) << 8
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	sum += uint32(len(b)) + uint32(proto)
	add(b)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	c := ^uint16(sum)
	if c == 0 && proto == 17 {
		c = 0xffff // UDP sends an all-zero result as all ones
	}
	return c
}

// ParseProbe recognises a frame made by Probe.Frame (after any number of
// routers) and returns what it carried; HopLimit is the one it arrived
// with. It reports false for any other frame.
func ParseProbe(f []byte) (Probe, bool) {
	var p Probe
	if len(f) < 14+40 || f[12] != 0x86 || f[13] != 0xdd || f[14]>>4 != 6 {
		return p, false
	}
	ip := f[14:]
	plen := int(binary.BigEndian.Uint16(ip[4:]))
	if len(ip) < 40+plen {
		return p, false
	}
	next, hl := ip[6], ip[7]
	p.Src = netip.AddrFrom16([16]byte(ip[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(ip[24:40]))
	p.HopLimit = hl
	rest := ip[40 : 40+plen]
	if next == 0 {
		if len(rest) < 8 || len(rest) < 8*(int(rest[1])+1) {
			return p, false
		}
		p.HopByHop = true
		next, rest = rest[0], rest[8*(int(rest[1])+1):]
	}
	var payload []byte
	switch next {
	case 17:
		if len(rest) < 8 {
			return p, false
		}
		p.SrcPort = binary.BigEndian.Uint16(rest[0:])
		p.DstPort = binary.BigEndian.Uint16(rest[2:])
		payload = rest[8:]
	case 58:
		if len(rest) < 24 || rest[0] == 0 {
			return p, false
		}
		p.ICMPType = rest[0]
		payload = rest[24:]
	default:
		return p, false
	}
	if len(payload) < 4+len(probeMagic) || string(payload[4:4+len(probeMagic)]) != string(probeMagic) {
		return p, false
	}
	p.Tag = binary.BigEndian.Uint32(payload)
	return p, true
}

// PacketConn is an AF_PACKET socket on one interface: it sends whole
// Ethernet frames and captures every frame the interface receives,
// below any checksum check of the host's stack.
type PacketConn struct {
	fd      int
	ifindex int
	// Outgoing makes Collect pass the frames the interface sends too,
	// in the order the kernel saw both directions.
	Outgoing bool
}

// ListenPacket opens a packet socket on interface ifname of the current
// network namespace: call it inside Lab.InNS (or any function that runs
// in the namespace). The socket stays in that namespace.
func ListenPacket(ifname string) (*PacketConn, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("lab: packet socket: %w", err)
	}
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, fmt.Errorf("lab: packet socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lab: bind packet socket to %s: %w", ifname, err)
	}
	return &PacketConn{fd: fd, ifindex: ifi.Index}, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Send transmits one Ethernet frame as it is.
func (c *PacketConn) Send(frame []byte) error {
	if err := unix.Sendto(c.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: c.ifindex}); err != nil {
		return fmt.Errorf("lab: send frame: %w", err)
	}
	return nil
}

// Collect calls fn with each frame the interface receives (and, with
// Outgoing, the ones it sends) until d has passed.
func (c *PacketConn) Collect(d time.Duration, fn func(frame []byte)) error {
	return collect(c.fd, d, nil, c.Outgoing, func(frame, _ []byte) error { fn(frame); return nil })
}

// collect reads packet socket fd until d has passed and calls fn with
// each frame and its control messages (into oob, nil for none); frames
// the interface sends only with outgoing. An error from fn ends it.
func collect(fd int, d time.Duration, oob []byte, outgoing bool, fn func(frame, oob []byte) error) error {
	buf := make([]byte, 65536)
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil
		}
		tv := unix.NsecToTimeval(max(left, time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return fmt.Errorf("lab: capture: %w", err)
		}
		n, oobn, _, from, err := unix.Recvmsg(fd, buf, oob, 0)
		switch {
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return fmt.Errorf("lab: capture: %w", err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING && !outgoing {
			continue
		}
		if err := fn(buf[:n], oob[:oobn]); err != nil {
			return err
		}
	}
}

// Probes collects for d and returns the probes received, by tag.
func (c *PacketConn) Probes(d time.Duration) (map[uint32]Probe, error) {
	got := map[uint32]Probe{}
	err := c.Collect(d, func(f []byte) {
		if p, ok := ParseProbe(f); ok {
			got[p.Tag] = p
		}
	})
	return got, err
}

// Close closes the socket.
func (c *PacketConn) Close() error { return unix.Close(c.fd) }
