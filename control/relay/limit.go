package relay

import "time"

// tokenBucket allows rate events a second on average and burst back to
// back. A zero rate allows everything. It is owned by one goroutine.
type tokenBucket struct {
	rate   float64 // tokens a second; 0: no limit
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate, burst int) tokenBucket {
	if burst < 1 {
		burst = 1
	}
	return tokenBucket{rate: float64(rate), burst: float64(burst), tokens: float64(burst)}
}

// retune sets a new rate and burst, keeping the tokens saved (at most the
// new burst).
func (b *tokenBucket) retune(rate, burst int) {
	nb := newTokenBucket(rate, burst)
	nb.tokens = min(nb.burst, b.tokens)
	nb.last = b.last
	*b = nb
}

// allow takes a token at now if there is one.
func (b *tokenBucket) allow(now time.Time) bool {
	if b.rate == 0 {
		return true
	}
	if !b.last.IsZero() {
		if d := now.Sub(b.last).Seconds(); d > 0 {
			b.tokens = min(b.burst, b.tokens+d*b.rate)
		}
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Rate is a token bucket's rate (a second) and burst.
type Rate struct{ Rate, Burst int }
