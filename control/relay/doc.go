// Package relay is pdrelay's DHCPv6 relay agent (RFC 8415 section 19) and
// reply snooper (RFC 8987 section 4.1).
//
// Engine is the protocol logic with no I/O: a client message (with the
// source MAC of its frame) becomes one Relay-Forward for the servers, and a
// server's Relay-Reply becomes the inner message for a client plus the
// binding facts it carries. It wraps and unwraps the original bytes and
// never re-encodes a relayed message, so unknown types and options pass
// byte for byte (G-1). An Engine is owned by one goroutine; its Counters
// may be read concurrently.
//
// Originate wraps a message the relay builds on a client's behalf (the
// relay-initiated release's client-release mode) exactly as HandleClient
// wraps the client's own, and remembers it: the server's Reply to it comes
// out of HandleServer marked Originated, for the originator, and is never
// delivered to the client or snooped.
//
// Conn (Linux) is the I/O around it: an AF_PACKET socket per downlink for
// client frames, one UDP socket on port 547 for the servers' side and one
// per downlink for sending to clients. One goroutine (Conn.Run) owns them
// and the engine: it waits in epoll_wait for any socket, reads each ready
// one with recvmmsg, handles each message as it reads it, and sends what
// a turn produced with one sendmmsg per socket. Conn.Originate queues an
// originated message for that goroutine (never blocking), and the
// Replies to such messages go to the function set by OnOriginatedReply.
//
// Reconfiguration: Engine.Reconfigure replaces the engine's configuration
// (ports, servers, trust) between two messages, keeping its state (the
// requests awaiting a Reply, the counters) for the ports that stay, which
// are known by name. Conn.Reconfigure does the same on a running relay:
// it opens the sockets of the ports added (or fails, changing nothing),
// then hands the change to Run's goroutine, which makes it between two
// turns, starts reading the new ports and closes the removed ports'
// sockets. The ports that stay keep their sockets throughout, so none of
// their messages is lost or reordered. Any goroutine may call
// Conn.Reconfigure; calls are made one at a time.
package relay
