// Package testutil holds what several packages' tests need and no
// production code does: a log sink safe for a goroutine to write while the
// test reads it, and a check that goroutines started by the code under
// test have ended. Its types are safe for concurrent use.
package testutil

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"
)

// SyncBuffer is a bytes.Buffer behind a mutex: a log destination the code
// under test writes from its goroutines while the test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what has been written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Reset discards what has been written.
func (s *SyncBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

// NoLeak fails t unless the number of goroutines falls back to before
// within 2 s (what stays longer is printed with its stack).
func NoLeak(t testing.TB, before int, what string) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); runtime.NumGoroutine() > before; {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after %s, %d before:\n%s",
				runtime.NumGoroutine(), what, before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Start runs run in a goroutine with a context of its own and returns
// stop, which cancels that context and fails t unless run then returns
// context.Canceled within 2 s. stop may be called more than once; it is
// also registered with t.Cleanup.
func Start(t testing.TB, name string, run func(ctx context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s returned %v, want context.Canceled", name, err)
			}
		case <-time.After(2 * time.Second):
			t.Errorf("%s did not return within 2s of its context ending", name)
		}
	}
	t.Cleanup(stop)
	return stop
}
