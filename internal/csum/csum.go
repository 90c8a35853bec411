// Package csum is the Internet checksum (RFC 1071) as pdrelay's packet
// code needs it: a fast ones' complement sum of 16-bit big-endian words
// and its fold. The forwarding plane completes partial UDP and TCP
// checksums and builds ICMPv6 errors with it; the relay verifies client
// frames' UDP checksums. It allocates nothing and has no state.
package csum

import (
	"encoding/binary"
	"math/bits"
)

// Sum is the ones' complement sum of b as 16-bit big-endian words (a
// final odd byte padded with zero), to be folded. It adds 64-bit words
// with carry, 32 bytes a round: the checksum of a 1500-byte frame is the
// one per-frame cost of completion that grows with the frame.
func Sum(b []byte) uint64 {
	var s, c uint64
	for len(b) >= 32 {
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b), c)
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b[8:]), c)
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b[16:]), c)
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b[24:]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b), c)
		b = b[8:]
	}
	// The end-around carry; then halve the sum to 33 bits (2^32 is 1 in
	// ones' complement arithmetic mod 0xffff), so that the tail's few
	// 16-bit words cannot overflow it.
	s, c = bits.Add64(s, c, 0)
	s += c
	s = s>>32 + s&0xffffffff
	for len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	return s
}

// Fold reduces a ones' complement sum to 16 bits (the end-around carries
// added in).
func Fold(s uint64) uint16 {
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
