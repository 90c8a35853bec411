//go:build !linux

package replay

import (
	"io"
	"time"
)

// preciseClock paces a live replay; AF_XDP, and so the live replay, is
// Linux only, and this is its portable stand-in: a sleep, then a spin.
type preciseClock struct {
	origin time.Time
}

const spinLast = time.Millisecond

func newPreciseClock(bool, bool) (*preciseClock, error) {
	return &preciseClock{origin: time.Now()}, nil
}

func (c *preciseClock) close() {}

func (c *preciseClock) now() int64 { return int64(time.Since(c.origin)) }

func (c *preciseClock) waitUntil(t int64) {
	if d := t - c.now() - int64(spinLast); d > 0 {
		time.Sleep(time.Duration(d))
	}
	for c.now() < t {
	}
}

// isTerminal: progress lines only with --progress off Linux.
func isTerminal(io.Writer) bool { return false }
