package daemon

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/internal/testutil"
)

// TestParts: a part that fails stops the others and its error, named,
// is what wait returns; parts that end because the relay stops, or end
// early of their own accord, have not failed; each logs start and stop.
func TestParts(t *testing.T) {
	var logs testutil.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p := newParts(context.Background(), log)
	p.spawn("waits", func() error { <-p.ctx.Done(); return p.ctx.Err() })
	p.spawn("one-off", func() error { return nil })
	boom := errors.New("boom")
	p.spawn("fails", func() error { time.Sleep(10 * time.Millisecond); return boom })
	err := p.wait()
	if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "fails: ") {
		t.Fatalf("wait = %v, want the failing part's error, named", err)
	}
	out := logs.String()
	for _, want := range []string{`part started" part=waits`, `part stopped" part=waits`, `part stopped" part=one-off`, `part failed: the relay stops" part=fails`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}

	// Stopped from outside: no part failed.
	ctx, cancel := context.WithCancel(context.Background())
	p = newParts(ctx, log)
	for _, name := range []string{"a", "b"} {
		p.spawn(name, func() error { <-p.ctx.Done(); return p.ctx.Err() })
	}
	cancel()
	if err := p.wait(); err != nil {
		t.Errorf("stopped relay: wait = %v, want nil", err)
	}
}
