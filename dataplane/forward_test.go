package dataplane

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/pdrelay/pdrelay/fib"
)

// counterKey names one counter: a port's reason, or "rx", "rx-bytes",
// "fwd-bytes".
type counterKey struct {
	port fib.PortID
	what string
}

// totals flushes f and returns every counter of every port, NoPort
// included.
func totals(t testing.TB, f *Forwarder) map[counterKey]uint64 {
	t.Helper()
	f.Flush()
	m := make(map[counterKey]uint64)
	for _, id := range []fib.PortID{portU, portU2, portA, portB, NoPort} {
		st, ok := f.Counters(id)
		if !ok {
			t.Fatalf("Counters(%d): not found", id)
		}
		if st.Port != id {
			t.Fatalf("Counters(%d).Port = %d", id, st.Port)
		}
		m[counterKey{id, "rx"}] = st.RxPackets
		m[counterKey{id, "rx-bytes"}] = st.RxBytes
		m[counterKey{id, "fwd-bytes"}] = st.ForwardedBytes
		for r, n := range st.ByReason {
			m[counterKey{id, Reason(r).String()}] = n
		}
	}
	return m
}

// moved returns the counters that changed between two totals.
func moved(before, after map[counterKey]uint64) map[counterKey]uint64 {
	d := make(map[counterKey]uint64)
	for k, v := range after {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	return d
}

// wantMoved is what one frame of n bytes on in moves: rx on in, and the
// reason on in, or forwarded (and its bytes) on out; extra adds more.
func wantMoved(in fib.PortID, n int, v Verdict, r Reason, out fib.PortID, extra ...Reason) map[counterKey]uint64 {
	if in != portU && in != portU2 && in != portA && in != portB {
		in = NoPort
	}
	w := map[counterKey]uint64{{in, "rx"}: 1}
	if n > 0 {
		w[counterKey{in, "rx-bytes"}] = uint64(n)
	}
	if v == Forward {
		w[counterKey{out, "forwarded"}] = 1
		w[counterKey{out, "fwd-bytes"}] = uint64(n)
	} else {
		w[counterKey{in, r.String()}] = 1
	}
	for _, e := range extra {
		w[counterKey{in, e.String()}]++
	}
	return w
}

type forwardCase struct {
	name   string
	in     fib.PortID
	pkt    pkt
	noDef  bool         // use the snapshot without a default route
	nilFIB bool         // no snapshot
	patch  func([]byte) // changes the built frame
	v      Verdict
	r      Reason
	out    fib.PortID
	dstMAC [6]byte // Forward: the new destination MAC
}

// Addresses used by the cases.
const (
	internet = "2001:4860::8888"
	clientA1 = "2001:db8:a:100::5" // in A1's /56
	clientB1 = "2001:db8:b:100::5"
	clientB2 = "2001:db8:b:200::5"
)

// fromU, fromA and fromB are frames as they arrive on U, A (from client
// A1) and B (from client B1).
func fromU(dst string) pkt {
	return pkt{srcMAC: macGW, dstMAC: macU, src: internet, dst: dst, hop: 64, payload: 20}
}
func fromA(src, dst string) pkt {
	return pkt{srcMAC: macA1, dstMAC: macA, src: src, dst: dst, hop: 64, payload: 20}
}
func fromB(mac [6]byte, src, dst string) pkt {
	return pkt{srcMAC: mac, dstMAC: macB, src: src, dst: dst, hop: 64, payload: 20}
}

func withHop(p pkt, hop uint8) pkt  { p.hop = hop; return p }
func withSrc(p pkt, src string) pkt { p.src = src; return p }

var forwardCases = []forwardCase{
	// Downstream: uplink to client.
	{name: "down to A", in: portU, pkt: fromU("2001:db8:a:100::1"), v: Forward, out: portA, dstMAC: macA1},
	{name: "down to B", in: portU, pkt: fromU("2001:db8:b:200::1"), v: Forward, out: portB, dstMAC: macB2},
	{name: "down from the other uplink", in: portU2, pkt: fromU("2001:db8:b:100::1"), v: Forward, out: portB, dstMAC: macB1},
	{name: "down hop limit 2", in: portU, pkt: withHop(fromU("2001:db8:a:100::1"), 2), v: Forward, out: portA, dstMAC: macA1},
	{name: "down hop limit 255", in: portU, pkt: withHop(fromU("2001:db8:a:100::1"), 255), v: Forward, out: portA, dstMAC: macA1},
	// Upstream: client to the default route.
	{name: "up from A", in: portA, pkt: fromA(clientA1, internet), v: Forward, out: portU, dstMAC: macGW},
	{name: "up from B", in: portB, pkt: fromB(macB2, clientB2, internet), v: Forward, out: portU, dstMAC: macGW},
	{name: "up from a configured source", in: portA, pkt: fromA("2001:db8:ffff::9", internet), v: Forward, out: portU, dstMAC: macGW},
	{name: "up to a route out of the uplink", in: portA, pkt: fromA(clientA1, "2001:db8:e::1"), v: Forward, out: portU, dstMAC: macE},
	// Client to client.
	{name: "A to B", in: portA, pkt: fromA(clientA1, "2001:db8:b:100::7"), v: Forward, out: portB, dstMAC: macB1},
	{name: "B to A", in: portB, pkt: fromB(macB1, clientB1, "2001:db8:a:200::7"), v: Forward, out: portA, dstMAC: macA2},
	// Anti-spoofing.
	{name: "spoofed: B's prefix on A", in: portA, pkt: fromA(clientB1, internet), v: Drop, r: Spoofed},
	{name: "spoofed: foreign source", in: portA, pkt: fromA(internet, internet), v: Drop, r: Spoofed},
	{name: "spoofed: link-local source", in: portA, pkt: fromA("fe80::1", internet), v: Drop, r: Spoofed},
	{name: "spoofed: A's configured source on B", in: portB, pkt: fromB(macB1, "2001:db8:ffff::9", internet), v: Drop, r: Spoofed},
	{name: "spoofed before hop limit", in: portA, pkt: withHop(fromA(clientB1, internet), 1), v: Drop, r: Spoofed},
	{name: "uplink: link-local source", in: portU, pkt: withSrc(fromU("2001:db8:a:100::1"), "fe80::1"), v: Drop, r: Spoofed},
	{name: "uplink: multicast source", in: portU, pkt: withSrc(fromU("2001:db8:a:100::1"), "ff0e::1"), v: Drop, r: Spoofed},
	{name: "uplink: unspecified source", in: portU, pkt: withSrc(fromU("2001:db8:a:100::1"), "::"), v: Drop, r: Spoofed},
	{name: "uplink: loopback source", in: portU, pkt: withSrc(fromU("2001:db8:a:100::1"), "::1"), v: Drop, r: Spoofed},
	// Loops.
	{name: "loop: A1 to its own prefix (point-to-point)", in: portA, pkt: fromA(clientA1, "2001:db8:a:100::99"), v: Drop, r: Loop},
	{name: "loop: per-client forward beats port drop", in: portA, pkt: fromA(clientA1, "2001:db8:a:200::1"), v: Forward, out: portA, dstMAC: macA2},
	{name: "loop: per-destination drop beats per-client forward", in: portA, pkt: fromA(clientA1, "2001:db8:a:30f::1"), v: Drop, r: Loop},
	{name: "loop: per-client forward outside the override", in: portA, pkt: fromA(clientA1, "2001:db8:a:310::1"), v: Forward, out: portA, dstMAC: macA3},
	{name: "loop: per-destination forward beats port drop", in: portA, pkt: fromA(clientA1, "2001:db8:a:1ff::1"), v: Forward, out: portA, dstMAC: macA1},
	{name: "loop: multi-access, same MAC", in: portB, pkt: fromB(macB1, clientB1, "2001:db8:b:100::99"), v: Drop, r: Loop},
	{name: "multi-access: other client on the segment", in: portB, pkt: fromB(macB1, clientB1, "2001:db8:b:200::1"), v: Forward, out: portB, dstMAC: macB2},
	{name: "multi-access: B2 to B1", in: portB, pkt: fromB(macB2, clientB2, "2001:db8:b:100::1"), v: Forward, out: portB, dstMAC: macB1},
	{name: "loop: uplink back out of the uplink", in: portU, pkt: fromU("2001:db8:e::1"), v: Drop, r: Loop},
	// Hop limit.
	{name: "hop limit 1 on a downlink", in: portA, pkt: withHop(fromA(clientA1, internet), 1), v: ToKernel, r: HopLimit, out: portA},
	{name: "hop limit 0 on a downlink", in: portA, pkt: withHop(fromA(clientA1, internet), 0), v: ToKernel, r: HopLimit, out: portA},
	{name: "hop limit 1 on the uplink", in: portU, pkt: withHop(fromU("2001:db8:a:100::1"), 1), v: ToKernel, r: HopLimit, out: portU},
	{name: "hop limit 0 on the uplink", in: portU2, pkt: withHop(fromU("2001:db8:a:100::1"), 0), v: ToKernel, r: HopLimit, out: portU2},
	// No route.
	{name: "uplink: no route, pass", in: portU, pkt: fromU("2001:db8:dead::1"), v: ToKernel, r: NoRoute, out: portU},
	{name: "uplink: foreign destination, pass", in: portU, pkt: fromU(internet), v: ToKernel, r: NoRoute, out: portU},
	{name: "uplink: no route, drop", in: portU2, pkt: fromU("2001:db8:dead::1"), v: Drop, r: NoRoute},
	{name: "downlink: no default route", in: portA, pkt: fromA(clientA1, internet), noDef: true, v: Drop, r: NoRoute},
	{name: "downlink: delegated without a default route", in: portA, pkt: fromA(clientA1, "2001:db8:b:100::1"), noDef: true, v: Forward, out: portB, dstMAC: macB1},
	{name: "no neighbor MAC", in: portU, pkt: fromU("2001:db8:a:400::1"), v: Drop, r: NoNeighbor},
	{name: "route to an unconfigured port", in: portU, pkt: fromU("2001:db8:c::1"), v: Drop, r: UnknownPort},
	{name: "unconfigured ingress port", in: 7, pkt: fromU("2001:db8:a:100::1"), v: Drop, r: UnknownPort},
	{name: "no table", in: portU, pkt: fromU("2001:db8:a:100::1"), nilFIB: true, v: Drop, r: NoTable},
	{name: "no table on a downlink", in: portA, pkt: fromA(clientA1, internet), nilFIB: true, v: Drop, r: NoTable},
	// For the kernel.
	{name: "link-local destination", in: portA, pkt: fromA(clientA1, "fe80::a"), v: ToKernel, r: Local, out: portA},
	{name: "multicast destination", in: portA, pkt: fromA(clientA1, "ff02::1:2"), v: ToKernel, r: Local, out: portA},
	{name: "multicast destination on the uplink", in: portU, pkt: fromU("ff05::1:3"), v: ToKernel, r: Local, out: portU},
	{name: "hop-by-hop header", in: portU, pkt: fromU("2001:db8:a:100::1"), patch: func(b []byte) { b[offNextHdr] = 0 }, v: ToKernel, r: Local, out: portU},
	// Ethernet padding: a frame longer than its IPv6 packet is forwarded whole.
	{name: "padded frame", in: portU, pkt: pkt{srcMAC: macGW, dstMAC: macU, src: internet, dst: "2001:db8:a:100::1", hop: 9},
		v: Forward, out: portA, dstMAC: macA1},
	// Not for us to forward.
	{name: "IPv6 EtherType, version 4", in: portU, pkt: fromU("2001:db8:a:100::1"), patch: func(b []byte) { b[offIP6] = 0x45 }, v: Drop, r: Malformed},
	{name: "payload length beyond the frame", in: portU, pkt: fromU("2001:db8:a:100::1"), patch: func(b []byte) { b[offPayLen+1]++ }, v: Drop, r: Malformed},
	{name: "VLAN tag", in: portU, pkt: fromU("2001:db8:a:100::1"), patch: func(b []byte) { b[offEtherType], b[offEtherType+1] = 0x81, 0 }, v: Drop, r: NotIPv6},
}

func TestForward(t *testing.T) {
	snap, noDef := testSnapshot(t, true), testSnapshot(t, false)
	f := newForwarder(t, testConfig(false))
	for _, c := range forwardCases {
		t.Run(c.name, func(t *testing.T) {
			frame := c.pkt.frame(t)
			if c.name == "padded frame" {
				frame = append(frame, make([]byte, 10)...) // 62 + 10 bytes
			}
			if c.patch != nil {
				c.patch(frame)
			}
			s := snap
			if c.noDef {
				s = noDef
			}
			if c.nilFIB {
				s = nil
			}
			orig := bytes.Clone(frame)
			before := totals(t, f)
			v, r, out, n := f.Forward(s, c.in, frame, 0)
			if c.v == Drop {
				c.out = c.in
			}
			if v != c.v || r != c.r || out != c.out {
				t.Fatalf("Forward = %v, %v, port %d; want %v, %v, port %d", v, r, out, c.v, c.r, c.out)
			}
			if got, want := moved(before, totals(t, f)), wantMoved(c.in, len(orig), c.v, c.r, c.out); !maps.Equal(got, want) {
				t.Errorf("counters moved %v, want %v", got, want)
			}
			switch v {
			case Forward:
				if n != len(orig) {
					t.Fatalf("n = %d, want %d", n, len(orig))
				}
				want := bytes.Clone(orig)
				copy(want[0:6], c.dstMAC[:])
				mac := portMAC(c.out)
				copy(want[6:12], mac[:])
				want[offHopLimit]--
				if !bytes.Equal(frame, want) {
					t.Fatalf("frame\n got %x\nwant %x", frame, want)
				}
				// Still a valid packet: gopacket decodes it and the UDP
				// checksum, which does not cover the hop limit, holds.
				checkDecodes(t, frame)
			case ToKernel:
				if n != len(orig) || !bytes.Equal(frame, orig) {
					t.Fatalf("ToKernel: n = %d (want %d), frame changed: %v", n, len(orig), !bytes.Equal(frame, orig))
				}
			case Drop:
				if n != 0 || !bytes.Equal(frame, orig) {
					t.Fatalf("Drop: n = %d, frame changed: %v", n, !bytes.Equal(frame, orig))
				}
			}
		})
	}
}

func portMAC(p fib.PortID) [6]byte {
	switch p {
	case portU:
		return macU
	case portU2:
		return macU2
	case portA:
		return macA
	case portB:
		return macB
	}
	panic(fmt.Sprint("no port ", p))
}

// checkDecodes decodes a forwarded frame with gopacket and verifies its UDP
// checksum, if it has one.
func checkDecodes(t *testing.T, frame []byte) {
	t.Helper()
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("forwarded frame does not decode: %v", el.Error())
	}
	ip, _ := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	udp, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if ip == nil || udp == nil {
		return
	}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	if err, res := udp.VerifyChecksum(); err != nil || !res.Valid {
		t.Fatalf("UDP checksum after forwarding: %v %+v", err, res)
	}
}

// TestForwardTruncated cuts a valid frame at every length on every kind of
// port: all are Malformed, and nothing is written.
func TestForwardTruncated(t *testing.T) {
	snap := testSnapshot(t, true)
	f := newForwarder(t, testConfig(true))
	for _, c := range []struct {
		in  fib.PortID
		pkt pkt
	}{
		{portU, fromU("2001:db8:a:100::1")},
		{portU2, fromU("2001:db8:a:100::1")},
		{portA, fromA(clientA1, internet)},
		{portA, fromA(clientA1, "2001:db8:a:100::99")}, // would loop, with ICMP
		{portB, fromB(macB1, clientB1, "2001:db8:b:100::99")},
	} {
		full := c.pkt.frame(t)
		for l := range len(full) {
			frame := bytes.Clone(full[:l])
			before := totals(t, f)
			v, r, _, n := f.Forward(snap, c.in, frame, 0)
			if v != Drop || r != Malformed || n != 0 {
				t.Fatalf("port %d, %d of %d bytes: %v %v n=%d, want drop malformed", c.in, l, len(full), v, r, n)
			}
			if !bytes.Equal(frame, full[:l]) {
				t.Fatalf("port %d, %d bytes: frame changed", c.in, l)
			}
			if got, want := moved(before, totals(t, f)), wantMoved(c.in, l, Drop, Malformed, 0); !maps.Equal(got, want) {
				t.Fatalf("port %d, %d bytes: counters moved %v, want %v", c.in, l, got, want)
			}
		}
		if _, r, _, _ := f.Forward(snap, c.in, bytes.Clone(full), 0); r == Malformed {
			t.Fatalf("port %d: the whole frame is malformed", c.in)
		}
	}
}

func TestForwardNotIPv6(t *testing.T) {
	snap := testSnapshot(t, true)
	f := newForwarder(t, testConfig(false))
	eth := func(typ layers.EthernetType) *layers.Ethernet {
		return &layers.Ethernet{SrcMAC: macGW[:], DstMAC: macU[:], EthernetType: typ}
	}
	v4 := serialize(t, eth(layers.EthernetTypeIPv4),
		&layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: []byte{192, 0, 2, 1}, DstIP: []byte{198, 51, 100, 1}},
		&layers.UDP{SrcPort: 1, DstPort: 2}, gopacket.Payload(make([]byte, 40)))
	arp := serialize(t, eth(layers.EthernetTypeARP), &layers.ARP{
		AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: layers.ARPRequest, SourceHwAddress: macGW[:], SourceProtAddress: []byte{192, 0, 2, 1},
		DstHwAddress: make([]byte, 6), DstProtAddress: []byte{192, 0, 2, 2},
	})
	vlan := serialize(t, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeIPv6},
		fromU("2001:db8:a:100::1").ip6(), &layers.UDP{SrcPort: 1, DstPort: 2})
	for name, frame := range map[string][]byte{"ipv4": v4, "arp": arp, "vlan": vlan} {
		for _, in := range []fib.PortID{portU, portA, portB} {
			orig := bytes.Clone(frame)
			if v, r, _, n := f.Forward(snap, in, frame, 0); v != Drop || r != NotIPv6 || n != 0 || !bytes.Equal(frame, orig) {
				t.Errorf("%s on port %d: %v %v n=%d", name, in, v, r, n)
			}
		}
	}
}

// TestForwardHopLimit checks the hop limit byte over its whole range.
func TestForwardHopLimit(t *testing.T) {
	snap := testSnapshot(t, true)
	f := newForwarder(t, testConfig(false))
	for hop := range 256 {
		frame := withHop(fromU("2001:db8:a:100::1"), uint8(hop)).frame(t)
		v, r, _, _ := f.Forward(snap, portU, frame, 0)
		switch {
		case hop <= 1 && (v != ToKernel || r != HopLimit):
			t.Fatalf("hop limit %d: %v %v", hop, v, r)
		case hop > 1 && (v != Forward || frame[offHopLimit] != uint8(hop-1)):
			t.Fatalf("hop limit %d: %v %v, now %d", hop, v, r, frame[offHopLimit])
		}
	}
}

func TestNewErrors(t *testing.T) {
	good := func() Config { return testConfig(true) }
	for name, mod := range map[string]func(*Config){
		"no ports":             func(c *Config) { c.Ports = nil },
		"duplicate port":       func(c *Config) { c.Ports = append(c.Ports, c.Ports[0]) },
		"reserved port":        func(c *Config) { c.Ports[0].ID = NoPort },
		"bad port loop policy": func(c *Config) { c.Ports[2].Loop = 7 },
		"icmp without source": func(c *Config) {
			c.Ports[2].LinkLocal = netipZero
		},
		"icmp with IPv4 source": func(c *Config) { c.Ports[2].LinkLocal = mustAddr("192.0.2.1") },
		"override IPv4":         func(c *Config) { c.LoopOverrides = []LoopOverride{{Prefix: pfx("192.0.2.0/24"), Policy: fib.LoopDrop}} },
		"override default":      func(c *Config) { c.LoopOverrides = []LoopOverride{{Prefix: pfx("2001:db8::/32")}} },
		"override invalid":      func(c *Config) { c.LoopOverrides = []LoopOverride{{Policy: fib.LoopDrop}} },
		"override twice": func(c *Config) {
			c.LoopOverrides = append(c.LoopOverrides, LoopOverride{pfx("2001:db8:a:300:1::/60"), fib.LoopForward})
		},
		"negative icmp rate":  func(c *Config) { c.ICMPRate = -1 },
		"negative icmp burst": func(c *Config) { c.ICMPBurst = -1 },
	} {
		c := good()
		mod(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: New succeeded", name)
		} else if !errorsIs(err, ErrConfig) {
			t.Errorf("%s: %v does not wrap ErrConfig", name, err)
		}
	}
	if _, err := New(good()); err != nil {
		t.Fatal(err)
	}
	// LoopICMP off needs no source address.
	c := testConfig(false)
	c.Ports[2].LinkLocal = netipZero
	if _, err := New(c); err != nil {
		t.Fatal(err)
	}
}

func TestReasonNames(t *testing.T) {
	seen := map[string]bool{}
	for r := range NumReasons {
		s := r.String()
		if s == "" || seen[s] {
			t.Fatalf("reason %d: name %q empty or repeated", r, s)
		}
		seen[s] = true
	}
	if s := NumReasons.String(); s != fmt.Sprintf("Reason(%d)", NumReasons) {
		t.Fatalf("NumReasons.String() = %q", s)
	}
	for _, v := range []Verdict{Drop, Forward, ToKernel, ICMPReply, 9} {
		if v.String() == "" {
			t.Fatal("empty verdict name")
		}
	}
}

// TestParse checks parse against the lengths it must accept and refuse.
func TestParse(t *testing.T) {
	frame := fromU("2001:db8:a:100::1").frame(t) // 54 + 8 + 20 bytes
	if r := parse(frame); r != Forwarded {
		t.Fatalf("parse(valid) = %v", r)
	}
	padded := append(bytes.Clone(frame), 0, 0, 0)
	if r := parse(padded); r != Forwarded {
		t.Fatalf("parse(padded) = %v", r)
	}
	binary.BigEndian.PutUint16(padded[offPayLen:], uint16(len(padded)-minFrame+1))
	if r := parse(padded); r != Malformed {
		t.Fatalf("parse(payload length one too long) = %v", r)
	}
}
