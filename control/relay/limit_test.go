package relay

import (
	"testing"
	"time"
)

func TestTokenBucket(t *testing.T) {
	b := newTokenBucket(100, 200)
	n := 0
	for range 1000 { // a burst at one instant
		if b.allow(t0) {
			n++
		}
	}
	if n != 200 {
		t.Fatalf("burst: %d allowed, want 200", n)
	}
	// Over the next 10 s, 100 a second: 1000 more, however fast they come.
	n = 0
	for i := range 100000 {
		if b.allow(t0.Add(time.Duration(i) * 100 * time.Microsecond)) {
			n++
		}
	}
	if n < 999 || n > 1001 {
		t.Fatalf("10 s at 100/s: %d allowed", n)
	}
	// A quiet minute refills to the burst, not beyond.
	b.allow(t0.Add(time.Hour))
	n = 1
	for b.allow(t0.Add(time.Hour)) {
		n++
	}
	if n != 200 {
		t.Fatalf("after an hour idle: %d in a burst, want 200", n)
	}
	// A clock that steps back takes nothing and gives nothing.
	if b.allow(t0) {
		t.Error("a token from a clock stepping back")
	}
	unlimited := newTokenBucket(0, 0)
	for range 10000 {
		if !unlimited.allow(t0) {
			t.Fatal("rate 0 limited")
		}
	}
}
