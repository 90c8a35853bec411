//go:build linux

package relay

import (
	"errors"
	"net"

	"golang.org/x/net/ipv6"

	"github.com/pdrelay/pdrelay/control/binding"
)

// relayBatch is the most messages the engine's goroutine takes from the
// fair queue before it hands their updates to the binding table and sends
// what they produced. Under load a turn then costs one hand-off to the
// table and one sendmmsg per socket, not one of each per message; a lone
// message still goes out at once (a batch is what is waiting, never a
// wait for more).
const relayBatch = 32

// errNoProgress is a send that wrote nothing and said nothing.
var errNoProgress = errors.New("sendmmsg wrote no datagram")

// batch collects what one turn of the engine's goroutine produced: the
// binding updates, in message order, and the datagrams for each socket.
// Its slices are reused from turn to turn.
type batch struct {
	upds []binding.Update
	// fwds holds the Relay-Forwards' bytes (the engine reuses its own
	// buffer); toServers refers to them by offset until the turn ends,
	// since fwds may move as it grows.
	fwds      []byte
	toServers []outDatagram
	// toClients are the Replies by port; their payloads alias the
	// servers' datagrams in held.
	toClients [][]outDatagram
	held      []inbound // whose buffers go back to their pool after sending
	msgs      []ipv6.Message
	bufs      [][]byte
}

// outDatagram is one datagram to send: payload (or fwds[off:end]), to dst
// with the control message oob.
type outDatagram struct {
	payload  []byte
	off, end int
	dst      *net.UDPAddr
	oob      []byte
}

func (b *batch) empty() bool {
	if len(b.upds) > 0 || len(b.toServers) > 0 || len(b.held) > 0 {
		return false
	}
	for _, q := range b.toClients {
		if len(q) > 0 {
			return false
		}
	}
	return true
}

// addForward queues fwd for every server.
func (c *Conn) addForward(b *batch, fwd []byte) {
	off := len(b.fwds)
	b.fwds = append(b.fwds, fwd...)
	for _, s := range c.cfg.Servers {
		dst := &net.UDPAddr{IP: net.IP(s.AsSlice()), Port: c.cfg.ServerPort, Zone: s.Zone()}
		var oob []byte
		if s.IsMulticast() || s.IsLinkLocalUnicast() {
			oob = (&ipv6.ControlMessage{IfIndex: c.up.Index}).Marshal()
			if dst.Zone == "" {
				dst.Zone = c.up.Name
			}
		}
		b.toServers = append(b.toServers, outDatagram{off: off, end: len(b.fwds), dst: dst, oob: oob})
	}
}

// addReply queues payload for a client on port.
func (b *batch) addReply(port int, payload []byte, dst *net.UDPAddr) {
	for len(b.toClients) <= port {
		b.toClients = append(b.toClients, nil)
	}
	b.toClients[port] = append(b.toClients[port], outDatagram{payload: payload, dst: dst})
}

// flushBatch ends a turn: the updates go to upd in one call, before the
// datagrams leave (so that a binding is on its way to the dataplane no
// later than the Reply that made it is on its way to the client), then
// each socket's datagrams go out in one sendmmsg, then the read buffers
// go back to their pools.
func (c *Conn) flushBatch(b *batch, upd Updater) {
	if len(b.upds) > 0 {
		upd.Apply(b.upds...)
		clear(b.upds)
		b.upds = b.upds[:0]
	}
	for i := range b.toServers {
		d := &b.toServers[i]
		d.payload = b.fwds[d.off:d.end]
	}
	c.send(b, c.udp, b.toServers, "send relay-forward")
	for port, q := range b.toClients {
		if len(q) > 0 {
			c.send(b, c.downs[port].udp, q, "send to client")
		}
		clear(q)
		b.toClients[port] = q[:0]
	}
	clear(b.toServers)
	b.toServers, b.fwds = b.toServers[:0], b.fwds[:0]
	for _, m := range b.held {
		if m.slot != serverSlot {
			clientBufs.Put(m.buf)
		} else {
			serverBufs.Put(m.buf)
		}
	}
	clear(b.held)
	b.held = b.held[:0]
}

// send writes ds on pc with as few sendmmsg calls as its errors allow:
// a datagram the kernel refuses is counted and the rest still go.
func (c *Conn) send(b *batch, pc *ipv6.PacketConn, ds []outDatagram, what string) {
	if len(ds) == 0 {
		return
	}
	b.msgs, b.bufs = b.msgs[:0], b.bufs[:0]
	for i := range ds {
		b.bufs = append(b.bufs, ds[i].payload)
	}
	for i := range ds {
		b.msgs = append(b.msgs, ipv6.Message{Buffers: b.bufs[i : i+1 : i+1], OOB: ds[i].oob, Addr: ds[i].dst})
	}
	for ms := b.msgs; len(ms) > 0; {
		n, err := pc.WriteBatch(ms, 0)
		if err == nil && n == 0 {
			err = errNoProgress
		}
		if err != nil {
			c.eng.Counters.Drop(DropSendError)
			c.log.Debug(what, "dst", ms[max(n, 0)].Addr, "err", err)
			n = max(n, 0) + 1
		}
		ms = ms[min(n, len(ms)):]
	}
	clear(b.msgs)
	clear(b.bufs)
}
