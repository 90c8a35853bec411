package plane

import (
	"net/netip"

	"github.com/pdrelay/pdrelay/dataplane/xsk"
	"github.com/pdrelay/pdrelay/fib"
)

// Decider decides frames for one worker goroutine.
type Decider interface {
	// Decide decides the frames of one batch, all arrived on port in,
	// and stores the decision for frames[i] in out[i] (as long as
	// frames). A frame to send has been rewritten in place; it has room
	// up to its capacity for building a reply. A frame not sent has been
	// counted by the decider.
	Decide(snap *fib.Snapshot, in fib.PortID, frames [][]byte, now int64, out []Decision)
	// TxFull counts n frames an egress ring of port had no room for.
	TxFull(port fib.PortID, n int)
	// Flush publishes the worker's counts; called after every busy batch
	// and before the worker blocks.
	Flush()
}

// BatchSize is the most frames a worker takes from a socket at once
// unless Config.Batch says otherwise: a Decider gets batches of 1 to
// Config.Batch frames.
const BatchSize = 64

// MaxBatch is the largest Config.Batch.
const MaxBatch = 1024

// Decision is what a Decider made of one frame: send its first Len bytes
// out of Port, or not.
type Decision struct {
	Port fib.PortID
	Len  int
	Send bool
}

// Port is one interface the plane forwards between.
type Port struct {
	Name    string
	Ifindex int
	ID      fib.PortID
	// Routes, when set, makes the port's XDP program pass destinations
	// outside these prefixes to the kernel (the uplink with no_route:
	// pass); the caller keeps it current and closes it.
	Routes *xsk.Routes
}

// SocketStats are one AF_XDP socket's counters (Plane.SocketStats).
type SocketStats struct {
	Port  string // the port's interface name
	Queue int
	// ZeroCopy is the socket's bind mode. In copy mode the kernel counts
	// a frame lost to an empty fill ring in both RxFillRingEmpty and
	// RxDropped.
	ZeroCopy bool
	xsk.Stats
}

// ProgramStats are one port's XDP program verdict counters
// (Plane.ProgramStats).
type ProgramStats struct {
	Port string // the port's interface name
	xsk.ProgramStats
}

// Config configures the plane.
type Config struct {
	Ports     []Port
	Mode      xsk.Mode // attach mode: auto, native or generic
	Queues    int      // queues per port (default 1)
	FrameSize int      // UMEM frame size (default 2048)
	Batch     int      // frames taken from a socket at once, 1..MaxBatch (default BatchSize)
	Locals    []netip.Addr
}
