// Package plane runs pdrelay's forwarding plane: it attaches the XDP
// program to every port, opens one AF_XDP socket per port and queue, and
// runs one worker goroutine per queue index that moves frames between the
// ports of that queue.
//
// A worker owns one UMEM shared by its sockets, so a frame received on one
// port is transmitted on another without a copy. Per batch (up to 64
// frames per port) it loads the FIB snapshot once, asks Decide for each
// frame, queues the frames to send on their egress sockets and returns the
// rest to the fill rings. It never blocks on the control plane and
// allocates nothing per packet.
package plane
