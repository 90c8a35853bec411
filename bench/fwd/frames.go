package fwd

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// UDP destination ports of the generated frames: the sink counts the
// two apart, so a spoofed frame that got through shows.
const (
	PortLegit = 9000 // frames from (upstream) or to (downstream) a delegated prefix
	PortSpoof = 9001 // frames whose source lies outside every delegated prefix
	srcPort   = 10000
)

// MinFrame is the smallest frame the harness builds: Ethernet (14) +
// IPv6 (40) + UDP (8). Frame sizes count the frame as handed to the
// device, without the FCS.
const MinFrame = 14 + 40 + 8

// Frame is one Ethernet/IPv6/UDP frame of the generator's config.
type Frame struct {
	DstMAC, SrcMAC net.HardwareAddr
	Src, Dst       netip.Addr
	SrcPort        uint16
	DstPort        uint16
	Size           int // whole frame without FCS, >= MinFrame; the payload is zeros
}

// Header returns the frame's first MinFrame bytes (the rest is zero
// payload) with the IPv6 payload length and the UDP checksum computed
// over the whole datagram.
func (f Frame) Header() []byte {
	b := make([]byte, MinFrame)
	copy(b[0:6], f.DstMAC)
	copy(b[6:12], f.SrcMAC)
	binary.BigEndian.PutUint16(b[12:], 0x86dd)
	ip := b[14:]
	ip[0] = 0x60
	udpLen := f.Size - 14 - 40
	binary.BigEndian.PutUint16(ip[4:], uint16(udpLen))
	ip[6] = 17 // UDP
	ip[7] = 64 // hop limit
	s, d := f.Src.As16(), f.Dst.As16()
	copy(ip[8:24], s[:])
	copy(ip[24:40], d[:])
	u := ip[40:]
	binary.BigEndian.PutUint16(u[0:], f.SrcPort)
	binary.BigEndian.PutUint16(u[2:], f.DstPort)
	binary.BigEndian.PutUint16(u[4:], uint16(udpLen))
	// The payload is zeros: it adds nothing to the sum.
	binary.BigEndian.PutUint16(u[6:], udpChecksum(s, d, u[:8], udpLen))
	return b
}

// udpChecksum is the UDP checksum over the IPv6 pseudo-header (RFC 8200
// section 8.1) and hdr (the UDP header with a zero checksum field),
// for a datagram of length n whose payload is zeros.
func udpChecksum(src, dst [16]byte, hdr []byte, n int) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
	}
	add(src[:])
	add(dst[:])
	sum += uint32(n >> 16)
	sum += uint32(n & 0xffff)
	sum += 17
	add(hdr)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	c := ^uint16(sum)
	if c == 0 {
		c = 0xffff // RFC 768: a computed zero is sent as all ones
	}
	return c
}

// Direction is the way the generated traffic crosses the relay.
type Direction string

// Directions.
const (
	Up   Direction = "up"   // cpe (delegated sources) -> core
	Down Direction = "down" // core -> cpe (delegated destinations)
)

// LeasePrefix is the /56 fakekea delegates as lease i:
// 2001:db8:<i as 24 bits>00::/56.
func LeasePrefix(i int) netip.Prefix {
	var a [16]byte
	a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
	binary.BigEndian.PutUint32(a[4:8], uint32(i)<<8)
	return netip.PrefixFrom(netip.AddrFrom16(a), 56)
}

// spoofSource is the source of spoofed frame j: in 2001:db8:ff00::/40,
// outside every lease fakekea generates (their /56s lie below
// 2001:db8:ff00:: for N < 0xff0000).
func spoofSource(j int) netip.Addr {
	a := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0xff}
	binary.BigEndian.PutUint16(a[5:7], uint16(j))
	a[15] = 1
	return netip.AddrFrom16(a)
}

// Traffic says which frames the generator sends.
type Traffic struct {
	Dir   Direction
	N     int // delegated prefixes (leases 0..N-1)
	Flows int // legitimate flows, each to or from one prefix, spread over the N
	// SpoofPct is the share of spoofed frames in percent (0..99; upstream
	// only: downstream sources are not checked). Spoofed frames are
	// interleaved with the legitimate ones.
	SpoofPct int
	Size     int // frame size without FCS
	// GenMAC is the generator's MAC, RelayMAC that of the relay port it
	// sends to. Core is the core host's address (upstream destination,
	// downstream source).
	GenMAC, RelayMAC net.HardwareAddr
	Core             netip.Addr
}

// Validate checks the traffic's parameters.
func (t Traffic) Validate() error {
	switch {
	case t.Dir != Up && t.Dir != Down:
		return fmt.Errorf("direction %q: up or down", t.Dir)
	case t.N < 1 || t.N >= 0xff0000:
		return fmt.Errorf("n %d: 1..16711679", t.N)
	case t.Flows < 1:
		return fmt.Errorf("flows %d: at least 1", t.Flows)
	case t.SpoofPct < 0 || t.SpoofPct > 99:
		return fmt.Errorf("spoof %d%%: 0..99", t.SpoofPct)
	case t.SpoofPct > 0 && t.Dir == Down:
		return fmt.Errorf("spoof %d%% downstream: sources from the core are not checked", t.SpoofPct)
	case t.Size < MinFrame || t.Size > 1514:
		return fmt.Errorf("frame size %d: %d..1514", t.Size, MinFrame)
	}
	return nil
}

// Frames returns the frames in sending order. A spoofed frame follows
// legitimate ones so that the shares hold over every cycle: with
// SpoofPct p, after every legitimate frame, floor((j+1)p/(100-p)) -
// floor(jp/(100-p)) spoofed ones.
func (t Traffic) Frames() []Frame {
	var out []Frame
	spoofed := 0
	for j := range t.Flows {
		lease := int(int64(j) * int64(t.N) / int64(t.Flows))
		host := LeasePrefix(lease).Addr().Next() // <prefix>::1
		f := Frame{Size: t.Size, SrcPort: srcPort + uint16(j%50000), DstPort: PortLegit}
		if t.Dir == Up {
			f.Src, f.Dst = host, t.Core
		} else {
			f.Src, f.Dst = t.Core, host
		}
		f.SrcMAC, f.DstMAC = t.GenMAC, t.RelayMAC
		out = append(out, f)
		if t.SpoofPct > 0 {
			want := (j + 1) * t.SpoofPct / (100 - t.SpoofPct)
			for ; spoofed < want; spoofed++ {
				s := f
				s.Src, s.DstPort = spoofSource(spoofed), PortSpoof
				out = append(out, s)
			}
		}
	}
	return out
}

// Counts returns how many of the frames are legitimate and spoofed.
func Counts(frames []Frame) (legit, spoofed int) {
	for _, f := range frames {
		if f.DstPort == PortSpoof {
			spoofed++
		} else {
			legit++
		}
	}
	return legit, spoofed
}

// WriteTrafgen writes frames as a trafgen(8) packet configuration: one
// packet per frame, its header in hex and its zero payload as a fill().
func WriteTrafgen(w io.Writer, frames []Frame) error {
	var b strings.Builder
	for _, f := range frames {
		b.Reset()
		b.WriteString("{")
		for i, x := range f.Header() {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "0x%02x", x)
		}
		if pad := f.Size - MinFrame; pad > 0 {
			fmt.Fprintf(&b, ",fill(0x00,%d)", pad)
		}
		b.WriteString("}\n")
		if _, err := io.WriteString(w, b.String()); err != nil {
			return err
		}
	}
	return nil
}

// writePcap writes frames to w as a pcap file (Ethernet), one
// microsecond apart: the paced generator sends them in this order at the
// rate it is given, not at these times.
func writePcap(w io.Writer, frames []Frame) error {
	pw := pcapgo.NewWriter(w)
	if err := pw.WriteFileHeader(65536, layers.LinkTypeEthernet); err != nil {
		return err
	}
	at := time.Unix(0, 0)
	buf := make([]byte, 0, 1<<11)
	for i, f := range frames {
		buf = append(buf[:0], f.Header()...)
		buf = append(buf, make([]byte, f.Size-len(buf))...)
		ci := gopacket.CaptureInfo{Timestamp: at.Add(time.Duration(i) * time.Microsecond), CaptureLength: len(buf), Length: len(buf)}
		if err := pw.WritePacket(ci, buf); err != nil {
			return err
		}
	}
	return nil
}
