package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
)

// On-disk encoding of a binding. A record is a bbolt key/value pair: the
// key encodes binding.Key and nothing else, so Delete can compute it from
// the Key alone; the value encodes the remaining fields. Both are canonical:
// one binding has exactly one encoding, and the decoder refuses anything
// else (trailing bytes, host bits set in the prefix, unknown tags), so
// encode(decode(x)) == x for every x that decodes.
//
// Key (the layout is fixed by the store's schema version, see schemaVersion):
//
//	u8   len(Port), then Port
//	u8   len(DUID), then DUID (raw bytes)
//	u32  IAID, big-endian
//	u8   prefix length, 0..128
//	     the first ceil(length/8) octets of the IPv6 prefix (host bits zero)
//
// Value, version 1:
//
//	u8   version = 1
//	i64  Preferred, Expires, Updated: Unix time in nanoseconds, big-endian;
//	     math.MinInt64 stands for the zero time.Time
//	[6]  MAC
//	u8   next-hop tag: 0 none (zero netip.Addr), 4 IPv4 (4 octets follow),
//	     6 IPv6 (16 octets follow), 7 IPv6 with zone (16 octets, u8 zone
//	     length 1..255, zone)
//	u8   len(ServerDUID), then ServerDUID
//
// Times are stored to the nanosecond, so they round-trip exactly (as
// instants: time.Time.Equal holds; the location becomes time.Local and the
// monotonic clock reading is dropped). No rounding is involved, so a
// restored binding never expires earlier than the lease said. Times
// outside the int64 nanosecond range (before 1678 or after 2262) other
// than the zero time are refused.

const (
	valueVersion1 = 1

	// maxField is the longest Port, DUID, ServerDUID or zone a record holds
	// (a length octet). RFC 8415 DUIDs are at most 130 octets.
	maxField = math.MaxUint8

	tagNone = 0
	tag4    = 4
	tag6    = 6
	tag6z   = 7

	zeroTime = math.MinInt64

	// timesLen is the fixed part of a v1 value after the version octet.
	timesLen = 3 * 8
)

// ErrInvalidBinding is returned by Put and Delete for a binding or key the
// store cannot encode: a Port, DUID or ServerDUID longer than 255 octets, a
// prefix that is not a masked IPv6 prefix, or a time out of range.
var ErrInvalidBinding = errors.New("binding cannot be stored")

// errDecode is wrapped by every decoding error.
var errDecode = errors.New("undecodable record")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidBinding, fmt.Sprintf(format, args...))
}

func decodeErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errDecode, fmt.Sprintf(format, args...))
}

// keyLen returns the length of k's encoding, or an error if it has none.
func keyLen(k *binding.Key) (int, error) {
	if len(k.Port) > maxField {
		return 0, invalid("port name is %d octets, at most %d", len(k.Port), maxField)
	}
	if len(k.DUID) > maxField {
		return 0, invalid("client DUID is %d octets, at most %d", len(k.DUID), maxField)
	}
	p := k.Prefix
	if !p.IsValid() {
		return 0, invalid("prefix %v is not valid", p)
	}
	if !p.Addr().Is6() {
		return 0, invalid("prefix %v is not IPv6", p)
	}
	if p.Masked() != p {
		return 0, invalid("prefix %v has host bits set", p)
	}
	return 1 + len(k.Port) + 1 + len(k.DUID) + 4 + 1 + (p.Bits()+7)/8, nil
}

func appendKey(dst []byte, k *binding.Key) []byte {
	dst = append(dst, uint8(len(k.Port)))
	dst = append(dst, k.Port...)
	dst = append(dst, uint8(len(k.DUID)))
	dst = append(dst, k.DUID...)
	dst = binary.BigEndian.AppendUint32(dst, k.IAID)
	bits := k.Prefix.Bits()
	a := k.Prefix.Addr().As16()
	dst = append(dst, uint8(bits))
	return append(dst, a[:(bits+7)/8]...)
}

// encodeKey returns the store key of k.
func encodeKey(k binding.Key) ([]byte, error) {
	n, err := keyLen(&k)
	if err != nil {
		return nil, err
	}
	return appendKey(make([]byte, 0, n), &k), nil
}

func timeNanos(name string, t time.Time) (int64, error) {
	if t.IsZero() {
		return zeroTime, nil
	}
	ns := t.UnixNano()
	if ns == zeroTime || !time.Unix(0, ns).Equal(t) {
		return 0, invalid("%s %v is out of range", name, t)
	}
	return ns, nil
}

func nanosTime(ns int64) time.Time {
	if ns == zeroTime {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// encodeRecord returns the key and the value of b, in one allocation.
func encodeRecord(b *binding.Binding) (key, val []byte, err error) {
	kl, err := keyLen(&b.Key)
	if err != nil {
		return nil, nil, err
	}
	if len(b.ServerDUID) > maxField {
		return nil, nil, invalid("server DUID is %d octets, at most %d", len(b.ServerDUID), maxField)
	}
	var ts [3]int64
	for i, t := range [3]struct {
		name string
		t    time.Time
	}{{"preferred time", b.Preferred}, {"expiry time", b.Expires}, {"update time", b.Updated}} {
		if ts[i], err = timeNanos(t.name, t.t); err != nil {
			return nil, nil, err
		}
	}
	hop := b.NextHop
	hopLen := 0
	switch {
	case !hop.IsValid():
	case hop.Is4():
		hopLen = 4
	case hop.Zone() == "":
		hopLen = 16
	default:
		if len(hop.Zone()) > maxField {
			return nil, nil, invalid("next-hop zone is %d octets, at most %d", len(hop.Zone()), maxField)
		}
		hopLen = 16 + 1 + len(hop.Zone())
	}
	vl := 1 + timesLen + 6 + 1 + hopLen + 1 + len(b.ServerDUID)

	buf := make([]byte, 0, kl+vl)
	buf = appendKey(buf, &b.Key)
	buf = append(buf, valueVersion1)
	for _, ns := range ts {
		buf = binary.BigEndian.AppendUint64(buf, uint64(ns))
	}
	buf = append(buf, b.MAC[:]...)
	switch {
	case !hop.IsValid():
		buf = append(buf, tagNone)
	case hop.Is4():
		a := hop.As4()
		buf = append(buf, tag4)
		buf = append(buf, a[:]...)
	case hop.Zone() == "":
		a := hop.As16()
		buf = append(buf, tag6)
		buf = append(buf, a[:]...)
	default:
		a := hop.As16()
		buf = append(buf, tag6z)
		buf = append(buf, a[:]...)
		buf = append(buf, uint8(len(hop.Zone())))
		buf = append(buf, hop.Zone()...)
	}
	buf = append(buf, uint8(len(b.ServerDUID)))
	buf = append(buf, b.ServerDUID...)
	return buf[:kl:kl], buf[kl:], nil
}

// decodeBinding decodes a record. It never panics: anything it cannot
// decode is an error wrapping errDecode.
func decodeBinding(key, val []byte) (binding.Binding, error) {
	var b binding.Binding
	err := decodeInto(&b, key, val, nil)
	return b, err
}

// interner shares the strings that repeat across records (port names,
// server DUIDs) while loading, so a million bindings do not hold a million
// copies of "eth1". A nil interner allocates every string.
type interner map[string]string

const maxInterned = 4096

func (in interner) str(b []byte) string {
	if in == nil {
		return string(b)
	}
	if s, ok := in[string(b)]; ok { // no allocation for the lookup
		return s
	}
	s := string(b)
	if len(in) < maxInterned {
		in[s] = s
	}
	return s
}

// reader is a bounds-checked cursor over a record.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.err = decodeErr("%s: need %d octets, have %d", what, n, len(r.b))
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8(what string) int {
	v := r.take(1, what)
	if v == nil {
		return 0
	}
	return int(v[0])
}

// lv reads a length octet and that many octets; what names them in errors.
func (r *reader) lv(what string) []byte {
	v := r.take(1, what)
	if v == nil {
		return nil
	}
	return r.take(int(v[0]), what)
}

func (r *reader) done(what string) {
	if r.err == nil && len(r.b) != 0 {
		r.err = decodeErr("%s: %d trailing octets", what, len(r.b))
	}
}

func decodeInto(b *binding.Binding, key, val []byte, in interner) error {
	r := reader{b: key}
	port := r.lv("key port")
	duid := r.lv("key DUID")
	iaid := r.take(4, "key IAID")
	bits := r.u8("key prefix length")
	if r.err == nil && bits > 128 {
		return decodeErr("key prefix length %d", bits)
	}
	pfx := r.take((bits+7)/8, "key prefix")
	r.done("key")
	if r.err != nil {
		return r.err
	}
	var a [16]byte
	copy(a[:], pfx)
	if bits%8 != 0 && a[bits/8]&(0xff>>(bits%8)) != 0 {
		return decodeErr("key prefix has host bits set")
	}

	r = reader{b: val}
	if v := r.u8("value version"); r.err == nil && v != valueVersion1 {
		return decodeErr("value version %d, want %d", v, valueVersion1)
	}
	times := r.take(timesLen, "value times")
	mac := r.take(6, "value MAC")
	var hop netip.Addr
	switch tag := r.u8("value next-hop tag"); {
	case r.err != nil:
	case tag == tagNone:
	case tag == tag4:
		if v := r.take(4, "value next-hop"); v != nil {
			hop = netip.AddrFrom4([4]byte(v))
		}
	case tag == tag6 || tag == tag6z:
		if v := r.take(16, "value next-hop"); v != nil {
			hop = netip.AddrFrom16([16]byte(v))
		}
		if tag == tag6z {
			zone := r.lv("value next-hop zone")
			if r.err == nil && len(zone) == 0 {
				return decodeErr("value next-hop zone is empty")
			}
			hop = hop.WithZone(string(zone))
		}
	default:
		return decodeErr("value next-hop tag %d", tag)
	}
	server := r.lv("value server DUID")
	r.done("value")
	if r.err != nil {
		return r.err
	}

	*b = binding.Binding{
		Key: binding.Key{
			Port:   in.str(port),
			DUID:   string(duid),
			IAID:   binary.BigEndian.Uint32(iaid),
			Prefix: netip.PrefixFrom(netip.AddrFrom16(a), bits),
		},
		NextHop:    hop,
		MAC:        [6]byte(mac),
		Preferred:  nanosTime(int64(binary.BigEndian.Uint64(times[0:]))),
		Expires:    nanosTime(int64(binary.BigEndian.Uint64(times[8:]))),
		Updated:    nanosTime(int64(binary.BigEndian.Uint64(times[16:]))),
		ServerDUID: in.str(server),
	}
	return nil
}
