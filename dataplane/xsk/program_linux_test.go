package xsk

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	testSrcMAC = mustMAC("02:00:00:00:0a:02")
	testDstMAC = mustMAC("02:00:00:00:0a:01")
	globalSrc  = net.ParseIP("2001:db8:a::2")
	globalDst  = net.ParseIP("2001:db8:b::2")
	localAddr  = netip.MustParseAddr("2001:db8:a::1")
)

// frame serializes layers with lengths and checksums fixed.
func frame(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true}
	for _, n := range ls {
		ip, ok := n.(*layers.IPv6)
		if !ok {
			continue
		}
		opts.ComputeChecksums = true
		for _, l := range ls {
			if c, ok := l.(interface {
				SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
			}); ok {
				_ = c.SetNetworkLayerForChecksum(ip)
			}
		}
	}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func eth6() *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: testSrcMAC, DstMAC: testDstMAC, EthernetType: layers.EthernetTypeIPv6}
}

func ip6(next layers.IPProtocol, dst net.IP, hop uint8) *layers.IPv6 {
	return &layers.IPv6{Version: 6, NextHeader: next, HopLimit: hop, SrcIP: globalSrc, DstIP: dst}
}

func icmp6(typ uint8) *layers.ICMPv6 {
	return &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, 0)}
}

func udpFrame(t testing.TB, dst net.IP, hop uint8, sport, dport uint16) []byte {
	return frame(t, eth6(), ip6(layers.IPProtocolUDP, dst, hop),
		&layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)},
		gopacket.Payload("twenty bytes payload"))
}

func echoFrame(t testing.TB, dst net.IP, hop uint8) []byte {
	return frame(t, eth6(), ip6(layers.IPProtocolICMPv6, dst, hop), icmp6(layers.ICMPv6TypeEchoRequest),
		&layers.ICMPv6Echo{Identifier: 1, SeqNumber: 1}, gopacket.Payload("ping"))
}

type verdictCase struct {
	name     string
	frame    []byte
	redirect bool // true: to the socket; false: to the kernel
}

// verdictCases covers every rule of the program.
func verdictCases(t testing.TB) []verdictCase {
	ll := net.ParseIP("fe80::1")
	solicited := net.ParseIP("ff02::1:ff00:1")
	target := net.ParseIP("2001:db8:b::2")
	hbh := []byte{
		17,               // next header: UDP
		0,                // hdr ext len: 8 bytes
		1, 4, 0, 0, 0, 0, // PadN, 4 bytes
	}
	frag := []byte{
		17,   // next header: UDP
		0,    // reserved
		0, 0, // offset 0, M=0
		0, 0, 0, 1, // identification
	}
	udp53 := frame(t, &layers.UDP{SrcPort: 40000, DstPort: 53}, gopacket.Payload("x"))
	padded := echoFrame(t, globalDst, 64)
	padded = append(padded, make([]byte, 30)...) // Ethernet padding past the IPv6 payload
	short := echoFrame(t, globalDst, 64)
	short = short[:len(short)-1] // payload length says one byte more than there is

	return []verdictCase{
		{"ipv4 udp", frame(t,
			&layers.Ethernet{SrcMAC: testSrcMAC, DstMAC: testDstMAC, EthernetType: layers.EthernetTypeIPv4},
			&layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IP{192, 0, 2, 1}, DstIP: net.IP{198, 51, 100, 1}},
			&layers.UDP{SrcPort: 1, DstPort: 53}, gopacket.Payload("x")), false},
		{"arp", frame(t,
			&layers.Ethernet{SrcMAC: testSrcMAC, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP},
			&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
				Operation: layers.ARPRequest, SourceHwAddress: testSrcMAC, SourceProtAddress: []byte{192, 0, 2, 1},
				DstHwAddress: make([]byte, 6), DstProtAddress: []byte{192, 0, 2, 2}}), false},
		{"vlan-tagged ipv6", frame(t,
			&layers.Ethernet{SrcMAC: testSrcMAC, DstMAC: testDstMAC, EthernetType: layers.EthernetTypeDot1Q},
			&layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeIPv6},
			ip6(layers.IPProtocolUDP, globalDst, 64), &layers.UDP{SrcPort: 1, DstPort: 53}), false},
		{"NS to solicited-node multicast", frame(t, eth6(), ip6(layers.IPProtocolICMPv6, solicited, 255),
			icmp6(layers.ICMPv6TypeNeighborSolicitation), &layers.ICMPv6NeighborSolicitation{TargetAddress: target}), false},
		{"NS unicast to global dst", frame(t, eth6(), ip6(layers.IPProtocolICMPv6, globalDst, 255),
			icmp6(layers.ICMPv6TypeNeighborSolicitation), &layers.ICMPv6NeighborSolicitation{TargetAddress: target}), false},
		{"NA to global dst", frame(t, eth6(), ip6(layers.IPProtocolICMPv6, globalDst, 255),
			icmp6(layers.ICMPv6TypeNeighborAdvertisement), &layers.ICMPv6NeighborAdvertisement{TargetAddress: target, Flags: 0x60}), false},
		{"RS to global dst", frame(t, eth6(), ip6(layers.IPProtocolICMPv6, globalDst, 255),
			icmp6(layers.ICMPv6TypeRouterSolicitation), &layers.ICMPv6RouterSolicitation{}), false},
		{"RA to global dst", frame(t, eth6(), ip6(layers.IPProtocolICMPv6, globalDst, 255),
			icmp6(layers.ICMPv6TypeRouterAdvertisement), &layers.ICMPv6RouterAdvertisement{HopLimit: 64, RouterLifetime: 1800}), false},
		{"Redirect to global dst", frame(t, eth6(), ip6(layers.IPProtocolICMPv6, globalDst, 255),
			icmp6(layers.ICMPv6TypeRedirect), &layers.ICMPv6Redirect{TargetAddress: target, DestinationAddress: target}), false},
		{"echo request to global dst", echoFrame(t, globalDst, 64), true},
		{"ICMPv6 type 132 (MLD done) to global dst", frame(t, eth6(), ip6(layers.IPProtocolICMPv6, globalDst, 64),
			icmp6(132), gopacket.Payload(make([]byte, 20))), true},
		{"ICMPv6 type 138 to global dst", frame(t, eth6(), ip6(layers.IPProtocolICMPv6, globalDst, 64),
			icmp6(138), gopacket.Payload(make([]byte, 20))), true},
		{"UDP to port 547", udpFrame(t, globalDst, 64, 547, 547), false},
		{"UDP from port 547", udpFrame(t, globalDst, 64, 547, 40000), false},
		{"UDP to port 546", udpFrame(t, globalDst, 64, 547, 546), false},
		{"UDP from port 546", udpFrame(t, globalDst, 64, 546, 53), false},
		{"UDP 53 to global dst", udpFrame(t, globalDst, 64, 40000, 53), true},
		{"UDP 548 to global dst", udpFrame(t, globalDst, 64, 40000, 548), true},
		{"TCP to global dst", frame(t, eth6(), ip6(layers.IPProtocolTCP, globalDst, 64),
			&layers.TCP{SrcPort: 40000, DstPort: 80, SYN: true, Window: 1000}), true},
		{"link-local dst fe80::1", udpFrame(t, ll, 64, 40000, 53), false},
		{"link-local dst febf::1 (top of fe80::/10)", udpFrame(t, net.ParseIP("febf::1"), 64, 40000, 53), false},
		{"dst fec0::1 (outside fe80::/10)", udpFrame(t, net.ParseIP("fec0::1"), 64, 40000, 53), true},
		{"multicast dst ff0e::1", udpFrame(t, net.ParseIP("ff0e::1"), 64, 40000, 53), false},
		{"multicast dst ff02::1:2 (DHCPv6)", udpFrame(t, net.ParseIP("ff02::1:2"), 1, 546, 547), false},
		{"local address", udpFrame(t, net.IP(localAddr.AsSlice()), 64, 40000, 53), false},
		{"echo to local address", echoFrame(t, net.IP(localAddr.AsSlice()), 64), false},
		{"hop limit 2", echoFrame(t, globalDst, 2), true},
		{"hop limit 1", echoFrame(t, globalDst, 1), false},
		{"hop limit 0", echoFrame(t, globalDst, 0), false},
		{"hop-by-hop header", frame(t, eth6(), ip6(layers.IPProtocolIPv6HopByHop, globalDst, 64),
			gopacket.Payload(append(append([]byte(nil), hbh...), udp53...))), false},
		{"fragment header then UDP 547 (other: redirected)", frame(t, eth6(), ip6(layers.IPProtocolIPv6Fragment, globalDst, 64),
			gopacket.Payload(append(append([]byte(nil), frag...), udpFrame(t, globalDst, 64, 547, 547)[54:]...))), true},
		{"no next header (59)", frame(t, eth6(), ip6(layers.IPProtocolNoNextHeader, globalDst, 64)), true},
		{"Ethernet padding after the payload", padded, true},
		{"frame shorter than its payload length", short, false},
		{"ICMPv6 with no header bytes", frame(t, eth6(), ip6(layers.IPProtocolICMPv6, globalDst, 64)), false},
		{"UDP with 3 header bytes", frame(t, eth6(), ip6(layers.IPProtocolUDP, globalDst, 64), gopacket.Payload{0x9c, 0x40, 0x00}), false},
	}
}

func newTestProgram(t testing.TB) *Program {
	t.Helper()
	return newTestProgramRoutes(t, nil)
}

// newTestProgramRoutes is newTestProgram with ProgramConfig.Routes set
// to routes (nil: none).
func newTestProgramRoutes(t testing.TB, routes *Routes) *Program {
	t.Helper()
	requireRoot(t)
	p, err := NewProgram(ProgramConfig{Queues: 4, Routes: routes})
	if err != nil {
		t.Fatalf("NewProgram: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	if err := p.Locals().Add(localAddr); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestProgramNoSocket runs the program with BPF_PROG_TEST_RUN and no
// socket in the XSKMAP: bpf_redirect_map then returns its flags argument,
// XDP_PASS, so every frame, redirected or not, gets XDP_PASS. This is
// the "no socket for this queue: kernel keeps the frame" fallback.
//
// The program's counters tell the two apart: frames a rule passes count
// as Passed, frames that fell back for want of a socket as NoSocket, each
// exactly once.
func TestProgramNoSocket(t *testing.T) {
	p := newTestProgram(t)
	var want ProgramStats
	for _, c := range verdictCases(t) {
		got, err := p.run(c.frame)
		if err != nil {
			t.Fatalf("%s: run: %v", c.name, err)
		}
		if got != xdpPass {
			t.Errorf("%s: verdict %d, want XDP_PASS (%d)", c.name, got, xdpPass)
		}
		if c.redirect {
			want.NoSocket++
		} else {
			want.Passed++
		}
		st, err := p.Stats()
		if err != nil {
			t.Fatalf("Stats: %v", err)
		}
		if st != want {
			t.Fatalf("%s: Stats %+v, want %+v", c.name, st, want)
		}
	}
	if want.NoSocket == 0 || want.Passed == 0 {
		t.Fatalf("the table exercised only one counter: %+v", want)
	}
}

// TestProgramVerdicts registers a bound AF_XDP socket for queue 0 (the
// queue BPF_PROG_TEST_RUN reports), so bpf_redirect_map returns
// XDP_REDIRECT (4) exactly for the frames the program sends to the
// socket. Test-run does not carry out the redirect; the end-to-end tests
// check that the frames arrive.
//
// Every verdict is counted once: XDP_REDIRECT as Redirected, XDP_PASS as
// Passed; nothing as NoSocket while the queue has its socket.
func TestProgramVerdicts(t *testing.T) {
	p := programWithSocket(t)
	var wantStats ProgramStats
	for _, c := range verdictCases(t) {
		got, err := p.run(c.frame)
		if err != nil {
			t.Fatalf("%s: run: %v", c.name, err)
		}
		want := uint32(xdpPass)
		wantStats.Passed++
		if c.redirect {
			want = xdpRedirect
			wantStats.Passed--
			wantStats.Redirected++
		}
		if got != want {
			t.Errorf("%s: verdict %d, want %d (len %d)", c.name, got, want, len(c.frame))
		}
	}
	if st, err := p.Stats(); err != nil || st != wantStats {
		t.Errorf("Stats = %+v, %v; want %+v", st, err, wantStats)
	}

	// A local address leaves the map: its frames go to the socket.
	if err := p.Locals().Delete(localAddr); err != nil {
		t.Fatal(err)
	}
	if got, _ := p.run(udpFrame(t, net.IP(localAddr.AsSlice()), 64, 40000, 53)); got != xdpRedirect {
		t.Errorf("after Delete: verdict %d, want XDP_REDIRECT", got)
	}
	if ok, err := p.Locals().Contains(localAddr); err != nil || ok {
		t.Errorf("Contains after Delete = %v, %v", ok, err)
	}

	// Truncated frames: every prefix of a frame the program would
	// redirect. The kernel refuses to test-run fewer than 14 bytes
	// (ETH_HLEN); from 14 on every prefix must pass.
	full := udpFrame(t, globalDst, 64, 40000, 53)
	if got, _ := p.run(full); got != xdpRedirect {
		t.Fatalf("full frame: verdict %d, want XDP_REDIRECT", got)
	}
	for n := 0; n <= 60; n++ {
		got, err := p.run(full[:n])
		if n < 14 {
			if err == nil {
				t.Errorf("len %d: test-run accepted a frame shorter than ETH_HLEN (verdict %d)", n, got)
			}
			continue
		}
		if err != nil || got != xdpPass {
			t.Errorf("truncated to %d bytes: verdict %d, err %v; want XDP_PASS", n, got, err)
		}
	}

	// Unregister: back to the kernel, counted as NoSocket.
	if err := p.Unregister(0); err != nil {
		t.Fatal(err)
	}
	before, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := p.run(full); got != xdpPass {
		t.Errorf("after Unregister: verdict %d, want XDP_PASS", got)
	}
	after, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if d := (ProgramStats{NoSocket: 1}); after.NoSocket-before.NoSocket != 1 ||
		after.Redirected != before.Redirected || after.Passed != before.Passed || after.Aborted != 0 {
		t.Errorf("after Unregister: Stats went from %+v to %+v, want %+v more", before, after, d)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Stats(); err == nil {
		t.Errorf("Stats after Close: no error")
	}
}

// modelRedirect is the program's rule list written plainly in Go: true
// if the frame goes to the socket. The BPF program is checked against
// it over random frames. routes is nil for a program without a Routes
// map; otherwise the prefixes in it (possibly none).
func modelRedirect(f []byte, local netip.Addr, routes *[]netip.Prefix) bool {
	if len(f) < 54 || f[12] != 0x86 || f[13] != 0xdd {
		return false
	}
	plen := int(binary.BigEndian.Uint16(f[18:]))
	if 54+plen > len(f) {
		return false // truncated
	}
	dst, _ := netip.AddrFromSlice(f[38:54])
	if dst.IsMulticast() || dst.IsLinkLocalUnicast() {
		return false
	}
	switch f[20] {
	case 0: // hop-by-hop
		return false
	case 58:
		if plen < 1 || (f[54] >= 133 && f[54] <= 137) {
			return false
		}
	case 17:
		if plen < 4 {
			return false
		}
		for _, p := range []uint16{binary.BigEndian.Uint16(f[54:]), binary.BigEndian.Uint16(f[56:])} {
			if p == 546 || p == 547 {
				return false
			}
		}
	}
	if f[21] <= 1 {
		return false
	}
	if dst == local {
		return false
	}
	if routes == nil {
		return true
	}
	for _, p := range *routes {
		if p.Contains(dst) {
			return true
		}
	}
	return false
}

// programVsModel runs the program on frame (with a socket registered, so
// redirect shows as XDP_REDIRECT) and compares with the model. routes is
// the model of p's Routes (nil if it has none). It reports whether the
// frame was redirected.
func programVsModel(t testing.TB, p *Program, routes *[]netip.Prefix, frame []byte) bool {
	if len(frame) < 14 || len(frame) > 3000 {
		return false // refused by test-run (ETH_HLEN .. about a page)
	}
	got, err := p.run(frame)
	if err != nil {
		t.Fatalf("run(% x): %v", frame, err)
	}
	want := uint32(xdpPass)
	if modelRedirect(frame, localAddr, routes) {
		want = xdpRedirect
	}
	if got != want {
		t.Fatalf("verdict %d, model says %d (routes %v), for frame of %d bytes:\n% x", got, want, routes != nil, len(frame), frame)
	}
	return got == xdpRedirect
}

// programWithSocket is newTestProgram with a bound socket registered for
// queue 0.
func programWithSocket(t testing.TB) *Program {
	return programWithSocketRoutes(t, nil)
}

// programWithSocketRoutes is programWithSocket with ProgramConfig.Routes
// set to routes (nil: none).
func programWithSocketRoutes(t testing.TB, routes *Routes) *Program {
	p := newTestProgramRoutes(t, routes)
	ns := newNS(t, "prog")
	veth(t, ns, "p0", "02:00:00:00:01:01", ns, "p1", "02:00:00:00:01:02")
	idx := ifindex(t, ns, "p0")
	u, err := NewUMEM(UMEMConfig{Frames: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	var s *Socket
	mustInNS(t, ns, func() (err error) {
		s, err = NewSocket(u, SocketConfig{Ifindex: idx, RxSize: 64, TxSize: 64, FillSize: 64, CompletionSize: 64})
		return err
	})
	if err := p.Register(0, s); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestProgramMatchesModel mutates the table's frames at the offsets the
// program reads (and anywhere else), truncates and pads them, and
// checks every verdict against the model.
//
// Every frame also runs through a program with a Routes map holding
// modelRoutes, against the model with those routes.
func TestProgramMatchesModel(t *testing.T) {
	p := programWithSocket(t)
	pr, routes := routedProgram(t)
	rng := rand.New(rand.NewPCG(1, 2))
	hot := []int{12, 13, 18, 19, 20, 21, 38, 39, 43, 44, 45, 53, 54, 55, 56, 57}
	interesting := []byte{0, 1, 2, 0x02, 0x11, 0x22, 0x23, 0x3a, 0x80, 0x84, 0x85, 0x86, 0x87, 0x89, 0xbf, 0xc0, 0xdd, 0xfe, 0xff}
	cases := verdictCases(t)
	var routed, unrouted int
	for i := 0; i < 20000; i++ {
		f := append([]byte(nil), cases[rng.IntN(len(cases))].frame...)
		for range 1 + rng.IntN(3) {
			var off int
			if rng.IntN(4) == 0 {
				off = rng.IntN(len(f))
			} else if off = hot[rng.IntN(len(hot))]; off >= len(f) {
				continue
			}
			if rng.IntN(2) == 0 {
				f[off] = interesting[rng.IntN(len(interesting))]
			} else {
				f[off] = byte(rng.Uint32())
			}
		}
		switch rng.IntN(4) {
		case 0:
			f = f[:14+rng.IntN(len(f)-13)]
		case 1:
			f = append(f, make([]byte, rng.IntN(64))...)
		}
		if programVsModel(t, p, nil, f) {
			if programVsModel(t, pr, &routes, f) {
				routed++
			} else {
				unrouted++
			}
		} else {
			programVsModel(t, pr, &routes, f)
		}
	}
	// Both outcomes of the route check must have been exercised.
	if routed < 100 || unrouted < 100 {
		t.Errorf("route check hit %d times, missed %d times: mutate more destinations", routed, unrouted)
	}
	t.Logf("redirectable frames: %d routed, %d unrouted", routed, unrouted)
}

// modelRoutes are the prefixes of routedProgram: nested ones, a /128,
// and prefixes the table's destinations reach with one or two bytes
// changed (at offsets 38, 39, 43..45).
var modelRoutes = []netip.Prefix{
	netip.MustParsePrefix("2001:db8:b::/48"),     // globalDst
	netip.MustParsePrefix("2001:db8:b:1::/64"),   // inside the /48
	netip.MustParsePrefix("2001:db8:b:2::2/128"), // inside the /48 too
	netip.MustParsePrefix("2001:db8:c::2/128"),   // globalDst with byte 43 = 0x0c
	netip.MustParsePrefix("2001:db8:a::/48"),     // holds localAddr (still passes)
	netip.MustParsePrefix("fec0::/10"),
	netip.MustParsePrefix("3000::/4"),
}

// routedProgram is programWithSocket with a Routes map holding
// modelRoutes; it returns a copy of them for the model.
func routedProgram(t testing.TB) (*Program, []netip.Prefix) {
	t.Helper()
	requireRoot(t)
	r, err := NewRoutes(0)
	if err != nil {
		t.Fatalf("NewRoutes: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	for _, pfx := range modelRoutes {
		if err := r.Add(pfx); err != nil {
			t.Fatal(err)
		}
	}
	return programWithSocketRoutes(t, r), append([]netip.Prefix(nil), modelRoutes...)
}

// FuzzProgram compares the XDP program with the model on any frame, both
// without a Routes map and with one holding modelRoutes.
// Needs root (BPF_PROG_TEST_RUN).
func FuzzProgram(f *testing.F) {
	for _, c := range verdictCases(f) {
		f.Add(c.frame)
	}
	p := programWithSocket(f)
	pr, routes := routedProgram(f)
	f.Fuzz(func(t *testing.T, frame []byte) {
		programVsModel(t, p, nil, frame)
		programVsModel(t, pr, &routes, frame)
	})
}

// slash56 is the i-th /56 of 2400::/16 (up to 2^24 of them).
func slash56(i int) netip.Prefix {
	var a [16]byte
	a[0], a[1], a[4], a[5], a[6] = 0x24, 0x00, byte(i>>16), byte(i>>8), byte(i)
	return netip.PrefixFrom(netip.AddrFrom16(a), 56)
}

// BenchmarkProgram times the XDP program per frame in the kernel
// (BPF_PROG_TEST_RUN with repeat), by verdict path.
// The routed-* cases use a program with a Routes map (modelRoutes).
func BenchmarkProgram(b *testing.B) {
	p := programWithSocket(b)
	pr, _ := routedProgram(b)
	// 100k delegated /56s, as a large edge has, and a destination in one.
	r100k, err := NewRoutes(100_000)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r100k.Close() })
	for i := range 100_000 {
		if err := r100k.Add(slash56(i)); err != nil {
			b.Fatal(err)
		}
	}
	p100k := programWithSocketRoutes(b, r100k)
	hit100k := slash56(54_321).Addr().Next()
	for _, c := range []struct {
		name  string
		p     *Program
		frame []byte
	}{
		{"redirect", p, udpFrame(b, globalDst, 64, 40000, 53)},
		{"pass-ipv4", p, verdictCases(b)[0].frame},
		{"pass-dhcpv6", p, udpFrame(b, globalDst, 64, 546, 547)},
		{"pass-local", p, udpFrame(b, net.IP(localAddr.AsSlice()), 64, 40000, 53)},
		{"routed-redirect", pr, udpFrame(b, globalDst, 64, 40000, 53)},
		{"routed-pass-noroute", pr, udpFrame(b, net.ParseIP("2001:db8:d::2"), 64, 40000, 53)},
		{"routed-100k-56-redirect", p100k, udpFrame(b, net.IP(hit100k.AsSlice()), 64, 40000, 53)},
		{"routed-100k-56-pass-noroute", p100k, udpFrame(b, net.ParseIP("2001:db8:d::2"), 64, 40000, 53)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			_, per, err := c.p.prog.Benchmark(c.frame, b.N, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(per.Nanoseconds()), "ns/frame")
		})
	}
}
