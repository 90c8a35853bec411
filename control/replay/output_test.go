package replay

import (
	"bytes"
	"net"
	"os"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// TestOutputFrames decodes the golden output and checks what the relay
// would send, frame by frame kind: each forwarded frame carries the next
// hop's MAC, the egress port's MAC and its hop limit less one, on the
// pcapng interface of its egress port; each ICMPv6 error is a Destination
// Unreachable code 6 from eth1's EUI-64 link-local address to the
// looping packet's source.
func TestOutputFrames(t *testing.T) {
	data, err := os.ReadFile("testdata/out.pcapng")
	if err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewNgReader(bytes.NewReader(data), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"eth0", "eth1", "eth2"}
	portMAC := map[string][6]byte{"eth0": macEth0, "eth1": macEth1, "eth2": macEth2}
	kinds := map[string]int{}
	for {
		frame, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		port := names[ci.InterfaceIndex]
		p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
		eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		ip, _ := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		if eth == nil || ip == nil {
			t.Fatalf("%s: not Ethernet and IPv6: %x", port, frame)
		}
		if [6]byte(eth.SrcMAC) != portMAC[port] {
			t.Errorf("%s: source MAC %v, want the port's", port, eth.SrcMAC)
		}
		if icmp, ok := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6); ok {
			kinds[port+" icmp"]++
			if port != "eth1" || icmp.TypeCode != layers.CreateICMPv6TypeCode(1, 6) ||
				!ip.SrcIP.Equal(net.ParseIP("fe80::ff:fe00:2")) || !ip.DstIP.Equal(net.ParseIP("2001:db8:100:100::1")) ||
				[6]byte(eth.DstMAC) != macA1 || ip.HopLimit != 255 {
				t.Errorf("%s: ICMPv6 error %v from %v to %v (MAC %v), hop limit %d", port, icmp.TypeCode, ip.SrcIP, ip.DstIP, eth.DstMAC, ip.HopLimit)
			}
			continue
		}
		kinds[port]++
		var wantMAC [6]byte
		wantHop := uint8(63)
		switch port {
		case "eth0":
			wantMAC = macGW
			if ip.SrcIP.Equal(net.ParseIP("2001:db8:200::5")) {
				wantHop = 1 // sent with hop limit 2
			}
		case "eth1":
			wantMAC = macA1
			if ip.SrcIP.Equal(net.ParseIP("2001:db8:100:200::1")) {
				wantMAC = macA2 // its loop, forwarded
			}
		case "eth2":
			wantMAC = [6]byte{0x0c, 0, 0, 0, 0, 0xb2}
		}
		if [6]byte(eth.DstMAC) != wantMAC || ip.HopLimit != wantHop {
			t.Errorf("%s: forwarded to MAC %v with hop limit %d, want %v and %d", port, eth.DstMAC, ip.HopLimit, net.HardwareAddr(wantMAC[:]), wantHop)
		}
	}
	// The reader learns interfaces as it meets them: all are known now.
	for i, n := range names {
		intf, err := r.Interface(i)
		if err != nil || intf.Name != n {
			t.Errorf("interface %d: %+v %v, want %s", i, intf, err, n)
		}
	}
	want := map[string]int{"eth0": 4, "eth1": 4, "eth1 icmp": 15, "eth2": 2}
	for k, n := range want {
		if kinds[k] != n {
			t.Errorf("%s: %d frames, want %d (all: %v)", k, kinds[k], n, kinds)
		}
	}
	if len(kinds) != len(want) {
		t.Errorf("frames by kind %v, want %v", kinds, want)
	}
}
