package plane

import (
	"net/netip"

	"github.com/pdrelay/pdrelay/dataplane/xsk"
	"github.com/pdrelay/pdrelay/fib"
)

// Decider decides frames for one worker goroutine.
type Decider interface {
	// Decide decides one frame that arrived on port in: send it
	// (rewritten in place to length n) out of port out, or not (dropped
	// and counted by the decider). frame has room up to its capacity for
	// building a reply in place.
	Decide(snap *fib.Snapshot, in fib.PortID, frame []byte, now int64) (out fib.PortID, n int, send bool)
	// TxFull counts n frames an egress ring of port had no room for.
	TxFull(port fib.PortID, n int)
	// Flush publishes the worker's counts; called after every busy batch
	// and before the worker blocks.
	Flush()
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

// Config configures the plane.
type Config struct {
	Ports     []Port
	Mode      xsk.Mode // attach mode: auto, native or generic
	Queues    int      // queues per port (default 1)
	FrameSize int      // UMEM frame size (default 2048)
	Locals    []netip.Addr
}
