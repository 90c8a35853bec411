// Package logw batches log output: between Hold and Release a Writer
// keeps what it is given and writes it with one call at Release, so a
// burst of log lines (a batch of binding changes) costs one write(2),
// and one wake-up of whatever reads the log (journald, a pipe), instead
// of one per line.
package logw

import (
	"io"
	"sync"
)

// MaxHeld is how many bytes a Writer keeps while held; a Write that
// would pass it writes what is kept, then itself, at once.
const MaxHeld = 64 << 10

// Writer wraps an io.Writer. It is safe for concurrent use, and keeps
// the order of the Writes it is given.
type Writer struct {
	mu   sync.Mutex
	w    io.Writer
	held int
	buf  []byte
}

// New returns a Writer on w.
func New(w io.Writer) *Writer { return &Writer{w: w} }

// Write writes p, or keeps it while the Writer is held. A kept Write
// reports success: an error writing it at Release is lost, as log/slog
// loses a handler's write errors.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.held > 0 && len(w.buf)+len(p) <= MaxHeld {
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	w.flushLocked()
	return w.w.Write(p)
}

// Hold starts keeping Writes. Holds nest: the Writes go out at the last
// Release.
func (w *Writer) Hold() {
	w.mu.Lock()
	w.held++
	w.mu.Unlock()
}

// Release ends a Hold and, at the last, writes what was kept.
func (w *Writer) Release() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.held > 0 {
		w.held--
	}
	if w.held == 0 {
		w.flushLocked()
	}
}

func (w *Writer) flushLocked() {
	if len(w.buf) == 0 {
		return
	}
	_, _ = w.w.Write(w.buf)
	w.buf = w.buf[:0]
	if cap(w.buf) > MaxHeld {
		w.buf = nil
	}
}
