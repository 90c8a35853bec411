package replay

import (
	"fmt"
	"io"
	"os"
	"time"
	"unsafe"

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
	origin  time.Time
	restore func() // undoes realtime scheduling, if set
	spin    bool   // spin the last spinLast; false: sleep to the deadline
}

const spinLast = 200 * time.Microsecond

func newPreciseClock(realtime, spin bool) (*preciseClock, error) {
	// The slack of this thread only; failure leaves the default, which
	// spinLast covers too.
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
	c := &preciseClock{origin: time.Now(), spin: spin}
	if realtime {
		// SCHED_FIFO, lowest priority, for this thread only: a wake-up
		// from a sleep then preempts every ordinary task on its CPU,
		// instead of waiting its turn (milliseconds on a busy machine).
		// The kernel's real-time throttling (95% of each second by
		// default) still bounds what it can take from others.
		var old struct{ prio int32 }
		policy, _, e := unix.RawSyscall(unix.SYS_SCHED_GETSCHEDULER, 0, 0, 0)
		if e == 0 {
			_, _, e = unix.RawSyscall(unix.SYS_SCHED_GETPARAM, 0, uintptr(unsafe.Pointer(&old)), 0)
		}
		if e != 0 {
			return nil, fmt.Errorf("read the scheduling policy: %w", e)
		}
		p := struct{ prio int32 }{1}
		if _, _, e := unix.RawSyscall(unix.SYS_SCHED_SETSCHEDULER, 0, unix.SCHED_FIFO, uintptr(unsafe.Pointer(&p))); e != 0 {
			return nil, fmt.Errorf("realtime scheduling (SCHED_FIFO; needs CAP_SYS_NICE): %w", e)
		}
		c.restore = func() {
			unix.RawSyscall(unix.SYS_SCHED_SETSCHEDULER, 0, policy, uintptr(unsafe.Pointer(&old)))
		}
	}
	return c, nil
}

// close gives the thread back its scheduling policy.
func (c *preciseClock) close() {
	if c.restore != nil {
		c.restore()
	}
}

func (c *preciseClock) now() int64 { return int64(time.Since(c.origin)) }

func (c *preciseClock) waitUntil(t int64) {
	for {
		d := t - c.now()
		if d <= 0 {
			return
		}
		if !c.spin {
			ts := unix.NsecToTimespec(d)
			_ = unix.Nanosleep(&ts, nil)
			continue
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
