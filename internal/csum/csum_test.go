package csum

import (
	"math/rand/v2"
	"testing"
)

// TestSum checks Sum, folded, against a word-at-a-time sum with
// an end-around carry (as refSum's) over every length from 0 to 300 bytes (both loops, odd tails),
// with random bytes and with all-ones bytes (a carry out of every add).
func TestSum(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for l := range 301 {
		for _, fill := range []func(int) byte{func(int) byte { return byte(r.Uint32()) }, func(int) byte { return 0xff }} {
			b := make([]byte, l)
			for i := range b {
				b[i] = fill(i)
			}
			got := Fold(Sum(b))
			ref := uint32(0)
			for i := 0; i < l; i += 2 {
				w := uint32(b[i]) << 8
				if i+1 < l {
					w |= uint32(b[i+1])
				}
				ref += w
				if ref > 0xffff {
					ref = ref&0xffff + 1
				}
			}
			if uint32(got) != ref {
				t.Fatalf("%d bytes %x: sum %#04x, want %#04x", l, b, got, ref)
			}
		}
	}
}

// BenchmarkSum: the sum of a 1460-byte UDP packet (a 1514-byte frame),
// the one cost of checksum completion that grows with the frame, against
// the same sum done 16 bits at a time.
func BenchmarkSum(b *testing.B) {
	buf := make([]byte, 1460)
	for i := range buf {
		buf[i] = byte(i*7 + 3)
	}
	for _, c := range []struct {
		name string
		sum  func([]byte) uint64
	}{{"Sum", Sum}, {"16-bit", sumWords}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				n += int(Fold(c.sum(buf)))
			}
			sink = n
		})
	}
}

var sink int

// sumWords is the obvious sum, a 16-bit word at a time.
func sumWords(b []byte) uint64 {
	var s uint64
	for ; len(b) >= 2; b = b[2:] {
		s += uint64(b[0])<<8 | uint64(b[1])
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	return s
}
