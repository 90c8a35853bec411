package relay

import (
	"bytes"
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
	got, err := ParseClientFrame(f)
	if err != nil {
		t.Fatal(err)
	}
	if got.SrcMAC != [6]byte{2, 0, 0, 0, 1, 2} || got.Src != netip.MustParseAddr("fe80::ff:fe00:102") ||
		got.Dst != netip.MustParseAddr("ff02::1:2") || got.SrcPort != 546 || !bytes.Equal(got.Payload, payload) {
		t.Fatalf("parsed %+v", got)
	}
	// Ethernet padding after the UDP datagram is not payload.
	if got, err := ParseClientFrame(append(f, 0, 0, 0, 0)); err != nil || !bytes.Equal(got.Payload, payload) {
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
		if _, err := ParseClientFrame(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if n := testing.AllocsPerRun(100, func() { ParseClientFrame(f) }); n != 0 {
		t.Errorf("ParseClientFrame allocates %v times", n)
	}
}

// FuzzParseClientFrame: frames come straight off the wire; any bytes must
// give a frame whose payload lies inside the input, or an error.
func FuzzParseClientFrame(f *testing.F) {
	f.Add(clientFrame(f, []byte{1, 0xaa, 0xbb, 0xcc, 0, 8, 0, 2, 0, 0}, 547))
	f.Add(clientFrame(f, []byte{12, 0}, 547))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := ParseClientFrame(b)
		if err != nil {
			return
		}
		if len(fr.Payload) > len(b)-ethLen-ip6Len-udpLen {
			t.Fatalf("payload of %d bytes from a %d-byte frame", len(fr.Payload), len(b))
		}
	})
}
