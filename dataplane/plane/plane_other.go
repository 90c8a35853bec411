//go:build !linux

package plane

import (
	"context"
	"errors"
	"log/slog"

	"github.com/pdrelay/pdrelay/dataplane/xsk"
	"github.com/pdrelay/pdrelay/fib"
)

// Plane is unsupported off Linux.
type Plane struct{}

// Start fails: AF_XDP is Linux only.
func Start(Config, *slog.Logger) (*Plane, error) {
	return nil, errors.New("forwarding plane: AF_XDP needs Linux")
}

func (*Plane) Mode() xsk.Mode                                      { return 0 }
func (*Plane) Info() []xsk.Info                                    { return nil }
func (*Plane) Run(context.Context, *fib.FIB, func() Decider) error { return nil }
func (*Plane) Close() error                                        { return nil }
func (*Plane) SocketStats() []SocketStats                          { return nil }
func (*Plane) ProgramStats() []ProgramStats                        { return nil }
