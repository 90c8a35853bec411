package replay

import (
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// preciseClock paces a live replay: it sleeps in the kernel until
// spinLast before the deadline, then polls the clock (spins) to it. The
// caller's goroutine must be locked to its OS thread: newPreciseClock
// sets that thread's timer slack to 1 ns (the default, 50 µs, is added to
// every sleep).
//
// spinLast covers how late a sleep wakes: measured on this repository's
// 2-core test machine under load, see bench/results/issue15-replay.txt.
type preciseClock struct {
	origin time.Time
}

const spinLast = 200 * time.Microsecond

func newPreciseClock() *preciseClock {
	// The slack of this thread only; failure leaves the default, which
	// spinLast covers too.
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
	return &preciseClock{origin: time.Now()}
}

func (c *preciseClock) now() int64 { return int64(time.Since(c.origin)) }

func (c *preciseClock) waitUntil(t int64) {
	for {
		d := t - c.now()
		if d <= 0 {
			return
		}
		if d > int64(spinLast) {
			ts := unix.NsecToTimespec(d - int64(spinLast))
			_ = unix.Nanosleep(&ts, nil) // EINTR: the loop sleeps again
			continue
		}
		for c.now() < t {
		}
		return
	}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
