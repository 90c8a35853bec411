package relay

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// clientFrame builds a real Ethernet/IPv6/UDP frame with gopacket.
func clientFrame(t testing.TB, payload []byte, dstPort layers.UDPPort) []byte {
	t.Helper()
	eth := &layers.Ethernet{
		SrcMAC:       net.HardwareAddr{0x02, 0, 0, 0, 1, 2},
		DstMAC:       net.HardwareAddr{0x33, 0x33, 0, 1, 0, 2},
		EthernetType: layers.EthernetTypeIPv6,
	}
	ip := &layers.IPv6{
		Version: 6, HopLimit: 1, NextHeader: layers.IPProtocolUDP,
		SrcIP: net.ParseIP("fe80::ff:fe00:102"), DstIP: net.ParseIP("ff02::1:2"),
	}
	udp := &layers.UDP{SrcPort: 546, DstPort: dstPort}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestParseClientFrame(t *testing.T) {
	payload := []byte{1, 0xaa, 0xbb, 0xcc, 0, 8, 0, 2, 0, 0} // Solicit, xid, elapsed-time
	f := clientFrame(t, payload, 547)
	got, err := ParseClientFrame(f, ChecksumUnknown)
	if err != nil {
		t.Fatal(err)
	}
	if got.SrcMAC != [6]byte{2, 0, 0, 0, 1, 2} || got.Src != netip.MustParseAddr("fe80::ff:fe00:102") ||
		got.Dst != netip.MustParseAddr("ff02::1:2") || got.SrcPort != 546 || !bytes.Equal(got.Payload, payload) {
		t.Fatalf("parsed %+v", got)
	}
	// Ethernet padding after the UDP datagram is not payload.
	if got, err := ParseClientFrame(append(f, 0, 0, 0, 0), ChecksumUnknown); err != nil || !bytes.Equal(got.Payload, payload) {
		t.Fatalf("padded frame: %v %x", err, got.Payload)
	}
	bad := map[string][]byte{
		"other port":  clientFrame(t, payload, 546),
		"truncated":   f[:len(f)-1],
		"short":       f[:40],
		"not ipv6":    append(append([]byte{}, f[:12]...), append([]byte{0x08, 0x00}, f[14:]...)...),
		"udp len big": func() []byte { b := bytes.Clone(f); b[14+40+4] = 0xff; return b }(),
	}
	for name, b := range bad {
		if _, err := ParseClientFrame(b, ChecksumUnknown); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if n := testing.AllocsPerRun(100, func() { ParseClientFrame(f, ChecksumUnknown) }); n != 0 {
		t.Errorf("ParseClientFrame allocates %v times", n)
	}
}

// TestClientFrameChecksum: a client frame's UDP checksum is verified
// unless the kernel vouches for it (partial from a local sender, or
// verified by the NIC).
func TestClientFrameChecksum(t *testing.T) {
	// A Solicit from fe80::ff:fe00:102 to ff02::1:2, byte by byte.
	frame := []byte{
		0x33, 0x33, 0x00, 0x01, 0x00, 0x02, // destination MAC (ff02::1:2)
		0x02, 0x00, 0x00, 0x00, 0x01, 0x02, // source MAC
		0x86, 0xdd, // EtherType IPv6
		0x60, 0x00, 0x00, 0x00, // version 6, class, flow
		0x00, 0x12, // payload length 18
		0x11,                                                             // next header UDP
		0x01,                                                             // hop limit 1
		0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 0, 0x01, 0x02, // source fe80::ff:fe00:102
		0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0, 0x02, // destination ff02::1:2
		0x02, 0x22, // source port 546
		0x02, 0x23, // destination port 547
		0x00, 0x12, // UDP length 18
		0x40, 0x7c, // checksum
		0x01, 0xaa, 0xbb, 0xcc, // Solicit, transaction id
		0x00, 0x08, 0x00, 0x02, 0x00, 0x00, // Elapsed Time 0
	}
	if !bytes.Equal(frame, clientFrame(t, []byte{1, 0xaa, 0xbb, 0xcc, 0, 8, 0, 2, 0, 0}, 547)) {
		t.Fatalf("the literal is not the frame gopacket builds:\n%x\n%x", frame, clientFrame(t, []byte{1, 0xaa, 0xbb, 0xcc, 0, 8, 0, 2, 0, 0}, 547))
	}
	const csum = 14 + 40 + 6
	with := func(c0, c1 byte) []byte { b := bytes.Clone(frame); b[csum], b[csum+1] = c0, c1; return b }
	corrupt := bytes.Clone(frame)
	corrupt[len(corrupt)-1] ^= 0x01 // one payload bit flipped on the wire
	// The partial form: the pseudo-header's sum, folded, not complemented.
	partial := with(0xfd, 0xab)
	for _, tc := range []struct {
		name  string
		frame []byte
		cs    Checksum
		err   error
	}{
		{"correct", frame, ChecksumUnknown, nil},
		{"corrupt payload", corrupt, ChecksumUnknown, ErrChecksum},
		{"wrong checksum", with(0x40, 0x7d), ChecksumUnknown, ErrChecksum},
		{"zero checksum", with(0, 0), ChecksumUnknown, ErrChecksum},
		{"partial, not vouched for", partial, ChecksumUnknown, ErrChecksum},
		{"partial from a local sender", partial, ChecksumPartial, nil},
		{"verified by the NIC", corrupt, ChecksumValid, nil},
		{"0xffff is the correct form of a zero sum", with(0xff, 0xff), ChecksumUnknown, ErrChecksum},
	} {
		_, err := ParseClientFrame(tc.frame, tc.cs)
		if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.err)
		}
	}
}

// FuzzParseClientFrame: frames come straight off the wire; any bytes must
// give a frame whose payload lies inside the input, or an error; an
// accepted frame nobody vouched for has a checksum that verifies by an
// independent computation.
func FuzzParseClientFrame(f *testing.F) {
	f.Add(clientFrame(f, []byte{1, 0xaa, 0xbb, 0xcc, 0, 8, 0, 2, 0, 0}, 547), uint8(0))
	f.Add(clientFrame(f, []byte{12, 0}, 547), uint8(1))
	f.Add(clientFrame(f, []byte{3, 1, 2, 3}, 547), uint8(2))
	f.Add([]byte{}, uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, cs uint8) {
		fr, err := ParseClientFrame(b, Checksum(cs%3))
		if err != nil {
			return
		}
		if len(fr.Payload) > len(b)-ethLen-ip6Len-udpLen {
			t.Fatalf("payload of %d bytes from a %d-byte frame", len(fr.Payload), len(b))
		}
		if Checksum(cs%3) == ChecksumUnknown {
			udp := b[ethLen+ip6Len : ethLen+ip6Len+udpLen+len(fr.Payload)]
			if !slowChecksumOK(b[ethLen+8:ethLen+40], udp) {
				t.Fatalf("accepted a frame whose checksum does not verify: %x", b)
			}
		}
	})
}

// slowChecksumOK is RFC 1071's checksum over the pseudo-header and the
// datagram, done the obvious way: build the bytes, sum 16-bit words.
func slowChecksumOK(addrs, udp []byte) bool {
	var ph []byte
	ph = append(ph, addrs...)
	ph = append(ph, 0, 0, byte(len(udp)>>8), byte(len(udp)), 0, 0, 0, 17)
	ph = append(ph, udp...)
	if len(ph)%2 == 1 {
		ph = append(ph, 0)
	}
	var s uint32
	for i := 0; i < len(ph); i += 2 {
		s += uint32(ph[i])<<8 | uint32(ph[i+1])
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return s == 0xffff && (udp[6] != 0 || udp[7] != 0)
}
