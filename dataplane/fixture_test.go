package dataplane

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/pdrelay/pdrelay/fib"
)

// The test network: two uplinks (one passes unrouted traffic to the
// kernel, one drops it), a point-to-point downlink A and a multi-access
// downlink B, and port 9, which routes point to but the config lacks.
const (
	portU   fib.PortID = 1 // uplink, NoRoutePass
	portU2  fib.PortID = 2 // uplink, no route → drop
	portA   fib.PortID = 3 // downlink, point-to-point, loop policy drop
	portB   fib.PortID = 4 // downlink, multi-access, loop policy default (drop)
	portBad fib.PortID = 9 // not configured
)

var (
	macU  = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	macU2 = [6]byte{0x02, 0, 0, 0, 0, 0x02}
	macA  = [6]byte{0x02, 0, 0, 0, 0, 0x03}
	macB  = [6]byte{0x02, 0, 0, 0, 0, 0x04}
	macGW = [6]byte{0x0a, 0, 0, 0, 0, 0xfe} // upstream gateway
	macE  = [6]byte{0x0a, 0, 0, 0, 0, 0xee} // next hop of a route out of the uplink
	macA1 = [6]byte{0x0c, 0, 0, 0, 0xa1, 0x01}
	macA2 = [6]byte{0x0c, 0, 0, 0, 0xa2, 0x02}
	macA3 = [6]byte{0x0c, 0, 0, 0, 0xa3, 0x03}
	macB1 = [6]byte{0x0c, 0, 0, 0, 0xb1, 0x01}
	macB2 = [6]byte{0x0c, 0, 0, 0, 0xb2, 0x02}
	macX  = [6]byte{0x0c, 0, 0, 0, 0x99, 0x99}
)

// testRoutes are the delegated routes of the test FIB; each route's prefix
// is also an allowed source on its port.
var testRoutes = []fib.Route{
	{Prefix: pfx("2001:db8:a:100::/56"), Port: portA, MAC: macA1},                        // port policy
	{Prefix: pfx("2001:db8:a:200::/56"), Port: portA, MAC: macA2, Loop: fib.LoopForward}, // per-client forward
	{Prefix: pfx("2001:db8:a:300::/56"), Port: portA, MAC: macA3, Loop: fib.LoopForward}, // ... but see testOverrides
	{Prefix: pfx("2001:db8:a:400::/56"), Port: portA},                                    // MAC not known
	{Prefix: pfx("2001:db8:b:100::/56"), Port: portB, MAC: macB1},
	{Prefix: pfx("2001:db8:b:200::/56"), Port: portB, MAC: macB2},
	{Prefix: pfx("2001:db8:c::/48"), Port: portBad, MAC: macX},
	{Prefix: pfx("2001:db8:e::/48"), Port: portU, MAC: macE},
}

var testOverrides = []LoopOverride{
	{Prefix: pfx("2001:db8:a:300::/60"), Policy: fib.LoopDrop},    // beats the client's forward
	{Prefix: pfx("2001:db8:a:1ff::/64"), Policy: fib.LoopForward}, // beats port A's drop
}

// confSource is allowed on port A by configuration, not by a binding.
var confSource = pfx("2001:db8:ffff::/64")

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// testConfig is the test network; icmp turns LoopICMP on on A and B.
func testConfig(icmp bool) Config {
	return Config{
		Ports: []PortConfig{
			{ID: portU, Uplink: true, MAC: macU, NoRoutePass: true},
			{ID: portU2, Uplink: true, MAC: macU2},
			{ID: portA, MAC: macA, LinkLocal: netip.MustParseAddr("fe80::a"), Loop: fib.LoopDrop, LoopICMP: icmp},
			{ID: portB, MAC: macB, LinkLocal: netip.MustParseAddr("fe80::b"), MultiAccess: true, LoopICMP: icmp,
				ICMPSource: netip.MustParseAddr("2001:db8:ffff::1")},
		},
		LoopOverrides: testOverrides,
	}
}

func newForwarder(t testing.TB, cfg Config) *Forwarder {
	t.Helper()
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// testSnapshot publishes testRoutes, their sources, confSource on A and,
// with def, the default route to the gateway on U.
func testSnapshot(t testing.TB, def bool) *fib.Snapshot {
	t.Helper()
	tb := fib.NewTable()
	for _, r := range testRoutes {
		r.NextHop = netip.MustParseAddr("fe80::1")
		if err := tb.AddRoute(r); err != nil {
			t.Fatal(err)
		}
		if err := tb.AddSource(r.Port, r.Prefix); err != nil {
			t.Fatal(err)
		}
	}
	if err := tb.SetAllowedSources(portA, []netip.Prefix{confSource}); err != nil {
		t.Fatal(err)
	}
	if def {
		if err := tb.SetDefault(&fib.Route{Port: portU, MAC: macGW, NextHop: netip.MustParseAddr("fe80::fe")}); err != nil {
			t.Fatal(err)
		}
	}
	return tb.Publish()
}

// serialize builds a frame from layers with lengths and checksums filled
// in.
func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	for _, l := range ls {
		if c, ok := l.(interface {
			SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
		}); ok {
			for _, n := range ls {
				if ip, ok := n.(gopacket.NetworkLayer); ok {
					if err := c.SetNetworkLayerForChecksum(ip); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// pkt describes a test frame: Ethernet and IPv6 headers, then UDP with
// payload bytes, or the raw IPv6 payload l4 (with next header nh) if set.
type pkt struct {
	srcMAC, dstMAC [6]byte
	src, dst       string
	hop            uint8
	payload        int
	nh             layers.IPProtocol
	l4             []byte
}

func (p pkt) ip6() *layers.IPv6 {
	return &layers.IPv6{
		Version: 6, HopLimit: p.hop, NextHeader: layers.IPProtocolUDP,
		SrcIP: net.IP(netip.MustParseAddr(p.src).AsSlice()),
		DstIP: net.IP(netip.MustParseAddr(p.dst).AsSlice()),
	}
}

func (p pkt) frame(t testing.TB) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: p.srcMAC[:], DstMAC: p.dstMAC[:], EthernetType: layers.EthernetTypeIPv6}
	ip := p.ip6()
	if p.l4 != nil {
		ip.NextHeader = p.nh
		return serialize(t, eth, ip, gopacket.Payload(p.l4))
	}
	udp := &layers.UDP{SrcPort: 40000, DstPort: 5001}
	pl := make([]byte, p.payload)
	for i := range pl {
		pl[i] = byte(i)
	}
	return serialize(t, eth, ip, udp, gopacket.Payload(pl))
}

// icmp6 returns the bytes of an ICMPv6 message of type typ (checksum left
// zero: nothing here verifies it) with body.
func icmp6(typ, code uint8, body ...byte) []byte {
	return append([]byte{typ, code, 0, 0}, body...)
}

var netipZero netip.Addr

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func errorsIs(err, target error) bool { return errors.Is(err, target) }
