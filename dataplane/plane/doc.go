// Package plane runs pdrelay's forwarding plane: it attaches the XDP
// program to every port, opens one AF_XDP socket per port and queue, and
// runs one worker goroutine per queue index that moves frames between the
// ports of that queue.
//
// A worker owns one UMEM shared by its sockets, so a frame received on one
// port is transmitted on another without a copy. Per batch (up to
// Config.Batch frames per port, 64 by default) it loads the FIB snapshot once, asks Decide for each
// frame, queues the frames to send on their egress sockets and returns the
// rest to the fill rings. It never blocks on the control plane and
// allocates nothing per packet. Each worker keeps its OS thread for its
// whole life (runtime.LockOSThread).
//
// Counters: SocketStats (each socket's own and the kernel's
// XDP_STATISTICS) and ProgramStats (each port's XDP program verdicts,
// xsk.ProgramStats) may be read from any goroutine; after Close they
// keep the values they had at Close.
package plane
