package store

import (
	"bytes"
	"errors"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
)

func TestEncodeBytes(t *testing.T) {
	tests := []struct {
		name     string
		b        binding.Binding
		key, val []byte
	}{{
		name: "ipv6 next hop, zero expiry and update",
		b: binding.Binding{
			Key: binding.Key{
				Port:   "eth0",
				DUID:   "\x00\x03\x00\x01\x02\x00\x00\x00\x00\x01",
				IAID:   1,
				Prefix: netip.MustParsePrefix("2001:db8:0:100::/56"),
			},
			NextHop:   netip.MustParseAddr("fe80::1"),
			MAC:       [6]byte{2, 0, 0, 0, 0, 1},
			Preferred: time.Unix(1_700_000_000, 5),
		},
		key: []byte{
			4, 'e', 't', 'h', '0', // port
			10, 0, 3, 0, 1, 2, 0, 0, 0, 0, 1, // client DUID (DUID-LL)
			0, 0, 0, 1, // IAID
			56,                                 // prefix length
			0x20, 0x01, 0x0d, 0xb8, 0, 0, 0x01, // 7 octets of prefix
		},
		val: []byte{
			1,                                              // value version
			0x17, 0x97, 0x9c, 0xfe, 0x36, 0x2a, 0x00, 0x05, // preferred, ns
			0x80, 0, 0, 0, 0, 0, 0, 0, // expires: zero time
			0x80, 0, 0, 0, 0, 0, 0, 0, // updated: zero time
			2, 0, 0, 0, 0, 1, // MAC
			6,                                                    // next hop: IPv6
			0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // fe80::1
			0, // server DUID length
		},
	}, {
		name: "ipv4 next hop, /0 prefix, empty port and DUID",
		b: binding.Binding{
			Key:        binding.Key{Prefix: netip.MustParsePrefix("::/0"), IAID: math.MaxUint32},
			NextHop:    netip.MustParseAddr("192.0.2.1"),
			Expires:    time.Unix(1_700_003_600, 0),
			ServerDUID: "\x00\x02",
		},
		key: []byte{
			0,                      // port
			0,                      // client DUID
			0xff, 0xff, 0xff, 0xff, // IAID
			0, // prefix length, no octets
		},
		val: []byte{
			1,                         // value version
			0x80, 0, 0, 0, 0, 0, 0, 0, // preferred: zero time
			0x17, 0x97, 0xa0, 0x44, 0x66, 0xe2, 0xa0, 0x00, // expires, ns
			0x80, 0, 0, 0, 0, 0, 0, 0, // updated: zero time
			0, 0, 0, 0, 0, 0, // MAC
			4, 192, 0, 2, 1, // next hop: IPv4
			2, 0, 2, // server DUID
		},
	}, {
		name: "zoned next hop, /61 prefix",
		b: binding.Binding{
			Key:     binding.Key{Port: "p", DUID: "d", Prefix: netip.MustParsePrefix("2001:db8:0:8::/61")},
			NextHop: netip.MustParseAddr("fe80::2%eth1"),
		},
		key: []byte{
			1, 'p', // port
			1, 'd', // client DUID
			0, 0, 0, 0, // IAID
			61,                                    // prefix length
			0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0x08, // 8 octets of prefix
		},
		val: []byte{
			1,                         // value version
			0x80, 0, 0, 0, 0, 0, 0, 0, // preferred: zero time
			0x80, 0, 0, 0, 0, 0, 0, 0, // expires: zero time
			0x80, 0, 0, 0, 0, 0, 0, 0, // updated: zero time
			0, 0, 0, 0, 0, 0, // MAC
			7,                                                    // next hop: IPv6 with zone
			0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // fe80::2
			4, 'e', 't', 'h', '1', // zone
			0, // server DUID length
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, val, err := encodeRecord(&tt.b)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(key, tt.key) {
				t.Errorf("key\n got %x\nwant %x", key, tt.key)
			}
			if !bytes.Equal(val, tt.val) {
				t.Errorf("value\n got %x\nwant %x", val, tt.val)
			}
			k2, err := encodeKey(tt.b.Key)
			if err != nil || !bytes.Equal(k2, tt.key) {
				t.Errorf("encodeKey = %x, %v; want %x", k2, err, tt.key)
			}
			got, err := decodeBinding(tt.key, tt.val)
			if err != nil {
				t.Fatal(err)
			}
			if !equal(got, tt.b) {
				t.Errorf("decode\n got %s\nwant %s", show(got), show(tt.b))
			}
		})
	}
}

func TestRoundTripEdges(t *testing.T) {
	ok := testBinding(7)
	tests := []struct {
		name string
		edit func(*binding.Binding)
	}{
		{"typical", func(*binding.Binding) {}},
		{"zero MAC", func(b *binding.Binding) { b.MAC = [6]byte{} }},
		{"no server DUID", func(b *binding.Binding) { b.ServerDUID = "" }},
		{"long server DUID", func(b *binding.Binding) { b.ServerDUID = strings.Repeat("s", 255) }},
		{"long client DUID", func(b *binding.Binding) { b.DUID = strings.Repeat("\xff", 130) }},
		{"max IAID", func(b *binding.Binding) { b.IAID = math.MaxUint32 }},
		{"/128", func(b *binding.Binding) { b.Prefix = netip.MustParsePrefix("2001:db8::ffff/128") }},
		{"/40", func(b *binding.Binding) { b.Prefix = netip.MustParsePrefix("2001:db8:ff00::/40") }},
		{"/0", func(b *binding.Binding) { b.Prefix = netip.MustParsePrefix("::/0") }},
		{"v4-mapped prefix", func(b *binding.Binding) { b.Prefix = netip.MustParsePrefix("::ffff:10.0.0.0/104") }},
		{"no next hop", func(b *binding.Binding) { b.NextHop = netip.Addr{} }},
		{"v4-mapped next hop", func(b *binding.Binding) { b.NextHop = netip.MustParseAddr("::ffff:192.0.2.1") }},
		{"zero times", func(b *binding.Binding) { b.Preferred, b.Expires, b.Updated = time.Time{}, time.Time{}, time.Time{} }},
		{"extreme times", func(b *binding.Binding) {
			b.Preferred = time.Unix(0, math.MinInt64+1)
			b.Expires = time.Unix(0, math.MaxInt64)
			b.Updated = time.Unix(0, 0)
		}},
		{"time with monotonic reading and zone", func(b *binding.Binding) {
			b.Expires = time.Now().In(time.FixedZone("X", 3600)).Add(time.Hour)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := ok
			tt.edit(&b)
			key, val, err := encodeRecord(&b)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeBinding(key, val)
			if err != nil {
				t.Fatal(err)
			}
			if !equal(got, b) {
				t.Errorf("round trip\n got %s\nwant %s", show(got), show(b))
			}
			if got.Expires.Before(b.Expires) {
				t.Errorf("expiry moved earlier: %v < %v", got.Expires, b.Expires)
			}
		})
	}
}

func TestEncodeInvalid(t *testing.T) {
	ok := testBinding(1)
	tests := []struct {
		name string
		edit func(*binding.Binding)
	}{
		{"no prefix", func(b *binding.Binding) { b.Prefix = netip.Prefix{} }},
		{"ipv4 prefix", func(b *binding.Binding) { b.Prefix = netip.MustParsePrefix("10.0.0.0/8") }},
		{"host bits", func(b *binding.Binding) { b.Prefix = netip.PrefixFrom(netip.MustParseAddr("2001:db8::1"), 56) }},
		{"port too long", func(b *binding.Binding) { b.Port = strings.Repeat("p", 256) }},
		{"DUID too long", func(b *binding.Binding) { b.DUID = strings.Repeat("d", 256) }},
		{"server DUID too long", func(b *binding.Binding) { b.ServerDUID = strings.Repeat("s", 256) }},
		{"zone too long", func(b *binding.Binding) { b.NextHop = b.NextHop.WithZone(strings.Repeat("z", 256)) }},
		{"expiry after 2262", func(b *binding.Binding) { b.Expires = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"update before 1678", func(b *binding.Binding) { b.Updated = time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"preferred at the sentinel", func(b *binding.Binding) { b.Preferred = time.Unix(0, math.MinInt64) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := ok
			tt.edit(&b)
			if _, _, err := encodeRecord(&b); !errors.Is(err, ErrInvalidBinding) {
				t.Errorf("encodeRecord: err = %v, want ErrInvalidBinding", err)
			}
		})
	}
}

func TestDecodeInvalid(t *testing.T) {
	goodKey, goodVal, err := encodeRecord(&binding.Binding{
		Key:     binding.Key{Port: "p", Prefix: netip.MustParsePrefix("2001:db8::/32")},
		NextHop: netip.MustParseAddr("fe80::1"),
	})
	if err != nil {
		t.Fatal(err)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name     string
		key, val []byte
	}{
		{"empty key", nil, goodVal},
		{"empty value", goodKey, nil},
		{"key truncated", goodKey[:len(goodKey)-1], goodVal},
		{"key trailing", cat(goodKey, []byte{0}), goodVal},
		{"port overruns key", []byte{200, 'p'}, goodVal},
		{"prefix length 129", []byte{0, 0, 0, 0, 0, 0, 129, 0x20}, goodVal},
		{"host bits", []byte{0, 0, 0, 0, 0, 0, 4, 0x28}, goodVal},
		{"value version 2", goodKey, cat([]byte{2}, goodVal[1:])},
		{"value version 0", goodKey, cat([]byte{0}, goodVal[1:])},
		{"value truncated", goodKey, goodVal[:len(goodVal)-1]},
		{"value trailing", goodKey, cat(goodVal, []byte{0})},
		{"next-hop tag 5", goodKey, cat(goodVal[:31], []byte{5}, goodVal[32:])},
		{"empty zone", goodKey, cat(goodVal[:31], []byte{7}, goodVal[32:48], []byte{0}, goodVal[48:])},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeBinding(tt.key, tt.val); !errors.Is(err, errDecode) {
				t.Errorf("decode(%x, %x): err = %v, want errDecode", tt.key, tt.val, err)
			}
		})
	}
}

// FuzzDecodeBinding checks that decoding arbitrary bytes never panics and
// that the encoding is canonical: whatever decodes re-encodes to the same
// bytes, so decode(encode(b)) == b for every b the store can hold.
func FuzzDecodeBinding(f *testing.F) {
	for _, b := range []binding.Binding{testBinding(0), testBinding(99), {
		Key:     binding.Key{Port: "eth1", DUID: "d", IAID: math.MaxUint32, Prefix: netip.MustParsePrefix("2001:db8::1/128")},
		NextHop: netip.MustParseAddr("fe80::1%eth1"),
	}, {
		Key:     binding.Key{Prefix: netip.MustParsePrefix("2001:db8:8000::/33")},
		NextHop: netip.MustParseAddr("192.0.2.1"),
	}} {
		k, v, err := encodeRecord(&b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(k, v)
	}
	f.Add([]byte{}, []byte{})
	f.Add([]byte{0xff}, []byte{1, 0xff})
	f.Fuzz(func(t *testing.T, key, val []byte) {
		b, err := decodeBinding(key, val)
		if err != nil {
			if !errors.Is(err, errDecode) {
				t.Fatalf("error %v does not wrap errDecode", err)
			}
			return
		}
		k2, v2, err := encodeRecord(&b)
		if err != nil {
			t.Fatalf("decoded %s does not encode: %v", show(b), err)
		}
		if !bytes.Equal(k2, key) || !bytes.Equal(v2, val) {
			t.Fatalf("not canonical:\nkey %x -> %x\nval %x -> %x", key, k2, val, v2)
		}
		b2, err := decodeBinding(k2, v2)
		if err != nil || !equal(b2, b) {
			t.Fatalf("round trip: %s, %v; want %s", show(b2), err, show(b))
		}
	})
}

// FuzzRoundTrip builds bindings from fuzzed fields and checks that every
// one the encoder accepts decodes to itself.
func FuzzRoundTrip(f *testing.F) {
	f.Add("eth0", "\x00\x03\x00\x01abcdef", uint32(1), []byte{0x20, 1, 0xd, 0xb8}, uint8(56),
		[]byte{0xfe, 0x80, 15: 1}, "", []byte{2, 0, 0, 0, 0, 1}, int64(1), int64(2), int64(3), serverDUID)
	f.Add("", "", uint32(math.MaxUint32), []byte{}, uint8(0), []byte{192, 0, 2, 1}, "", []byte{}, int64(math.MinInt64), int64(math.MaxInt64), int64(0), "")
	f.Add("x", "y", uint32(0), []byte{0xff}, uint8(128), []byte{0xfe, 0x80, 15: 2}, "eth1", []byte{1}, int64(-1), int64(0), int64(1), "z")
	f.Fuzz(func(t *testing.T, port, duid string, iaid uint32, pfx []byte, bits uint8,
		hop []byte, zone string, mac []byte, pref, exp, upd int64, server string) {
		var a [16]byte
		copy(a[:], pfx)
		b := binding.Binding{
			Key: binding.Key{
				Port: port, DUID: duid, IAID: iaid,
				Prefix: netip.PrefixFrom(netip.AddrFrom16(a), int(bits)).Masked(),
			},
			Preferred: nanosTime(pref), Expires: nanosTime(exp), Updated: nanosTime(upd),
			ServerDUID: server,
		}
		copy(b.MAC[:], mac)
		switch len(hop) {
		case 4:
			b.NextHop = netip.AddrFrom4([4]byte(hop))
		case 16:
			b.NextHop = netip.AddrFrom16([16]byte(hop)).WithZone(zone)
		}
		key, val, err := encodeRecord(&b)
		if err != nil {
			if !errors.Is(err, ErrInvalidBinding) {
				t.Fatalf("error %v does not wrap ErrInvalidBinding", err)
			}
			return
		}
		got, err := decodeBinding(key, val)
		if err != nil {
			t.Fatalf("decode(encode(%s)): %v", show(b), err)
		}
		if !equal(got, b) {
			t.Fatalf("round trip\n got %s\nwant %s", show(got), show(b))
		}
		k2, err := encodeKey(b.Key)
		if err != nil || !bytes.Equal(k2, key) {
			t.Fatalf("encodeKey = %x, %v; record key %x", k2, err, key)
		}
	})
}
