package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"golang.org/x/sync/errgroup"
)

// parts supervises the relay's long-lived goroutines (the binding
// manager, the relay, the forwarding plane, the API, ...). Each logs its
// start and stop by name; the first that fails stops them all, and
// wait returns its error. A part that ends because the relay is
// stopping (context.Canceled) has not failed. A part may also end early
// and cleanly (a one-off job such as the recovery at start).
type parts struct {
	g      *errgroup.Group
	ctx    context.Context // done when the relay stops or a part fails
	cancel context.CancelFunc
	log    *slog.Logger
}

func newParts(ctx context.Context, log *slog.Logger) *parts {
	ctx, cancel := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(ctx)
	return &parts{g: g, ctx: gctx, cancel: cancel, log: log}
}

// spawn runs f as the part called name.
func (p *parts) spawn(name string, f func() error) {
	p.g.Go(func() error {
		p.log.Debug("part started", "part", name)
		err := f()
		if errors.Is(err, context.Canceled) && p.ctx.Err() != nil {
			err = nil // stopping, not failing
		}
		if err != nil {
			p.log.Error("part failed: the relay stops", "part", name, "err", err)
			return fmt.Errorf("%s: %w", name, err)
		}
		p.log.Debug("part stopped", "part", name)
		return nil
	})
}

// stop asks every part to stop (as when the relay's context ends).
func (p *parts) stop() { p.cancel() }

// wait waits for every part to return, and returns the first failure.
func (p *parts) wait() error {
	err := p.g.Wait()
	p.cancel()
	return err
}
