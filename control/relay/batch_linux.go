//go:build linux

package relay

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pdrelay/pdrelay/control/binding"
)

// relayBatch is the most messages a turn of Run reads from one socket
// before it hands their updates to the binding table and sends what they
// produced. Under load a turn then costs one recvmmsg per ready socket,
// one hand-off to the table and one sendmmsg per socket, not one of each
// per message; a lone message still goes out at once (a batch is what is
// waiting, never a wait for more).
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
	// What send hands the kernel, one of each per datagram.
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
}

// outDatagram is one datagram to send: payload (or fwds[off:end]), to dst
// (on interface scope when dst is link-scoped) with the control message
// oob.
type outDatagram struct {
	payload  []byte
	off, end int
	dst      netip.AddrPort
	scope    uint32
	oob      []byte
}

// mmsghdr is struct mmsghdr: a msghdr and the length the kernel sent or
// received, padded to the struct's alignment.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [unsafe.Sizeof(uintptr(0)) - 4]byte
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
		d := outDatagram{off: off, end: len(b.fwds), dst: netip.AddrPortFrom(s.WithZone(""), uint16(c.cfg.ServerPort))}
		if s.IsMulticast() || s.IsLinkLocalUnicast() {
			// The uplink socket is bound to the uplink, and the config
			// allows no other zone on a server.
			d.scope, d.oob = uint32(c.up.Index), c.upPktinfo
		}
		b.toServers = append(b.toServers, d)
	}
}

// addReply queues payload for a client on port, whose interface is
// ifindex.
func (b *batch) addReply(port int, payload []byte, dst netip.AddrPort, ifindex int) {
	for len(b.toClients) <= port {
		b.toClients = append(b.toClients, nil)
	}
	d := outDatagram{payload: payload, dst: dst}
	if dst.Addr().IsLinkLocalUnicast() {
		d.scope = uint32(ifindex)
	}
	b.toClients[port] = append(b.toClients[port], d)
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

// send writes ds on the socket fd with as few sendmmsg calls as its
// errors allow: a datagram the kernel refuses is counted and the rest
// still go.
func (c *Conn) send(b *batch, fd int, ds []outDatagram, what string) {
	n := len(ds)
	if n == 0 {
		return
	}
	b.hdrs = slices.Grow(b.hdrs[:0], n)[:n]
	b.iovs = slices.Grow(b.iovs[:0], n)[:n]
	b.names = slices.Grow(b.names[:0], n)[:n]
	for i := range ds {
		d := &ds[i]
		sa := &b.names[i]
		*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: d.dst.Addr().As16(), Scope_id: d.scope}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], d.dst.Port())
		iov := &b.iovs[i]
		iov.Base = unsafe.SliceData(d.payload)
		iov.SetLen(len(d.payload))
		h := &b.hdrs[i]
		*h = mmsghdr{}
		h.hdr.Name, h.hdr.Namelen = (*byte)(unsafe.Pointer(sa)), unix.SizeofSockaddrInet6
		h.hdr.Iov = iov
		h.hdr.SetIovlen(1)
		if len(d.oob) > 0 {
			h.hdr.Control = unsafe.SliceData(d.oob)
			h.hdr.SetControllen(len(d.oob))
		}
	}
	for i := 0; i < n; {
		k, err := sendmmsg(fd, b.hdrs[i:n])
		if err == nil && k == 0 {
			err = errNoProgress
		}
		switch {
		case errors.Is(err, unix.EAGAIN):
			// The buffer stayed full for sendTimeout: the rest of the
			// batch would wait as long each.
			c.eng.Counters.dropOn(nil, DropSendError, uint64(n-i))
			c.log.Debug(what, "dst", ds[i].dst, "err", err, "dropped", n-i)
			k = n - i
		case err != nil:
			c.eng.Counters.Drop(DropSendError)
			c.log.Debug(what, "dst", ds[i].dst, "err", err)
			k = 1
		}
		i += k
	}
	clear(b.hdrs)
	clear(b.iovs)
}

// sendmmsg sends hs on the blocking socket fd (which waits at most
// sendTimeout for room) and returns how many the kernel took.
func sendmmsg(fd int, hs []mmsghdr) (int, error) {
	for {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hs[0])), uintptr(len(hs)), 0, 0, 0)
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}
