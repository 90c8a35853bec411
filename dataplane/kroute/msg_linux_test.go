package kroute

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The literals are in the host's byte order where netlink is (lengths,
// types, flags, indices): little-endian, as on amd64 and arm64.
func requireLittleEndian(t testing.TB) {
	if nl.NativeEndian() != binary.LittleEndian {
		t.Skip("byte literals are little-endian")
	}
}

// TestAppendOp: each op's request, byte by byte.
func TestAppendOp(t *testing.T) {
	requireLittleEndian(t)
	for _, c := range []struct {
		name string
		op   op
		want []byte
	}{
		{"route replace", op{kind: opRoute, prefix: netip.MustParsePrefix("2001:db8:1:100::/56"), addr: netip.MustParseAddr("fe80::2"), index: 3, table: 254}, []byte{
			0x5c, 0, 0, 0, // nlmsg_len 92
			0x18, 0, // RTM_NEWROUTE
			0x01, 0x05, // NLM_F_REQUEST|NLM_F_REPLACE|NLM_F_CREATE
			7, 0, 0, 0, // seq
			0, 0, 0, 0, // pid
			0x0a,       // rtm_family AF_INET6
			56,         // rtm_dst_len
			0,          // rtm_src_len
			0,          // rtm_tos
			254,        // rtm_table main
			157,        // rtm_protocol
			0,          // rtm_scope universe
			1,          // rtm_type unicast
			0, 0, 0, 0, // rtm_flags (link-local next hop: not onlink)
			20, 0, 1, 0, // RTA_DST
			0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0,
			20, 0, 5, 0, // RTA_GATEWAY
			0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
			8, 0, 4, 0, 3, 0, 0, 0, // RTA_OIF 3
			8, 0, 6, 0, 0x00, 0x04, 0, 0, // RTA_PRIORITY 1024
			8, 0, 15, 0, 254, 0, 0, 0, // RTA_TABLE 254
		}},
		{"route replace, global next hop", op{kind: opRoute, prefix: netip.MustParsePrefix("2001:db8:2::/48"), addr: netip.MustParseAddr("2001:db8:ffff::2"), index: 3, table: 254}, []byte{
			0x5c, 0, 0, 0, 0x18, 0, 0x01, 0x05, 7, 0, 0, 0, 0, 0, 0, 0, // header
			0x0a, 48, 0, 0, 254, 157, 0, 1,
			4, 0, 0, 0, // rtm_flags RTNH_F_ONLINK
			20, 0, 1, 0, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
			20, 0, 5, 0, 0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
			8, 0, 4, 0, 3, 0, 0, 0,
			8, 0, 6, 0, 0x00, 0x04, 0, 0,
			8, 0, 15, 0, 254, 0, 0, 0,
		}},
		{"route delete, table above 255", op{kind: opUnroute, prefix: netip.MustParsePrefix("2001:db8:1:100::/56"), table: 1000}, []byte{
			0x38, 0, 0, 0, // nlmsg_len 56
			0x19, 0, // RTM_DELROUTE
			0x01, 0, // NLM_F_REQUEST
			7, 0, 0, 0, 0, 0, 0, 0,
			0x0a, 56, 0, 0,
			0,    // rtm_table unspec: RTA_TABLE says it
			157,  // rtm_protocol: only pdrelay's route of the prefix
			0xff, // rtm_scope nowhere
			0,    // rtm_type
			0, 0, 0, 0,
			20, 0, 1, 0, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0,
			8, 0, 15, 0, 0xe8, 0x03, 0, 0, // RTA_TABLE 1000
		}},
		{"route delete at a metric", op{kind: opUnroute, prefix: netip.MustParsePrefix("2001:db8:9::/48"), table: 254, metric: 7}, []byte{
			0x40, 0, 0, 0, 0x19, 0, 0x01, 0, 7, 0, 0, 0, 0, 0, 0, 0,
			0x0a, 48, 0, 0, 254, 157, 0xff, 0, 0, 0, 0, 0,
			20, 0, 1, 0, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
			8, 0, 15, 0, 254, 0, 0, 0,
			8, 0, 6, 0, 7, 0, 0, 0, // RTA_PRIORITY 7
		}},
		{"neighbour replace", op{kind: opNeigh, addr: netip.MustParseAddr("fe80::2"), index: 3, mac: [6]byte{2, 0, 0, 0, 0, 0x12}}, []byte{
			0x44, 0, 0, 0, // nlmsg_len 68
			0x1c, 0, // RTM_NEWNEIGH
			0x01, 0x05, // NLM_F_REQUEST|NLM_F_REPLACE|NLM_F_CREATE
			7, 0, 0, 0, 0, 0, 0, 0,
			0x0a, 0, 0, 0, // ndm_family AF_INET6, pads
			3, 0, 0, 0, // ndm_ifindex
			0x04, 0, // ndm_state NUD_STALE
			0x10,                                                              // ndm_flags NTF_EXT_LEARNED
			0,                                                                 // ndm_type
			20, 0, 1, 0, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // NDA_DST
			10, 0, 2, 0, 2, 0, 0, 0, 0, 0x12, 0, 0, // NDA_LLADDR, padded
			5, 0, 12, 0, 157, 0, 0, 0, // NDA_PROTOCOL 157, padded
		}},
		{"neighbour delete", op{kind: opUnneigh, addr: netip.MustParseAddr("fe80::2"), index: 3}, []byte{
			0x30, 0, 0, 0, 0x1d, 0, 0x01, 0, 7, 0, 0, 0, 0, 0, 0, 0, // RTM_DELNEIGH
			0x0a, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0,
			20, 0, 1, 0, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
		}},
	} {
		if got := appendOp(nil, &c.op, 7); !bytes.Equal(got, c.want) {
			t.Errorf("%s:\n got %x\nwant %x", c.name, got, c.want)
		}
		buf := make([]byte, 0, 256)
		if n := testing.AllocsPerRun(100, func() { buf = appendOp(buf[:0], &c.op, 7) }); n != 0 {
			t.Errorf("%s: %v allocations a request into room enough", c.name, n)
		}
	}
}

// Payloads the kernel sent (Linux 6.18), captured from dumps in a test
// namespace.
var (
	// RTM_NEWROUTE: 2001:db8:1:100::/56 via fe80::2 dev if 2 proto 157
	// metric 1024, table main.
	capRoute = mustHex("0a380000fe9d00010000000008000f00fe0000001400010020010db8000101000000000000000000080006000004000014000500fe800000000000000000000000000002080004000200000024000c0000000000000000000000000000000000000000000000000000000000000000000500140000000000")
	// RTM_NEWROUTE: 2001:db8:7::/48 proto 157 with two next hops
	// (RTA_MULTIPATH).
	capMultipath = mustHex("0a300000fe9d00010000000008000f00fe0000001400010020010db800070000000000000000000008000600000400003c0009001c0000000200000014000500fe8000000000000000000000000000051c0000000300000014000500fe80000000000000000000000000000624000c0000000000000000000000000000000000000000000000000000000000000000000500140000000000")
	// RTM_NEWNEIGH: fe80::2 dev if 2 lladdr 02:00:00:00:00:12
	// extern_learn STALE proto 157.
	capNeigh = mustHex("0a000000020000000400100114000100fe8000000000000000000000000000020a00020002000000001200000800040000000000140003007017000000000000000000000000000005000c009d000000")
	// RTM_NEWNEIGH: ff02::16 NOARP, the kernel's.
	capNeighMcast = mustHex("0a000000040000004000000514000100ff0200000000000000000000000000160a000200333300000016000008000400000000001400030071170000010000000100000000000000")
	// NLMSG_ERROR -ENODEV, capped (the request not echoed), no message.
	capErr = mustHex("edffffff5c000000180005050500000000000000")
	// NLMSG_ERROR -ENETDOWN, capped, with the extended ack message.
	capErrMsg = mustHex("9cffffff5c0000001800050505000000000000001d0001004e657874686f7020646576696365206973206e6f7420757000000000")
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// TestParse reads the captured answers back.
func TestParse(t *testing.T) {
	requireLittleEndian(t)
	kr, ok := parseRoute(capRoute, MainTable)
	if want := (kernelRoute{prefix: netip.MustParsePrefix("2001:db8:1:100::/56"), index: 2, via: netip.MustParseAddr("fe80::2"), metric: 1024}); !ok || kr != want {
		t.Errorf("route: %+v %v, want %+v", kr, ok, want)
	}
	if _, ok := parseRoute(capRoute, 100); ok {
		t.Error("a route of table main read as table 100's")
	}
	if kr, ok := parseRoute(capMultipath, MainTable); !ok || !kr.odd || kr.prefix != netip.MustParsePrefix("2001:db8:7::/48") {
		t.Errorf("multipath route: %+v %v, want it odd", kr, ok)
	}
	other := bytes.Clone(capRoute)
	other[5] = 4 // proto static
	if _, ok := parseRoute(other, MainTable); ok {
		t.Error("a static route read as pdrelay's")
	}
	kn, ok := parseNeigh(capNeigh)
	if want := (kernelNeigh{index: 2, addr: netip.MustParseAddr("fe80::2"), mac: [6]byte{2, 0, 0, 0, 0, 0x12}, ours: true}); !ok || kn != want {
		t.Errorf("neighbour: %+v %v, want %+v", kn, ok, want)
	}
	if kn, ok := parseNeigh(capNeighMcast); !ok || kn.ours || kn.addr != netip.MustParseAddr("ff02::16") {
		t.Errorf("multicast neighbour: %+v %v", kn, ok)
	}
	errno, msg, err := parseAck(0x100, capErr)
	if err != nil || errno != syscall.ENODEV || msg != "" {
		t.Errorf("error answer: %v %q %v", errno, msg, err)
	}
	errno, msg, err = parseAck(0x300, capErrMsg)
	if err != nil || errno != syscall.ENETDOWN || msg != "Nexthop device is not up" {
		t.Errorf("error answer with a message: %v %q %v", errno, msg, err)
	}
	if _, _, err := parseAck(0, capErr[:8]); err == nil {
		t.Error("a short answer was read")
	}
}

// TestRoundTrip: a route request, less its header, reads back as the
// route it asked for.
func TestRoundTrip(t *testing.T) {
	o := op{kind: opRoute, prefix: netip.MustParsePrefix("2001:db8:1:100::/56"), addr: netip.MustParseAddr("fe80::2"), index: 3, table: 1000}
	b := appendOp(nil, &o, 1)
	kr, ok := parseRoute(b[16:], 1000)
	if want := (kernelRoute{prefix: o.prefix, index: 3, via: o.addr, metric: Metric}); !ok || kr != want {
		t.Errorf("%+v %v, want %+v", kr, ok, want)
	}
}

// The parsers read what the kernel sends: any bytes give a result or a
// refusal, never a panic, and a route read is a valid masked prefix.
func FuzzParseRoute(f *testing.F) {
	f.Add(capRoute)
	f.Add(capMultipath)
	f.Fuzz(func(t *testing.T, b []byte) {
		if kr, ok := parseRoute(b, MainTable); ok && (!kr.prefix.IsValid() || kr.prefix != kr.prefix.Masked()) {
			t.Fatalf("bad prefix %v", kr.prefix)
		}
	})
}

func FuzzParseNeigh(f *testing.F) {
	f.Add(capNeigh)
	f.Add(capNeighMcast)
	f.Fuzz(func(t *testing.T, b []byte) {
		if kn, ok := parseNeigh(b); ok && !kn.addr.Is6() {
			t.Fatalf("bad address %v", kn.addr)
		}
	})
}

func FuzzParseAck(f *testing.F) {
	f.Add(uint16(0x100), capErr)
	f.Add(uint16(0x300), capErrMsg)
	f.Add(uint16(0x200), append(bytes.Clone(capErr[:4]), capRoute...))
	f.Fuzz(func(t *testing.T, flags uint16, b []byte) {
		parseAck(flags, b)
	})
}

// TestEachMsg reads a datagram of two messages, the second unaligned at
// its end, and refuses broken framing.
func TestEachMsg(t *testing.T) {
	msg := func(typ uint16, seq uint32, payload ...byte) []byte {
		b := native.AppendUint32(nil, uint32(unix.NLMSG_HDRLEN+len(payload)))
		b = native.AppendUint16(b, typ)
		b = native.AppendUint16(b, unix.NLM_F_MULTI)
		b = native.AppendUint32(b, seq)
		b = native.AppendUint32(b, 0)
		return append(b, payload...)
	}
	first := msg(unix.RTM_NEWROUTE, 7, 1, 2, 3, 4, 5)
	first = append(first, 0, 0, 0) // padding to 4 bytes
	dgram := append(first, msg(unix.NLMSG_DONE, 7, 9)...)
	var got []string
	err := eachMsg(dgram, func(h nlHdr, data []byte) bool {
		got = append(got, fmt.Sprintf("%d/%#x/%d/%x", h.typ, h.flags, h.seq, data))
		return true
	})
	want := []string{"24/0x2/7/0102030405", "3/0x2/7/09"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("eachMsg: %q %v, want %q", got, err, want)
	}
	n := 0
	if err := eachMsg(dgram, func(nlHdr, []byte) bool { n++; return false }); err != nil || n != 1 {
		t.Errorf("stopping after the first: %d calls, %v", n, err)
	}
	long := bytes.Clone(dgram)
	native.PutUint32(long, uint32(len(dgram)+1))
	short := bytes.Clone(dgram)
	native.PutUint32(short, unix.NLMSG_HDRLEN-1)
	for name, b := range map[string][]byte{"a length past the end": long, "a length under the header": short, "a truncated header": dgram[:len(first)+8]} {
		if err := eachMsg(b, func(nlHdr, []byte) bool { return true }); err == nil {
			t.Errorf("%s: read without an error", name)
		}
	}
}

func FuzzEachMsg(f *testing.F) {
	f.Add(capRoute)
	f.Add(append(append([]byte{}, capErr...), capNeigh...))
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = eachMsg(b, func(h nlHdr, data []byte) bool {
			if len(data) > len(b)-unix.NLMSG_HDRLEN {
				t.Fatalf("a %d-byte payload in %d bytes", len(data), len(b))
			}
			return true
		})
	})
}
