package lab

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	probeSrcMAC = net.HardwareAddr{2, 0, 0, 0, 1, 2}
	probeDstMAC = net.HardwareAddr{2, 0, 0, 0, 1, 1}
)

// TestProbeFrame checks a UDP probe's bytes field by field, and its
// checksum against gopacket's.
func TestProbeFrame(t *testing.T) {
	p := Probe{
		Src: netip.MustParseAddr("2001:db8:1::1"), Dst: netip.MustParseAddr("fd00::1"),
		SrcPort: 546, DstPort: 40002, Tag: 0x01020304,
	}
	f := p.Frame(probeSrcMAC, probeDstMAC)
	want := []byte{
		2, 0, 0, 0, 1, 1, // destination MAC
		2, 0, 0, 0, 1, 2, // source MAC
		0x86, 0xdd, // IPv6
		0x60, 0, 0, 0, // version, traffic class, flow label
		0, 25, // payload length: 8 + 4 + 13
		17, 64, // next header UDP, hop limit 64 (the default)
		0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // source
		0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // destination
		0x02, 0x22, // source port 546
		0x9c, 0x42, // destination port 40002
		0, 25, // UDP length
	}
	if !bytes.Equal(f[:len(want)], want) {
		t.Fatalf("frame\n% x\nwant prefix\n% x", f, want)
	}
	tail := append([]byte{1, 2, 3, 4}, "pdrelay-probe"...) // tag, magic
	if !bytes.Equal(f[len(want)+2:], tail) {
		t.Fatalf("payload % x, want % x", f[len(want)+2:], tail)
	}

	// gopacket computes the same checksum from the same datagram.
	ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolUDP, HopLimit: 64, SrcIP: p.Src.AsSlice(), DstIP: p.Dst.AsSlice()}
	udp := &layers.UDP{SrcPort: 546, DstPort: 40002}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		&layers.Ethernet{SrcMAC: probeSrcMAC, DstMAC: probeDstMAC, EthernetType: layers.EthernetTypeIPv6},
		ip, udp, gopacket.Payload(tail))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f, buf.Bytes()) {
		t.Fatalf("frame\n% x\ngopacket\n% x", f, buf.Bytes())
	}
}

// TestProbeRoundTrip: every kind of probe parses back to itself, and its
// upper-layer checksum verifies (the one's complement sum over the
// pseudo-header and the datagram is all ones).
func TestProbeRoundTrip(t *testing.T) {
	src, dst := netip.MustParseAddr("2001:db8:ffff::1"), netip.MustParseAddr("fd00:0:0:ffff::1")
	for _, p := range []Probe{
		{Src: src, Dst: dst, SrcPort: 7000, DstPort: 40001, HopByHop: true, Tag: 1},
		{Src: src, Dst: dst, SrcPort: 547, DstPort: 40003, Tag: 2},
		{Src: src, Dst: dst, SrcPort: 7000, DstPort: 40004, HopLimit: 1, Tag: 3},
		{Src: src, Dst: dst, ICMPType: 135, HopLimit: 255, Tag: 4},
		{Src: src, Dst: dst, ICMPType: 136, HopByHop: true, Tag: 5},
	} {
		f := p.Frame(probeSrcMAC, probeDstMAC)
		got, ok := ParseProbe(f)
		want := p
		if want.HopLimit == 0 {
			want.HopLimit = 64
		}
		if !ok || got != want {
			t.Errorf("ParseProbe(Frame(%+v)) = %+v, %v", p, got, ok)
		}
		l4 := f[14+40:]
		proto := byte(17)
		if p.HopByHop {
			l4 = l4[8:]
		}
		if p.ICMPType != 0 {
			proto = 58
		}
		if s := L4Checksum(p.Src, p.Dst, proto, l4); s != 0 && s != 0xffff {
			t.Errorf("tag %d: checksum does not verify: %#04x", p.Tag, s)
		}
	}
}

// TestParseProbeRejects: frames that are not whole probes are not taken
// for one.
func TestParseProbeRejects(t *testing.T) {
	p := Probe{Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("fd00::1"), SrcPort: 1, DstPort: 2, Tag: 9}
	f := p.Frame(probeSrcMAC, probeDstMAC)
	for name, b := range map[string][]byte{
		"empty":       nil,
		"short":       f[:30],
		"cut payload": f[:len(f)-1],
		"not IPv6":    append(append([]byte{}, f[:12]...), append([]byte{0x08, 0x00}, f[14:]...)...),
		"other magic": append(append([]byte{}, f[:len(f)-1]...), 'x'),
		"tcp":         func() []byte { b := bytes.Clone(f); b[14+6] = 6; return b }(),
		"hbh too long": func() []byte {
			b := bytes.Clone(Probe{Src: p.Src, Dst: p.Dst, HopByHop: true}.Frame(probeSrcMAC, probeDstMAC))
			b[14+40+1] = 200
			return b
		}(),
	} {
		if got, ok := ParseProbe(b); ok {
			t.Errorf("%s: parsed as %+v", name, got)
		}
	}
}

// FuzzParseProbe: any bytes give a probe or false, never a panic, and a
// probe that parses rebuilds to a frame that parses the same.
func FuzzParseProbe(f *testing.F) {
	src, dst := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("fd00::1")
	f.Add(Probe{Src: src, Dst: dst, SrcPort: 546, DstPort: 547, Tag: 7}.Frame(probeSrcMAC, probeDstMAC))
	f.Add(Probe{Src: src, Dst: dst, ICMPType: 135, HopByHop: true, Tag: 8}.Frame(probeSrcMAC, probeDstMAC))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, ok := ParseProbe(b)
		if !ok {
			return
		}
		q, ok := ParseProbe(p.Frame(probeSrcMAC, probeDstMAC))
		if p.HopLimit == 0 {
			p.HopLimit = 64 // Frame's default
		}
		if !ok || q != p {
			t.Fatalf("%+v rebuilt parses as %+v, %v", p, q, ok)
		}
	})
}
