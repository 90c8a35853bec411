package dataplane

import (
	"github.com/pdrelay/pdrelay/internal/csum"

	"bytes"
	"encoding/binary"
	"maps"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/pdrelay/pdrelay/fib"
)

// loopA and loopB are looping packets on A (point-to-point) and B (same
// MAC on a multi-access link).
func loopA(payload int) pkt {
	p := fromA(clientA1, "2001:db8:a:100::99")
	p.payload = payload
	return p
}

func loopB(payload int) pkt {
	p := fromB(macB1, clientB1, "2001:db8:b:100::99")
	p.payload = payload
	return p
}

// inBuf returns frame in a buffer with room beyond it: cap is
// len(frame)+room.
func inBuf(frame []byte, room int) []byte {
	b := make([]byte, len(frame), len(frame)+room)
	copy(b, frame)
	return b
}

func TestICMPReject(t *testing.T) {
	snap := testSnapshot(t, true)
	echo := func(p pkt) pkt {
		p.nh, p.l4 = layers.IPProtocolICMPv6, icmp6(128, 0, 0, 1, 0, 1, 'p', 'i', 'n', 'g')
		return p
	}
	for _, c := range []struct {
		name  string
		in    fib.PortID
		pkt   pkt
		room  int    // buffer bytes beyond the frame
		pad   int    // Ethernet padding
		src   string // ICMPv6 source
		quote int    // bytes of the invoking packet quoted; -1: all of it
	}{
		{"point-to-point, link-local source", portA, loopA(100), 512, 0, "fe80::a", -1},
		{"multi-access, configured source", portB, loopB(100), 512, 0, "2001:db8:ffff::1", -1},
		{"echo request", portA, echo(loopA(0)), 512, 0, "fe80::a", -1},
		{"1500-byte packet: cut at 1280", portA, loopA(1500 - 48), 2048 - 1514, 0, "fe80::a", 1280 - 48},
		{"9000-byte packet: cut at 1280", portA, loopA(9000 - 48), 100, 0, "fe80::a", 1280 - 48},
		{"no room: cut at cap", portA, loopA(200), 0, 0, "fe80::a", 40 + 8 + 200 - 48},
		{"some room", portA, loopA(200), 20, 0, "fe80::a", 40 + 8 + 200 - 28},
		{"cap 62: header only", portA, loopA(0), 0, 0, "fe80::a", 0},
		{"padding not quoted", portA, loopA(0), 100, 12, "fe80::a", -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newForwarder(t, testConfig(true))
			orig := c.pkt.frame(t)
			orig = append(orig, make([]byte, c.pad)...)
			frame := inBuf(orig, c.room)
			before := totals(t, f)
			v, r, out, n := f.Forward(snap, c.in, frame, 0)
			if v != ICMPReply || r != Loop || out != c.in {
				t.Fatalf("Forward = %v %v port %d, want icmp-reply loop port %d", v, r, out, c.in)
			}
			if got, want := moved(before, totals(t, f)), wantMoved(c.in, len(orig), Drop, Loop, 0, ICMPSent); !maps.Equal(got, want) {
				t.Errorf("counters moved %v, want %v", got, want)
			}
			invoking := orig[offIP6 : len(orig)-c.pad]
			quote := c.quote
			if quote < 0 {
				quote = len(invoking)
			}
			if n != offICMPQuote+quote || n > cap(frame) || n-ethLen > minMTU {
				t.Fatalf("n = %d, want %d (cap %d)", n, offICMPQuote+quote, cap(frame))
			}
			checkReject(t, frame[:n], orig, portMAC(c.in), netip.MustParseAddr(c.src), invoking[:quote])
		})
	}
}

// checkReject decodes an ICMPv6 reject-route error with gopacket and
// checks it field by field against the frame orig that invoked it.
func checkReject(t *testing.T, frame, orig []byte, portMAC [6]byte, src netip.Addr, quote []byte) {
	t.Helper()
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("does not decode: %v", el.Error())
	}
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip, _ := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	icmp, _ := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	if eth == nil || ip == nil || icmp == nil {
		t.Fatalf("layers missing: %v", p)
	}
	if !bytes.Equal(eth.DstMAC, orig[offSrcMAC:offSrcMAC+6]) || !bytes.Equal(eth.SrcMAC, portMAC[:]) || eth.EthernetType != layers.EthernetTypeIPv6 {
		t.Errorf("Ethernet: dst %v src %v type %v; want dst %x (the sender) src %x (the port)", eth.DstMAC, eth.SrcMAC, eth.EthernetType, orig[6:12], portMAC)
	}
	origSrc := net.IP(orig[offSrc : offSrc+16])
	if ip.Version != 6 || ip.TrafficClass != 0 || ip.FlowLabel != 0 || ip.HopLimit != 255 || ip.NextHeader != layers.IPProtocolICMPv6 {
		t.Errorf("IPv6: version %d class %d flow %d hop limit %d next header %v", ip.Version, ip.TrafficClass, ip.FlowLabel, ip.HopLimit, ip.NextHeader)
	}
	if !ip.SrcIP.Equal(net.IP(src.AsSlice())) || !ip.DstIP.Equal(origSrc) {
		t.Errorf("IPv6: %v → %v, want %v → %v", ip.SrcIP, ip.DstIP, src, origSrc)
	}
	if int(ip.Length) != icmpHdrLen+len(quote) || len(frame) != offL4+int(ip.Length) {
		t.Errorf("IPv6 payload length %d, frame %d bytes, want %d", ip.Length, len(frame), icmpHdrLen+len(quote))
	}
	if icmp.TypeCode != layers.CreateICMPv6TypeCode(layers.ICMPv6TypeDestinationUnreachable, layers.ICMPv6CodeRejectRouteToDst) {
		t.Errorf("ICMPv6 %v, want destination unreachable, reject route", icmp.TypeCode)
	}
	if len(icmp.Payload) < 4 || !bytes.Equal(icmp.Payload[:4], []byte{0, 0, 0, 0}) {
		t.Fatalf("ICMPv6 unused field: %x", icmp.Payload)
	}
	if !bytes.Equal(icmp.Payload[4:], quote) {
		t.Errorf("quoted packet\n got %x\nwant %x", icmp.Payload[4:], quote)
	}
	// The checksum three ways: gopacket's verification, an independent
	// ones' complement sum over pseudo-header and message, and gopacket
	// serializing the same message.
	if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	if err, res := icmp.VerifyChecksum(); err != nil || !res.Valid {
		t.Errorf("gopacket: checksum %+v %v", res, err)
	}
	msg := frame[offL4:]
	pseudo := append(append(append([]byte{}, frame[offSrc:offSrc+32]...),
		byte(len(msg)>>24), byte(len(msg)>>16), byte(len(msg)>>8), byte(len(msg))), 0, 0, 0, 58)
	var sum uint32
	for _, b := range [][]byte{pseudo, msg} {
		for i := 0; i < len(b); i += 2 {
			w := uint32(b[i]) << 8
			if i+1 < len(b) {
				w |= uint32(b[i+1])
			}
			sum += w
		}
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	if sum != 0xffff {
		t.Errorf("ones' complement sum over pseudo-header and message = %#x, want 0xffff", sum)
	}
	re := &layers.ICMPv6{TypeCode: icmp.TypeCode}
	if err := re.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, re, gopacket.Payload(icmp.Payload)); err != nil {
		t.Fatal(err)
	}
	if got, want := binary.BigEndian.Uint16(frame[offICMPCsum:]), binary.BigEndian.Uint16(buf.Bytes()[2:]); got != want {
		t.Errorf("checksum %#04x, gopacket computes %#04x", got, want)
	}
}

// TestICMPNotSent covers the packets RFC 4443 2.4(e) forbids answering,
// and those this package cannot answer: they are dropped as loops with no
// ICMPv6 error and no token taken.
func TestICMPNotSent(t *testing.T) {
	snap := testSnapshot(t, true)
	raw := func(nh layers.IPProtocol, l4 ...byte) pkt {
		p := loopA(0)
		p.nh, p.l4 = nh, append([]byte{}, l4...) // not nil: no UDP
		return p
	}
	const (
		destOpts = layers.IPProtocolIPv6Destination
		fragment = layers.IPProtocolIPv6Fragment
		routing  = layers.IPProtocolIPv6Routing
		icmpv6   = layers.IPProtocolICMPv6
	)
	cases := []struct {
		name string
		pkt  pkt
		room int  // buffer bytes beyond the frame; 0: 512
		mac  bool // link-layer multicast destination
		trim bool // without the Ethernet padding gopacket adds
		want bool // an ICMPv6 error is sent
	}{
		{name: "destination unreachable", pkt: raw(icmpv6, icmp6(1, 0, 0, 0, 0, 0)...)},
		{name: "packet too big", pkt: raw(icmpv6, icmp6(2, 0, 0, 0, 5, 0xdc)...)},
		{name: "time exceeded", pkt: raw(icmpv6, icmp6(3, 0, 0, 0, 0, 0)...)},
		{name: "parameter problem", pkt: raw(icmpv6, icmp6(4, 0, 0, 0, 0, 0)...)},
		{name: "error type 127", pkt: raw(icmpv6, icmp6(127, 0)...)},
		{name: "ICMPv6 cut before its type", pkt: raw(icmpv6)},
		{name: "echo request", pkt: raw(icmpv6, icmp6(128, 0, 0, 1, 0, 1)...), want: true},
		{name: "echo reply", pkt: raw(icmpv6, icmp6(129, 0, 0, 1, 0, 1)...), want: true},
		{name: "error behind destination options", pkt: raw(destOpts,
			58, 0, // next header ICMPv6, length 0 (8 bytes)
			1, 4, 0, 0, 0, 0, // PadN option, 4 bytes
			1, 0, 0, 0, 0, 0, 0, 0)}, // ICMPv6 destination unreachable
		{name: "echo behind destination options", pkt: raw(destOpts,
			58, 0, 1, 4, 0, 0, 0, 0,
			128, 0, 0, 0, 0, 1, 0, 1), want: true},
		{name: "error in a first fragment", pkt: raw(fragment,
			58, 0, // next header ICMPv6, reserved
			0, 1, // offset 0, more fragments
			0, 0, 0, 42, // identification
			3, 0, 0, 0, 0, 0, 0, 0)}, // ICMPv6 time exceeded
		{name: "echo in a first fragment", pkt: raw(fragment,
			58, 0, 0, 1, 0, 0, 0, 42,
			128, 0, 0, 0, 0, 1, 0, 1), want: true},
		{name: "non-first fragment", pkt: raw(fragment,
			17, 0, // next header UDP
			0, 8, // offset 1 (8 bytes), last fragment
			0, 0, 0, 42,
			0, 0, 0, 0, 0, 0, 0, 0)},
		{name: "UDP behind a routing header", pkt: raw(routing,
			17, 0, // next header UDP, length 0
			0, 0, 0, 0, 0, 0, // routing type 0, segments left 0, reserved
			0x9c, 0x40, 0x13, 0x89, 0, 8, 0, 0), want: true},
		{name: "extension header cut short", pkt: raw(destOpts, 58)},
		{name: "extension header longer than the packet", pkt: raw(destOpts, 58, 9, 0, 0, 0, 0, 0, 0)},
		{name: "no next header", pkt: raw(layers.IPProtocolNoNextHeader), room: 8, want: true},
		{name: "no room for the ICMPv6 header", pkt: raw(layers.IPProtocolNoNextHeader), trim: true, room: 7},
		{name: "link-layer multicast", pkt: loopA(10), mac: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newForwarder(t, testConfig(true))
			orig := c.pkt.frame(t)
			if c.trim {
				orig = orig[:offIP6+ipLen(orig)]
			}
			if c.mac {
				copy(orig, []byte{0x33, 0x33, 0, 0, 0, 1})
			}
			room := c.room
			if room == 0 {
				room = 512
			}
			frame := inBuf(orig, room)
			before := totals(t, f)
			v, r, _, n := f.Forward(snap, portA, frame, 0)
			if got := v == ICMPReply; got != c.want || r != Loop {
				t.Fatalf("Forward = %v %v, want an ICMPv6 error: %v", v, r, c.want)
			}
			extra := []Reason{}
			if c.want {
				extra = append(extra, ICMPSent)
				quote := orig[offIP6:]
				quote = quote[:min(len(quote), cap(frame)-offICMPQuote)]
				checkReject(t, frame[:n], orig, macA, netip.MustParseAddr("fe80::a"), quote)
			} else if n != 0 || !bytes.Equal(frame, orig) {
				t.Fatalf("dropped frame: n = %d, changed %v", n, !bytes.Equal(frame, orig))
			}
			if got, want := moved(before, totals(t, f)), wantMoved(portA, len(orig), Drop, Loop, 0, extra...); !maps.Equal(got, want) {
				t.Errorf("counters moved %v, want %v", got, want)
			}
		})
	}
}

// TestICMPRateLimit: a burst of ICMPBurst errors, then one per 1/ICMPRate
// seconds of the now passed in, per port, shared by clones.
func TestICMPRateLimit(t *testing.T) {
	snap := testSnapshot(t, true)
	f := newForwarder(t, testConfig(true)) // 100/s, burst 10
	g := f.Clone()
	const ms = int64(1e6)
	send := func(fw *Forwarder, in fib.PortID, now int64) bool {
		p := loopA(10)
		if in == portB {
			p = loopB(10)
		}
		v, r, _, _ := fw.Forward(snap, in, inBuf(p.frame(t), 100), now)
		if r != Loop {
			t.Fatalf("not a loop: %v", r)
		}
		return v == ICMPReply
	}
	burst := func(fw *Forwarder, in fib.PortID, now int64) int {
		n := 0
		for range 50 {
			if send(fw, in, now) {
				n++
			}
		}
		return n
	}
	start := int64(1234567890123)
	if n := burst(f, portA, start); n != 10 {
		t.Fatalf("burst at start: %d errors, want 10", n)
	}
	if n := burst(g, portA, start+5*ms); n != 0 {
		t.Fatalf("clone after 5ms: %d errors, want 0 (the limit is the port's)", n)
	}
	if n := burst(f, portB, start); n != 10 {
		t.Fatalf("port B: %d errors, want 10 (A's limit is A's)", n)
	}
	if n := burst(g, portA, start+10*ms); n != 1 {
		t.Fatalf("after 10ms: %d errors, want 1", n)
	}
	if n := burst(f, portA, start+45*ms); n != 3 {
		t.Fatalf("after 45ms: %d errors, want 3", n)
	}
	if n := burst(f, portA, start+1000*ms); n != 10 {
		t.Fatalf("after 1s: %d errors, want 10 (the burst, no more)", n)
	}
	// Counters: every packet a loop, sent or limited.
	f.Flush()
	g.Flush()
	st, _ := f.Counters(portA)
	if st.ByReason[Loop] != 250 || st.ByReason[ICMPSent] != 24 || st.ByReason[ICMPRateLimited] != 226 {
		t.Fatalf("port A: loop %d, icmp sent %d, rate limited %d", st.ByReason[Loop], st.ByReason[ICMPSent], st.ByReason[ICMPRateLimited])
	}

	// The clock going back an hour does not silence the port for an hour.
	if n := burst(f, portA, start-3600_000*ms); n != 10 {
		t.Fatalf("after the clock went back: %d errors, want 10", n)
	}
	if n := burst(f, portA, start-3600_000*ms+5*ms); n != 0 {
		t.Fatalf("then 5ms on: %d errors, want 0", n)
	}

	// Another rate.
	cfg := testConfig(true)
	cfg.ICMPRate, cfg.ICMPBurst = 1000, 1
	h := newForwarder(t, cfg)
	for i := range int64(5) {
		if n := burst(h, portA, i*ms); n != 1 {
			t.Fatalf("1000/s, burst 1, at %dms: %d errors, want 1", i, n)
		}
	}
	if n := burst(h, portA, 4*ms+999_999); n != 0 {
		t.Fatalf("1000/s before the next ms: %d errors", n)
	}
}

func TestChecksumHelpers(t *testing.T) {
	// RFC 1071's example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := csum.Fold(csum.Sum(b)); got != 0xddf2 {
		t.Fatalf("sum = %#x, want 0xddf2", got)
	}
	for l := range len(b) + 1 { // odd lengths and the 8-byte loop
		var want uint32
		for i := 0; i < l; i += 2 {
			w := uint32(b[i]) << 8
			if i+1 < l {
				w |= uint32(b[i+1])
			}
			want += w
		}
		for want > 0xffff {
			want = want&0xffff + want>>16
		}
		if got := csum.Fold(csum.Sum(b[:l])); uint32(got) != want {
			t.Fatalf("%d bytes: %#x, want %#x", l, got, want)
		}
	}
}
