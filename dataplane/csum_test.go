package dataplane

import (
	"github.com/pdrelay/pdrelay/internal/csum"

	"bytes"
	"encoding/binary"
	"maps"
	"math/rand/v2"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/pdrelay/pdrelay/fib"
)

// The frames of the checksum tests: from client A1's 2001:db8:a:100::5 to
// 2001:4860::8888, arriving on port A.
var (
	csumEth = []byte{
		0x02, 0, 0, 0, 0, 0x03, // destination MAC: port A
		0x0c, 0, 0, 0, 0xa1, 0x01, // source MAC: client A1
		0x86, 0xdd, // EtherType IPv6
	}
	csumSrc = []byte{0x20, 0x01, 0x0d, 0xb8, 0x00, 0x0a, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0x05}    // 2001:db8:a:100::5
	csumDst = []byte{0x20, 0x01, 0x48, 0x60, 0x00, 0x00, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0x88, 0x88} // 2001:4860::8888
	csumSeg = []byte{0x20, 0x01, 0x0d, 0xb8, 0x00, 0x05, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0x01}    // 2001:db8:5::1, a segment on the way
)

// UDP and TCP packets with the partial checksum a Linux sender leaves: the
// checksum field holds P, the folded pseudo-header sum (src, dst
// 2001:4860::8888, length, protocol).
var (
	udpPartial = []byte{
		0x9c, 0x40, // source port 40000
		0x13, 0x89, // destination port 5001
		0x00, 0x0d, // length 13
		0x1f, 0xd0, // checksum: partial, P
		'h', 'e', 'l', 'l', 'o', // data
	}
	// udpFull is udpPartial's complete checksum.
	udpFull    = uint16(0xec86)
	tcpPartial = []byte{
		0x9c, 0x40, // source port 40000
		0x00, 0x50, // destination port 80
		0, 0, 0, 1, // sequence number 1
		0, 0, 0, 0, // acknowledgment number
		0x50, 0x02, // data offset 5 (20 bytes), flags SYN
		0xfa, 0xf0, // window 64240
		0x1f, 0xcf, // checksum: partial, P
		0, 0, // urgent pointer
		'G', 'E', 'T', // data
	}
	tcpFull = uint16(0x5d66)
)

// withCsum returns a copy of an upper-layer packet with the checksum at
// at set to c.
func withCsum(l4 []byte, at int, c uint16) []byte {
	b := bytes.Clone(l4)
	binary.BigEndian.PutUint16(b[at:], c)
	return b
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

type csumCase struct {
	name string
	ip   []byte // IPv6 header bytes 4-7: payload length, next header, hop limit
	dst  []byte // the IPv6 destination; nil: csumDst
	pay  []byte // the IPv6 payload: extension headers and upper layer
	pad  int    // bytes of Ethernet padding (0xee) after the packet

	// For the upper layer's checksum, computed by the test the slow way:
	proto   uint8  // 17 or 6; 0: the case has no checksum to check
	l4      int    // where the upper layer starts in pay
	n       int    // its length; 0: the rest of pay
	final   []byte // the pseudo-header's destination; nil: the IPv6 destination
	partial bool   // the checksum field holds P (checked)
	changed bool   // CompleteChecksum completes it
	want    uint16 // the checksum after, if changed
	valid   bool   // the checksum verifies afterwards
}

var csumCases = []csumCase{
	{name: "udp partial", ip: []byte{0x00, 0x0d, 17, 64}, // payload length 13, next header UDP, hop limit 64
		pay: udpPartial, proto: 17, partial: true, changed: true, want: udpFull, valid: true},
	{name: "udp complete", ip: []byte{0x00, 0x0d, 17, 64},
		pay: withCsum(udpPartial, 6, udpFull), proto: 17, valid: true},
	{name: "udp corrupt", ip: []byte{0x00, 0x0d, 17, 64},
		pay: withCsum(udpPartial, 6, udpFull^0x0100), proto: 17},
	{name: "udp zero (no checksum)", ip: []byte{0x00, 0x0d, 17, 64},
		pay: withCsum(udpPartial, 6, 0), proto: 17},
	{name: "udp complete and equal to P", ip: []byte{0x00, 0x0a, 17, 64}, // payload length 10
		pay: []byte{
			0x9c, 0x40, // source port 40000
			0x13, 0x89, // destination port 5001
			0x00, 0x0a, // length 10
			0x1f, 0xcd, // checksum: P, and correct for this data
			0x10, 0x92, // data
		}, proto: 17, partial: true, valid: true},
	{name: "udp partial completing to 0: sent as 0xffff", ip: []byte{0x00, 0x0a, 17, 64},
		pay: []byte{
			0x9c, 0x40, // source port 40000
			0x13, 0x89, // destination port 5001
			0x00, 0x0a, // length 10
			0x1f, 0xcd, // checksum: partial, P
			0x30, 0x5f, // data: the sum then is 0xffff, its complement 0
		}, proto: 17, partial: true, changed: true, want: 0xffff, valid: true},
	{name: "udp partial, Ethernet padding", ip: []byte{0x00, 0x0d, 17, 64},
		pay: udpPartial, pad: 6, proto: 17, partial: true, changed: true, want: udpFull, valid: true},
	{name: "udp partial, shorter than the IPv6 payload", ip: []byte{0x00, 0x10, 17, 64}, // payload length 16
		pay:   cat(udpPartial, []byte{0xee, 0xee, 0xee}), // 3 bytes after the UDP length
		proto: 17, n: 13, partial: true, changed: true, want: udpFull, valid: true},
	{name: "tcp partial", ip: []byte{0x00, 0x17, 6, 64}, // payload length 23, next header TCP
		pay: tcpPartial, proto: 6, partial: true, changed: true, want: tcpFull, valid: true},
	{name: "tcp partial, Ethernet padding", ip: []byte{0x00, 0x17, 6, 64},
		pay: tcpPartial, pad: 5, proto: 6, partial: true, changed: true, want: tcpFull, valid: true},
	{name: "tcp complete", ip: []byte{0x00, 0x17, 6, 64},
		pay: withCsum(tcpPartial, 16, tcpFull), proto: 6, valid: true},
	{name: "tcp corrupt", ip: []byte{0x00, 0x17, 6, 64},
		pay: withCsum(tcpPartial, 16, tcpFull^0x0001), proto: 6},
	{name: "udp partial behind destination options", ip: []byte{0x00, 0x15, 60, 64}, // payload length 21, next header destination options
		pay: cat([]byte{
			17, 0, // next header UDP, length 0 (8 bytes)
			1, 4, 0, 0, 0, 0, // PadN, 4 bytes
		}, udpPartial), proto: 17, l4: 8, partial: true, changed: true, want: udpFull, valid: true},
	{name: "tcp partial behind hop-by-hop, segment routing (0 left) and AH", ip: []byte{0x00, 0x4f, 0, 64}, // payload length 79, next header hop-by-hop
		pay: cat([]byte{
			43, 0, // next header routing, length 0 (8 bytes)
			1, 4, 0, 0, 0, 0, // PadN, 4 bytes
			51, 2, 4, 0, // next header AH, length 2 (24 bytes), type 4 (segment routing), segments left 0
			0, 0, 0, 0, // last entry 0, flags, tag
		}, csumDst, []byte{ // Segment List[0]: the destination
			6, 4, 0, 0, // next header TCP, AH payload length 4 ((4+2)*4 = 24 bytes), reserved
			0, 0, 0x10, 0x01, // SPI
			0, 0, 0, 1, // sequence number
			0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, // ICV
		}, tcpPartial), proto: 6, l4: 56, partial: true, changed: true, want: tcpFull, valid: true},
	{name: "udp partial behind segment routing, 1 left: the final destination", ip: []byte{0x00, 0x35, 43, 64}, // payload length 53, next header routing
		dst: csumSeg,
		pay: cat([]byte{
			17, 4, 4, 1, // next header UDP, length 4 (40 bytes), type 4 (segment routing), segments left 1
			1, 0, 0, 0, // last entry 1, flags, tag
		}, csumDst, csumSeg, // Segment List[0] (the final destination), [1] (the current one)
			udpPartial), final: csumDst, proto: 17, l4: 40, partial: true, changed: true, want: udpFull, valid: true},
	{name: "udp partial behind a type 2 routing header: the home address", ip: []byte{0x00, 0x25, 43, 64}, // payload length 37
		dst: csumSeg,
		pay: cat([]byte{
			17, 2, 2, 1, // next header UDP, length 2 (24 bytes), type 2 (mobility), segments left 1
			0, 0, 0, 0, // reserved
		}, csumDst, // home address: the final destination
			udpPartial), final: csumDst, proto: 17, l4: 24, partial: true, changed: true, want: udpFull, valid: true},
	{name: "type 0 routing header with segments left: left alone", ip: []byte{0x00, 0x25, 43, 64},
		dst: csumSeg,
		pay: cat([]byte{
			17, 2, 0, 1, // next header UDP, length 2 (24 bytes), type 0 (deprecated), segments left 1
			0, 0, 0, 0, // reserved
		}, csumDst, udpPartial), final: csumDst, proto: 17, l4: 24, partial: true},
	{name: "two routing headers: left alone", ip: []byte{0x00, 0x1d, 43, 64}, // payload length 29
		pay: cat([]byte{
			43, 0, 4, 0, // next header routing, length 0 (8 bytes), type 4, segments left 0
			0, 0, 0, 0, // last entry, flags, tag
			17, 0, 4, 0, // next header UDP, the same again
			0, 0, 0, 0,
		}, udpPartial), proto: 17, l4: 16, partial: true},
	{name: "first fragment: left alone", ip: []byte{0x00, 0x15, 44, 64}, // next header fragment
		pay: cat([]byte{
			17, 0, 0x00, 0x01, // next header UDP, reserved, offset 0, more fragments
			0, 0, 0, 0x2a, // identification
		}, udpPartial), proto: 17, l4: 8, partial: true},
	{name: "later fragment: left alone", ip: []byte{0x00, 0x15, 44, 64},
		pay: cat([]byte{
			17, 0, 0x00, 0x08, // next header UDP, reserved, offset 1 (8 bytes), last fragment
			0, 0, 0, 0x2a, // identification
		}, udpPartial)},
	{name: "esp: left alone", ip: []byte{0x00, 0x15, 50, 64}, // next header ESP
		pay: cat([]byte{
			0, 0, 0x10, 0x01, // SPI
			0, 0, 0, 1, // sequence number
		}, udpPartial)},
	{name: "icmpv6: left alone", ip: []byte{0x00, 0x0d, 58, 64}, // next header ICMPv6
		pay: udpPartial},
	{name: "udp partial behind eight destination options headers", ip: []byte{0x00, 0x4d, 60, 64}, // payload length 77
		pay: cat(bytes.Repeat([]byte{60, 0, 1, 4, 0, 0, 0, 0}, 7), // 7 × (next header destination options, 8 bytes, PadN)
			[]byte{17, 0, 1, 4, 0, 0, 0, 0}, // next header UDP
			udpPartial), proto:              17, l4: 64, partial: true, changed: true, want: udpFull, valid: true},
	{name: "nine destination options headers: left alone", ip: []byte{0x00, 0x55, 60, 64}, // payload length 85
		pay: cat(bytes.Repeat([]byte{60, 0, 1, 4, 0, 0, 0, 0}, 8), // 8 × (next header destination options, 8 bytes, PadN)
			[]byte{17, 0, 1, 4, 0, 0, 0, 0}, // next header UDP
			udpPartial), proto:              17, l4: 72, partial: true},
	{name: "udp header cut short", ip: []byte{0x00, 0x04, 17, 64}, // payload length 4
		pay: []byte{0x9c, 0x40, 0x13, 0x89}}, // ports only
	{name: "udp length beyond the packet", ip: []byte{0x00, 0x0d, 17, 64},
		pay: []byte{
			0x9c, 0x40, 0x13, 0x89, // ports
			0x00, 0x0e, // length 14, one more than there is
			0x1f, 0xd1, // checksum: P for length 14
			'h', 'e', 'l', 'l', 'o',
		}},
	{name: "udp length below its header", ip: []byte{0x00, 0x0d, 17, 64},
		pay: []byte{
			0x9c, 0x40, 0x13, 0x89, // ports
			0x00, 0x07, // length 7
			0x1f, 0xca, // checksum: P for length 7
			'h', 'e', 'l', 'l', 'o',
		}},
	{name: "udp length 0 (jumbogram)", ip: []byte{0x00, 0x0d, 17, 64},
		pay: []byte{
			0x9c, 0x40, 0x13, 0x89, // ports
			0x00, 0x00, // length 0
			0x1f, 0xc3, // checksum: P for length 0
			'h', 'e', 'l', 'l', 'o',
		}},
	{name: "tcp header cut short", ip: []byte{0x00, 0x13, 6, 64}, // payload length 19
		pay:   withCsum(tcpPartial[:19], 16, 0x1fcb), // checksum: P for length 19
		proto: 6, partial: true},
	{name: "tcp cut short before its checksum", ip: []byte{0x00, 0x10, 6, 64}, // payload length 16
		pay: tcpPartial[:16]},
	{name: "tcp data offset beyond the segment", ip: []byte{0x00, 0x17, 6, 64},
		pay:   withCsum(func() []byte { b := bytes.Clone(tcpPartial); b[12] = 0x60; return b }(), 16, 0x1fcf), // data offset 6 (24 bytes) in 23, checksum P
		proto: 6, partial: true},
	{name: "tcp data offset below 5", ip: []byte{0x00, 0x17, 6, 64},
		pay:   withCsum(func() []byte { b := bytes.Clone(tcpPartial); b[12] = 0x40; return b }(), 16, 0x1fcf), // data offset 4, checksum P
		proto: 6, partial: true},
	{name: "extension header beyond the packet", ip: []byte{0x00, 0x15, 60, 64},
		pay: cat([]byte{
			17, 5, // next header UDP, length 5 (48 bytes): more than the payload
			1, 4, 0, 0, 0, 0,
		}, udpPartial)},
	{name: "routing header with segments left cut short", ip: []byte{0x00, 0x10, 43, 64}, // payload length 16
		dst: csumSeg,
		pay: cat([]byte{
			17, 4, 4, 1, // next header UDP, length 4 (40 bytes), type 4, segments left 1
			1, 0, 0, 0, // last entry, flags, tag
		}, csumDst[:8])}, // the payload ends here
	{name: "routing header too short for an address", ip: []byte{0x00, 0x15, 43, 64},
		dst: csumSeg,
		pay: cat([]byte{
			17, 0, 4, 1, // next header UDP, length 0 (8 bytes), type 4, segments left 1
			0, 0, 0, 0,
		}, udpPartial)},
	{name: "routing header with segments left and no address, last in the packet", ip: []byte{0x00, 0x08, 43, 64}, // payload length 8
		dst: csumSeg,
		pay: []byte{
			17, 0, 4, 1, // next header UDP, length 0 (8 bytes), type 4, segments left 1
			0, 0, 0, 0,
		}},
	{name: "extension header cut short", ip: []byte{0x00, 0x04, 60, 64}, // payload length 4
		pay: []byte{17, 0, 1, 4}},
	{name: "no payload", ip: []byte{0x00, 0x00, 17, 64}},
}

// frame builds a case's frame.
func (c *csumCase) frame() []byte {
	dst := c.dst
	if dst == nil {
		dst = csumDst
	}
	return cat(csumEth,
		[]byte{0x60, 0, 0, 0}, // version 6, traffic class 0, flow label 0
		c.ip, csumSrc, dst, c.pay, bytes.Repeat([]byte{0xee}, c.pad))
}

// refSum is the ones' complement sum of the pseudo-header (src, dst,
// length of l4, proto) and l4, the slow obvious way (RFC 1071): 16-bit
// words added one at a time with an end-around carry. A checksum field
// holding the complete checksum makes it 0xffff.
func refSum(src, dst []byte, proto uint8, l4 []byte) uint16 {
	var s uint32
	add := func(w uint32) {
		s += w
		if s > 0xffff {
			s = s&0xffff + 1
		}
	}
	word := func(b []byte, i int) uint32 {
		w := uint32(b[i]) << 8
		if i+1 < len(b) {
			w |= uint32(b[i+1])
		}
		return w
	}
	for i := 0; i < 16; i += 2 {
		add(word(src, i))
		add(word(dst, i))
	}
	add(uint32(len(l4)) >> 16)
	add(uint32(len(l4)) & 0xffff)
	add(uint32(proto))
	for i := 0; i < len(l4); i += 2 {
		add(word(l4, i))
	}
	return uint16(s)
}

// TestCompleteChecksum runs CompleteChecksum over byte-literal frames:
// partial checksums of UDP and TCP, alone and behind extension headers,
// are completed and then verify by two independent computations (refSum
// and gopacket's); complete, corrupt and zero checksums stay, and so does
// everything it cannot follow, cut short or garbled. Nothing but the two
// checksum bytes ever changes.
func TestCompleteChecksum(t *testing.T) {
	for _, c := range csumCases {
		t.Run(c.name, func(t *testing.T) {
			orig := c.frame()
			fr := bytes.Clone(orig)
			fr = fr[:len(fr):len(fr)] // reading past the end panics
			if parse(fr) != Forwarded {
				t.Fatalf("test frame does not parse: %v", parse(fr))
			}
			var l4 []byte
			var at int
			final := c.final
			if final == nil {
				final = fr[offDst : offDst+16]
			}
			if c.proto != 0 {
				l4 = fr[offL4+c.l4 : offL4+len(c.pay)]
				if c.n != 0 {
					l4 = l4[:c.n]
				}
				at = offL4 + c.l4 + map[uint8]int{17: 6, 6: 16}[c.proto]
				// The literal says what it claims: P or not P.
				p := refSum(csumSrc, final, c.proto, make([]byte, len(l4))) // P: the pseudo-header alone
				if got := binary.BigEndian.Uint16(fr[at:]); (got == p) != c.partial {
					t.Fatalf("checksum field %#04x, P %#04x: partial should be %v", got, p, c.partial)
				}
			}
			changed := CompleteChecksum(fr)
			if changed != c.changed {
				t.Fatalf("CompleteChecksum = %v, want %v", changed, c.changed)
			}
			want := bytes.Clone(orig)
			if c.changed {
				binary.BigEndian.PutUint16(want[at:], c.want)
			}
			if !bytes.Equal(fr, want) {
				t.Fatalf("frame after\n%x\nwant\n%x", fr, want)
			}
			if c.proto == 0 {
				return
			}
			if ok := refSum(csumSrc, final, c.proto, l4) == 0xffff; ok != c.valid {
				t.Fatalf("checksum %#04x verifies: %v, want %v", binary.BigEndian.Uint16(fr[at:]), ok, c.valid)
			}
			if c.changed {
				gopacketVerify(t, fr)
			}
		})
	}
}

// gopacketVerify decodes fr with gopacket and checks its UDP or TCP
// checksum.
func gopacketVerify(t *testing.T, fr []byte) {
	t.Helper()
	pk := gopacket.NewPacket(fr, layers.LayerTypeEthernet, gopacket.Default)
	ip, _ := pk.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	if ip == nil {
		t.Fatalf("gopacket: no IPv6 layer: %v", pk)
	}
	var v interface {
		SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
		VerifyChecksum() (error, gopacket.ChecksumVerificationResult)
	}
	if u, ok := pk.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
		v = u
	} else if tc, ok := pk.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
		v = tc
	} else {
		t.Fatalf("gopacket: no UDP or TCP layer: %v", pk)
	}
	if err := v.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	if err, res := v.VerifyChecksum(); err != nil || !res.Valid {
		t.Fatalf("gopacket: checksum %+v %v", res, err)
	}
}

// partial returns a copy of a frame whose IPv6 header is followed by UDP or
// TCP, with the checksum a Linux sender on a veth leaves for the hardware:
// P, the folded pseudo-header sum. Other frames are copied as they are.
func partial(fr []byte) []byte {
	b := bytes.Clone(fr)
	if parse(b) != Forwarded {
		return b
	}
	n := ipLen(b) - ip6Len
	at := map[uint8]int{17: 6, 6: 16}[b[offNextHdr]]
	if at == 0 || n < at+2 {
		return b
	}
	binary.BigEndian.PutUint16(b[offL4+at:], refSum(b[offSrc:offSrc+16], b[offDst:offDst+16], b[offNextHdr], make([]byte, n)))
	return b
}

// csumConfig is the test network with CompleteChecksums on the uplink U
// and the downlink A, and off on U2 and B.
func csumConfig() Config {
	c := testConfig(true)
	for i := range c.Ports {
		c.Ports[i].CompleteChecksums = c.Ports[i].ID == portU || c.Ports[i].ID == portA
	}
	return c
}

// tcpFromA is client A1's TCP segment to the Internet with a partial
// checksum (tcpPartial).
var tcpFromA = pkt{srcMAC: macA1, dstMAC: macA, src: clientA1, dst: internet, hop: 64, nh: layers.IPProtocolTCP, l4: tcpPartial}

// TestCompleteChecksumsPorts: with CompleteChecksums on U and A only, a
// partial checksum is completed exactly on the frames forwarded from U or
// A, whatever their egress, and counted as ChecksumCompleted on the
// ingress port; frames from B or U2, complete checksums, drops, frames for
// the kernel and ICMPv6 errors are not touched. Forward and ForwardBatch
// do the same.
func TestCompleteChecksumsPorts(t *testing.T) {
	snap := testSnapshot(t, true)
	for _, c := range []struct {
		name     string
		in       fib.PortID
		frame    []byte
		v        Verdict
		complete bool
	}{
		{"A up, udp partial", portA, partial(fromA(clientA1, internet).frame(t)), Forward, true},
		{"A up, tcp partial", portA, tcpFromA.frame(t), Forward, true},
		{"A to B, udp partial", portA, partial(fromA(clientA1, "2001:db8:b:100::7").frame(t)), Forward, true},
		{"A up, udp complete", portA, fromA(clientA1, internet).frame(t), Forward, false},
		{"U down to A, udp partial", portU, partial(fromU("2001:db8:a:100::1").frame(t)), Forward, true},
		{"U down to B, udp partial", portU, partial(fromU("2001:db8:b:200::1").frame(t)), Forward, true},
		{"U2 down to B, udp partial: U2 does not complete", portU2, partial(fromU("2001:db8:b:100::1").frame(t)), Forward, false},
		{"B up, udp partial: B does not complete", portB, partial(fromB(macB2, clientB2, internet).frame(t)), Forward, false},
		{"B to A, udp partial: B does not complete", portB, partial(fromB(macB1, clientB1, "2001:db8:a:200::7").frame(t)), Forward, false},
		{"A spoofed, udp partial", portA, partial(fromA(clientB1, internet).frame(t)), Drop, false},
		{"A hop limit 1, udp partial", portA, partial(withHop(fromA(clientA1, internet), 1).frame(t)), ToKernel, false},
		{"U no route, udp partial", portU, partial(fromU("2001:db8:dead::1").frame(t)), ToKernel, false},
		{"A loop, udp partial: the error quotes it as it came", portA, partial(fromA(clientA1, "2001:db8:a:100::99").frame(t)), ICMPReply, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			one, batch := newForwarder(t, csumConfig()), newForwarder(t, csumConfig())
			fr := append(make([]byte, 0, 2048), c.frame...)
			bfr := append(make([]byte, 0, 2048), c.frame...)
			v, r, out, n := one.Forward(snap, c.in, fr, 1e9)
			var res [1]Result
			batch.ForwardBatch(snap, c.in, [][]byte{bfr}, 1e9, res[:])
			if res[0] != (Result{v, r, out, n}) || !bytes.Equal(fr[:max(n, len(fr))], bfr[:max(n, len(bfr))]) {
				t.Fatalf("Forward %v %v %d %d, ForwardBatch %+v, or the frames differ", v, r, out, n, res[0])
			}
			if v != c.v {
				t.Fatalf("verdict %v (%v), want %v", v, r, c.v)
			}
			if got := totals(t, one)[counterKey{c.in, ChecksumCompleted.String()}]; got != map[bool]uint64{true: 1}[c.complete] {
				t.Fatalf("checksum_completed on port %d: %d", c.in, got)
			}
			if !maps.Equal(totals(t, one), totals(t, batch)) {
				t.Fatalf("Forward counted %v, ForwardBatch %v", totals(t, one), totals(t, batch))
			}
			at := offL4 + map[uint8]int{17: 6, 6: 16}[c.frame[offNextHdr]]
			switch {
			case v == ICMPReply:
				// The quote is the invoking packet as it arrived.
				if q := fr[offICMPQuote:n]; !bytes.Equal(q, c.frame[offIP6:offIP6+len(q)]) {
					t.Fatalf("quote\n%x\nwant\n%x", q, c.frame[offIP6:])
				}
			case v != Forward:
				if !bytes.Equal(fr, c.frame) {
					t.Fatal("frame changed")
				}
			case c.complete:
				gopacketVerify(t, fr)
				fallthrough
			default:
				// Only the MACs, the hop limit and, if completed, the
				// checksum changed.
				want := bytes.Clone(c.frame)
				copy(want[:12], fr[:12])
				want[offHopLimit]--
				copy(want[at:at+2], fr[at:at+2])
				if !bytes.Equal(fr, want) {
					t.Fatalf("frame\n%x\nwant\n%x", fr, want)
				}
				if !c.complete && !bytes.Equal(fr[at:at+2], c.frame[at:at+2]) {
					t.Fatal("checksum changed")
				}
			}
		})
	}
}

// TestFold47 checks the three-step fold against the looping one up to its
// bound, where the third step matters.
func TestFold47(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 7))
	for _, s := range []uint64{0, 1, 0xffff, 0x10000, 0x1ffff, 0xffffffff, 0xffff_ffff_fff, 1<<47 - 1, 0x7fff_0000_ffff} {
		if got, want := fold47(s), csum.Fold(s); got != want {
			t.Errorf("fold47(%#x) = %#x, want %#x", s, got, want)
		}
	}
	for range 100000 {
		s := r.Uint64N(1 << 47)
		if got, want := fold47(s), csum.Fold(s); got != want {
			t.Fatalf("fold47(%#x) = %#x, want %#x", s, got, want)
		}
	}
}
