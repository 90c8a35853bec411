package fib

import (
	"testing"
)

func BenchmarkExp(b *testing.B) {
	f := getFixture(b, 1_000_000)
	for _, mask := range []int{0, 15, 1023, 0xffff} {
		for _, kind := range []string{"hit", "miss"} {
			addrs := f.hits
			if kind == "miss" {
				addrs = f.misses
			}
			b.Run(kind+"/"+itoa(mask+1)+"/fib", func(b *testing.B) {
				var r *Route
				for i := 0; b.Loop(); i++ {
					r, _ = f.snap.Lookup(addrs[i&mask])
				}
				sinkRoute = r
			})
			b.Run(kind+"/"+itoa(mask+1)+"/bart", func(b *testing.B) {
				var r *Route
				for i := 0; b.Loop(); i++ {
					r, _ = f.bt.Lookup(addrs[i&mask])
				}
				sinkRoute = r
			})
		}
	}
}

func itoa(i int) string {
	s := ""
	for {
		s = string(rune('0'+i%10)) + s
		i /= 10
		if i == 0 {
			return s
		}
	}
}
