//go:build linux

package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Run relays until ctx is done or Close is called. upd receives what
// snooping learns.
//
// Run's goroutine owns the engine and every socket. It waits in
// epoll_wait for any of them; a turn then reads up to relayBatch messages
// from each socket that is ready (one recvmmsg each), passes each through
// the engine as it is read, and ends with one hand-off of the turn's
// updates and one sendmmsg per socket (flushBatch). A socket with more
// waiting is ready again at the next turn, after the others had theirs:
// a port that floods delays another's message by at most one turn, and
// what its buffer cannot hold the kernel drops and Run counts
// (socket_overflow).
func (c *Conn) Run(ctx context.Context, upd Updater) error {
	// Under reconfMu too: a Reconfigure that saw the relay not running
	// commits on its own goroutine, before Run starts.
	c.reconfMu.Lock()
	c.mu.Lock()
	if c.running || c.closed {
		c.mu.Unlock()
		c.reconfMu.Unlock()
		return errors.New("relay: Run called twice, or after Close")
	}
	c.running = true
	c.mu.Unlock()
	c.reconfMu.Unlock()
	stop := context.AfterFunc(ctx, c.wake)
	defer func() {
		stop()
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.closeFDs()
		close(c.runDone)
	}()

	var (
		b      batch
		events [64]unix.EpollEvent
		cli    = newRxRing(relayBatch, clientFrameMax, false)
		srv    = newRxRing(relayBatch, 0, true)
	)
	defer srv.release()
	for {
		n, err := unix.EpollWait(c.ep, events[:], -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return fmt.Errorf("relay: epoll_wait: %w", err)
		}
		now := time.Now()
		woken := false
		for _, ev := range events[:n] {
			switch tok := int(ev.Fd); tok {
			case wakeToken:
				woken = true
			case serverSlot:
				c.readServers(srv, &b, now)
			default:
				// A port removed (commit) is out of the epoll set
				// before the next epoll_wait.
				if d := c.bySlot[tok]; d != nil {
					c.readClients(d, cli, &b, now)
				}
			}
		}
		if now.Sub(c.statsRead) >= time.Second {
			c.statsRead = now
			c.readDrops()
		}
		if woken {
			var cnt [8]byte
			unix.Read(c.wakeFD, cnt[:])
		drain:
			for range originQueueDepth {
				select {
				case o := <-c.orig:
					c.originate(o, &b)
				default:
					break drain
				}
			}
		}
		if !b.empty() {
			learned := len(b.upds) > 0
			c.flushBatch(&b, upd)
			if learned {
				// The binding manager is runnable now, on this P: let it
				// put the turn's routes in before the next turn.
				runtime.Gosched()
			}
		}
		if woken {
			// Between two turns, with nothing of the old configuration's
			// left in b.
			select {
			case r := <-c.reconf:
				c.commit(r)
			default:
			}
			c.mu.Lock()
			closed := c.closed
			c.mu.Unlock()
			if closed || ctx.Err() != nil {
				return nil
			}
		}
	}
}

// readDrops adds the frames the kernel dropped on a full packet socket
// (PACKET_STATISTICS, which resets them) to each port's socket_overflow.
func (c *Conn) readDrops() {
	for _, d := range c.downs {
		if st, err := unix.GetsockoptTpacketStats(d.raw, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			c.eng.Counters.dropOn(d.cnt, DropSocketOverflow, uint64(st.Drops))
		}
	}
}

// rxRing is what one recvmmsg reads into: a buffer, a source address and
// room for control messages per datagram.
type rxRing struct {
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	oob   []byte
	bufs  []*[]byte // pooled (serverBufs) when the ring hands its buffers over
	own   []byte    // the buffers' memory when it does not
}

// rxOOB is the room for control messages per datagram: IPV6_PKTINFO and
// SO_RXQ_OVFL on the uplink, PACKET_AUXDATA on a packet socket.
const rxOOB = 128

// newRxRing returns a ring of n datagrams. With pooled, each buffer is a
// serverBufs one that handOver gives away; else each is size bytes of
// the ring's own.
func newRxRing(n, size int, pooled bool) *rxRing {
	r := &rxRing{
		hdrs:  make([]mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n),
		oob:   make([]byte, n*rxOOB),
	}
	if pooled {
		r.bufs = make([]*[]byte, n)
		for i := range r.bufs {
			r.bufs[i] = serverBufs.Get().(*[]byte)
		}
	} else {
		r.own = make([]byte, n*size)
	}
	for i := range r.hdrs {
		var buf []byte
		if pooled {
			buf = *r.bufs[i]
		} else {
			buf = r.own[i*size : (i+1)*size]
		}
		r.iovs[i].Base = unsafe.SliceData(buf)
		r.iovs[i].SetLen(len(buf))
	}
	return r
}

// release gives the ring's pooled buffers back.
func (r *rxRing) release() {
	for _, bp := range r.bufs {
		serverBufs.Put(bp)
	}
}

// recv reads up to len(r.hdrs) datagrams from fd without waiting; with
// names, their sources too.
func (r *rxRing) recv(fd int, names bool) (int, error) {
	for i := range r.hdrs {
		h := &r.hdrs[i]
		*h = mmsghdr{}
		if names {
			h.hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
			h.hdr.Namelen = unix.SizeofSockaddrInet6
		}
		h.hdr.Iov = &r.iovs[i]
		h.hdr.SetIovlen(1)
		h.hdr.Control = &r.oob[i*rxOOB]
		h.hdr.SetControllen(rxOOB)
	}
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}

// data is datagram i's bytes, oobOf its control messages.
func (r *rxRing) data(i int) []byte {
	return unsafe.Slice(r.iovs[i].Base, r.hdrs[i].len)
}

func (r *rxRing) oobOf(i int) []byte {
	return r.oob[i*rxOOB : i*rxOOB+int(r.hdrs[i].hdr.Controllen)]
}

// handOver gives datagram i's pooled buffer away and puts a new one in
// its place.
func (r *rxRing) handOver(i int) *[]byte {
	bp := r.bufs[i]
	r.bufs[i] = serverBufs.Get().(*[]byte)
	r.iovs[i].Base = unsafe.SliceData(*r.bufs[i])
	r.iovs[i].SetLen(len(*r.bufs[i]))
	return bp
}

// readErr logs a read error on a socket, at most once a second each
// (a socket in error is ready until the error is read).
func (c *Conn) readErr(last *time.Time, now time.Time, err error, msg string, attrs ...any) {
	if errors.Is(err, unix.EAGAIN) || now.Sub(*last) < time.Second {
		return
	}
	*last = now
	c.log.Warn(msg, append(attrs, "err", err)...)
}

// readClients reads what d's packet socket holds, up to a ring's worth:
// each frame is parsed (checksum included), rate limited, copied out of
// the ring and handled. What fails is counted under its reason.
func (c *Conn) readClients(d *downlink, r *rxRing, b *batch, now time.Time) {
	n, err := r.recv(d.raw, false)
	if err != nil {
		c.readErr(&d.warned, now, err, "read client frame", "port", d.name)
		return
	}
	cnt := d.cnt
	for i := range n {
		if r.hdrs[i].hdr.Flags&unix.MSG_TRUNC != 0 {
			c.eng.Counters.dropOn(cnt, DropMalformed, 1)
			continue
		}
		fr, err := ParseClientFrame(r.data(i), auxChecksum(r.oobOf(i)))
		switch {
		case errors.Is(err, ErrChecksum):
			c.eng.Counters.dropOn(cnt, DropBadChecksum, 1)
			continue
		case err != nil:
			c.eng.Counters.dropOn(cnt, DropMalformed, 1)
			continue
		}
		if !d.lim.allow(now) {
			c.eng.Counters.dropOn(cnt, DropRateLimited, 1)
			continue
		}
		bp := clientBufs.Get().(*[]byte)
		data := append((*bp)[:0], fr.Payload...)
		*bp = data[:cap(data)]
		c.handle(inbound{slot: d.slot, src: fr.Src, dst: fr.Dst, mac: fr.SrcMAC, at: now, data: data, buf: bp}, b)
	}
}

// readServers reads what the uplink socket holds, up to a ring's worth,
// and handles each datagram; its buffer is the batch's until the turn
// ends.
func (c *Conn) readServers(r *rxRing, b *batch, now time.Time) {
	n, err := r.recv(c.udp, true)
	if err != nil {
		c.readErr(&c.upWarned, now, err, "read udp")
		return
	}
	for i := range n {
		ifindex, drops, hasDrops := uplinkAux(r.oobOf(i))
		if hasDrops && drops != c.upDrops {
			c.eng.Counters.dropOn(nil, DropSocketOverflow, uint64(drops-c.upDrops))
			c.upDrops = drops
		}
		sa := &r.names[i]
		if r.hdrs[i].hdr.Flags&unix.MSG_TRUNC != 0 || sa.Family != unix.AF_INET6 {
			c.eng.Counters.Drop(DropMalformed)
			continue
		}
		src := netip.AddrFrom16(sa.Addr).Unmap()
		data := r.data(i)
		bp := r.handOver(i)
		c.handle(inbound{slot: serverSlot, src: src, up: ifindex == c.up.Index, at: now, data: data, buf: bp}, b)
	}
}

// uplinkAux reads the interface a datagram arrived on (IPV6_PKTINFO) and
// the socket's overflow count (SO_RXQ_OVFL) from its control messages.
func uplinkAux(oob []byte) (ifindex int, drops uint32, hasDrops bool) {
	for m := range cmsgs(oob) {
		switch {
		case m.level == unix.IPPROTO_IPV6 && m.typ == unix.IPV6_PKTINFO && len(m.data) >= unix.SizeofInet6Pktinfo:
			ifindex = int(binary.NativeEndian.Uint32(m.data[16:20]))
		case m.level == unix.SOL_SOCKET && m.typ == unix.SO_RXQ_OVFL && len(m.data) >= 4:
			drops, hasDrops = binary.NativeEndian.Uint32(m.data), true
		}
	}
	return ifindex, drops, hasDrops
}
