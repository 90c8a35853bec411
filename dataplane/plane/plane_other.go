//go:build !linux

package plane

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"

	"github.com/pdrelay/pdrelay/dataplane/xsk"
	"github.com/pdrelay/pdrelay/fib"
)

// Decider decides frames for one worker goroutine; see the Linux
// implementation.
type Decider interface {
	Decide(snap *fib.Snapshot, in fib.PortID, frame []byte, now int64) (out fib.PortID, n int, send bool)
	TxFull(port fib.PortID, n int)
	Flush()
}

// Port is one interface the plane forwards between.
type Port struct {
	Name    string
	Ifindex int
	ID      fib.PortID
}

// Config configures the plane.
type Config struct {
	Ports     []Port
	Mode      xsk.Mode
	Queues    int
	FrameSize int
	Locals    []netip.Addr
}

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
