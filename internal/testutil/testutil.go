// Package testutil holds what several packages' tests need and no
// production code does: a log sink safe for a goroutine to write while the
// test reads it, and a check that goroutines started by the code under
// test have ended. Its types are safe for concurrent use.
package testutil

import (
	"bytes"
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
