package kroute

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// sockBuf is the send and receive buffer asked for the netlink sockets.
// A batch is sent in messages of at most sendChunk bytes, each within
// the send buffer (netlink_sendmsg refuses a larger one with EMSGSIZE);
// the kernel's answers to a batch (an error for each refused change, an
// ack for its last) wait in the receive buffer until it is read. A
// dropped answer (ENOBUFS) leaves a batch's fate unknown: the Router
// then reads the kernel back. CAP_NET_ADMIN, which writing routes needs
// anyway, may exceed net.core.{w,r}mem_max (SO_*BUFFORCE).
const (
	sockBuf   = 4 << 20
	sendChunk = 256 << 10
)

// answerTimeout bounds the wait for the kernel's answer to a batch or a
// dump; the kernel answers at once, so reaching it means a lost answer.
const answerTimeout = 10 * time.Second

// nlKernel is the kernel side: rtnetlink through
// github.com/vishvananda/netlink, on two sockets kept open in the
// Router's namespace: one for writes (the binding sink's Flush and
// Run's batches, serialized by wmu) and one for dumps (Run's checks), so
// that a check's dump of 100k routes never holds up a binding change.
// After an error a socket is closed and the next call opens a new one,
// so that no answer left over from a failed batch is taken for the
// next one's.
type nlKernel struct {
	ns netns.NsHandle // netns.None(): the caller's
	h  *netlink.Handle

	wmu sync.Mutex
	w   *sock
	seq uint32
	buf []byte

	dmu  sync.Mutex
	d    *sock
	dseq uint32

	table uint32 // for the route events

	// emu guards the route event socket and the write socket's port id,
	// which the event socket's filter drops: the Router's own deletes
	// wake nothing.
	emu    sync.Mutex
	rev    *nl.NetlinkSocket
	ownPID uint32

	fmu sync.Mutex
	ev  events // since the last events()
}

func openKernel(netnsFd int, table uint32) (kernel, error) {
	k := &nlKernel{ns: netns.None(), table: table}
	if netnsFd != 0 {
		k.ns = netns.NsHandle(netnsFd)
	}
	h, err := netlink.NewHandleAt(k.ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("kroute: netlink: %w", hint(err))
	}
	k.h = h
	// Open the write socket now, so that a missing capability or
	// namespace shows at New.
	k.wmu.Lock()
	defer k.wmu.Unlock()
	if _, err := k.writeSock(); err != nil {
		h.Close()
		return nil, fmt.Errorf("kroute: netlink: %w", err)
	}
	return k, nil
}

// hint adds what an operator can do to the errors rtnetlink gives when
// pdrelay may not use it.
func hint(err error) error {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("%w (writing routes needs CAP_NET_ADMIN)", err)
	}
	return err
}

// openSock opens a NETLINK_ROUTE socket in the namespace with large
// buffers, short error answers (NETLINK_CAP_ACK: the kernel does not
// echo the refused request) carrying the kernel's reason
// (NETLINK_EXT_ACK), and, with strict, the kernel filtering dumps by the
// request's header (NETLINK_GET_STRICT_CHK, Linux 4.20).
func (k *nlKernel) openSock(strict bool) (*sock, error) {
	s, err := nl.GetNetlinkSocketAt(k.ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, hint(err)
	}
	defer s.Close() // the sock holds a duplicate
	fd := s.GetFd()
	for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[0], sockBuf) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[1], sockBuf)
		}
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	_ = s.SetExtAck(true)
	if strict {
		_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1)
	}
	// The duplicate shares the socket's non-blocking mode, so the runtime
	// polls it.
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "rtnetlink")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	so := &sock{f: f, rc: rc, buf: make([]byte, recvBuf)}
	so.sendFn = func(fd uintptr) bool {
		so.err = unix.Sendto(int(fd), so.out, 0, &kernelAddr)
		return so.err != unix.EAGAIN
	}
	so.recvFn = func(fd uintptr) bool {
		so.n, so.from, so.err = unix.Recvfrom(int(fd), so.buf, unix.MSG_TRUNC)
		return so.err != unix.EAGAIN
	}
	return so, nil
}

// recvBuf is the size of a sock's receive buffer. The kernel fills a
// dump's datagrams up to 32 KiB (netlink_recvmsg caps max_recvmsg_len).
const recvBuf = 64 << 10

// sock is a NETLINK_ROUTE socket that reads into a buffer of its own.
// nl.NetlinkSocket.Receive copies each datagram and makes a slice of its
// messages: with it (and a map of the prefixes seen), a check of 100k
// routes allocated 71 MB; it now allocates the list of routes, 8 MB
// (BenchmarkCheck100k).
type sock struct {
	f   *os.File
	rc  syscall.RawConn
	buf []byte
	// The functions rc runs, made once (a closure made per call
	// escapes), and what they take and give.
	sendFn, recvFn func(fd uintptr) bool
	out            []byte
	n              int
	from           unix.Sockaddr
	err            error
}

var kernelAddr = unix.SockaddrNetlink{Family: unix.AF_NETLINK}

// send sends b, one datagram, to the kernel, waiting at most
// answerTimeout for room in the socket's buffer.
func (s *sock) send(b []byte) error {
	if err := s.f.SetWriteDeadline(time.Now().Add(answerTimeout)); err != nil {
		return err
	}
	s.out = b
	err := s.rc.Write(s.sendFn)
	s.out = nil
	return cmp.Or(s.err, err)
}

// recv reads the next datagram from the kernel, waiting at most
// answerTimeout. The bytes are valid until the next recv.
func (s *sock) recv() ([]byte, error) {
	if err := s.f.SetReadDeadline(time.Now().Add(answerTimeout)); err != nil {
		return nil, err
	}
	for {
		err := s.rc.Read(s.recvFn)
		switch {
		case s.err != nil:
			return nil, s.err
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, unix.EAGAIN // as nl.NetlinkSocket.Receive
		case err != nil:
			return nil, err
		case s.n > len(s.buf):
			return nil, fmt.Errorf("a %d-byte answer overran the %d-byte buffer", s.n, len(s.buf))
		}
		if sa, ok := s.from.(*unix.SockaddrNetlink); ok && sa.Pid == nl.PidKernel {
			return s.buf[:s.n], nil
		}
	}
}

func (s *sock) close() { s.f.Close() }

func (k *nlKernel) writeSock() (*sock, error) {
	if k.w == nil {
		s, err := k.openSock(false)
		if err != nil {
			return nil, err
		}
		k.w = s
		pid := uint32(0)
		var sa unix.Sockaddr
		cerr := s.rc.Control(func(fd uintptr) { sa, err = unix.Getsockname(int(fd)) })
		if err == nil && cerr == nil {
			if nsa, ok := sa.(*unix.SockaddrNetlink); ok {
				pid = nsa.Pid
			}
		}
		k.emu.Lock()
		k.ownPID = pid
		if k.rev != nil {
			_ = attachRouteFilter(k.rev, pid)
		}
		k.emu.Unlock()
	}
	return k.w, nil
}

// write sends ops pipelined on one socket: as many requests as fit in
// sendChunk bytes go in one sendmsg, only the last asks for an ack, and
// the kernel, which handles each request in turn and goes on after a
// refusal, answers only the refusals and that ack. One sendmsg and
// (when nothing is refused) one recvmsg carry some 2,500 changes.
func (k *nlKernel) write(ops []op) error {
	k.wmu.Lock()
	defer k.wmu.Unlock()
	s, err := k.writeSock()
	if err != nil {
		return err
	}
	base := k.seq + 1
	k.seq += uint32(len(ops))
	for start := 0; start < len(ops); {
		buf := k.buf[:0]
		last := 0 // offset of the chunk's last request
		end := start
		for end < len(ops) && len(buf) < sendChunk {
			last = len(buf)
			buf = appendOp(buf, &ops[end], base+uint32(end))
			end++
		}
		// The last request asks for an ack: its answer ends the chunk.
		flags := nl.NativeEndian().Uint16(buf[last+6:])
		nl.NativeEndian().PutUint16(buf[last+6:], flags|unix.NLM_F_ACK)
		k.buf = buf
		if err := s.send(buf); err != nil {
			k.resetWrite()
			return fmt.Errorf("send %d changes: %w", end-start, err)
		}
		if err := k.answers(s, ops[start:end], base+uint32(start)); err != nil {
			k.resetWrite()
			return err
		}
		start = end
	}
	return nil
}

// answers reads the kernel's answers to ops (sequence numbers from
// base) until the ack of the last, and sets the refused ops' errors.
func (k *nlKernel) answers(s *sock, ops []op, base uint32) error {
	lastSeq := base + uint32(len(ops)) - 1
	for done := false; !done; {
		b, err := s.recv()
		if err != nil {
			return fmt.Errorf("read the kernel's answers: %w", err)
		}
		var perr error
		err = eachMsg(b, func(h nlHdr, data []byte) bool {
			if h.typ != unix.NLMSG_ERROR || h.seq-base >= uint32(len(ops)) {
				return true // not an answer of this batch's
			}
			errno, msg, err := parseAck(h.flags, data)
			if err != nil {
				perr = err
				return false
			}
			if errno != 0 {
				e := error(errno)
				if msg != "" {
					e = &kernelError{errno: errno, msg: msg}
				}
				ops[h.seq-base].err = e
			}
			done = h.seq == lastSeq
			return !done
		})
		if err = cmp.Or(perr, err); err != nil {
			return fmt.Errorf("read the kernel's answers: %w", err)
		}
	}
	return nil
}

// kernelError is a refusal with the kernel's extended ack message
// ("Nexthop device is not up").
type kernelError struct {
	errno syscall.Errno
	msg   string
}

func (e *kernelError) Error() string { return e.errno.Error() + ": " + e.msg }
func (e *kernelError) Unwrap() error { return e.errno }

func (k *nlKernel) resetWrite() {
	if k.w != nil {
		k.w.close()
		k.w = nil
	}
}

// dump sends a dump request built by req on the dump socket and hands
// each answer's payload to f. A dump the kernel marks inconsistent (the
// table changed during it, NLM_F_DUMP_INTR) is an error: the caller
// reads again later.
func (k *nlKernel) dump(req *nl.NetlinkRequest, want uint16, f func(data []byte)) error {
	k.dmu.Lock()
	defer k.dmu.Unlock()
	if k.d == nil {
		s, err := k.openSock(true)
		if err != nil {
			return err
		}
		k.d = s
	}
	s := k.d
	k.dseq++
	req.Seq = k.dseq
	err := k.dumpOn(s, req, want, f)
	if err != nil {
		k.d.close()
		k.d = nil
	}
	return err
}

func (k *nlKernel) dumpOn(s *sock, req *nl.NetlinkRequest, want uint16, f func(data []byte)) error {
	if err := s.send(req.Serialize()); err != nil {
		return err
	}
	intr := false
	for {
		b, err := s.recv()
		if err != nil {
			return err
		}
		var end error
		done := false
		err = eachMsg(b, func(h nlHdr, data []byte) bool {
			if h.seq != req.Seq {
				return true
			}
			if h.flags&unix.NLM_F_DUMP_INTR != 0 {
				intr = true
			}
			switch h.typ {
			case unix.NLMSG_DONE:
				if intr {
					end = errInterrupted
				}
				done = true
			case unix.NLMSG_ERROR:
				errno, msg, err := parseAck(h.flags, data)
				switch {
				case err != nil:
					end = err
				case errno != 0 && msg != "":
					end = &kernelError{errno: errno, msg: msg}
				case errno != 0:
					end = errno
				}
				done = end != nil
			case want:
				f(data)
			}
			return !done
		})
		switch {
		case done:
			return end
		case err != nil:
			return err
		}
	}
}

// errInterrupted is a dump the kernel marked inconsistent.
var errInterrupted = errors.New("dump interrupted by a change; read again")

func (k *nlKernel) routes(table uint32, about int) ([]kernelRoute, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETROUTE, unix.NLM_F_DUMP)
	// Strict checking makes the kernel send only routes of the protocol
	// and table; parseRoute checks them again for kernels without it.
	msg := &nl.RtMsg{RtMsg: unix.RtMsg{Family: unix.AF_INET6, Protocol: Protocol, Table: headerTable(table)}}
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.RTA_TABLE, nl.Uint32Attr(table)))
	out := make([]kernelRoute, 0, about)
	err := k.dump(req, unix.RTM_NEWROUTE, func(data []byte) {
		if kr, ok := parseRoute(data, table); ok {
			out = append(out, kr)
		}
	})
	if errors.Is(err, syscall.ENOENT) {
		return nil, nil // the table does not exist (yet): it holds nothing
	}
	return out, err
}

func (k *nlKernel) neighs() ([]kernelNeigh, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETNEIGH, unix.NLM_F_DUMP)
	req.AddData(&netlink.Ndmsg{Family: unix.AF_INET6})
	var out []kernelNeigh
	err := k.dump(req, unix.RTM_NEWNEIGH, func(data []byte) {
		if kn, ok := parseNeigh(data); ok {
			out = append(out, kn)
		}
	})
	return out, err
}

func (k *nlKernel) links(names []string) ([]link, error) {
	out := make([]link, len(names))
	for i, name := range names {
		l, err := k.h.LinkByName(name)
		var nf netlink.LinkNotFoundError
		switch {
		case errors.As(err, &nf), errors.Is(err, syscall.ENODEV):
			continue // absent
		case err != nil:
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		a := l.Attrs()
		out[i] = link{index: int32(a.Index), up: a.Flags&net.FlagUp != 0, carrier: a.RawFlags&unix.IFF_LOWER_UP != 0}
	}
	return out, nil
}

// watch follows the namespace's interfaces (RTNLGRP_LINK) and the
// deletions of routes of Protocol (RTNLGRP_IPV6_ROUTE) until done
// closes, signalling each (coalesced) on the channel; events returns
// what they were. Interfaces seen down, without carrier or deleted are
// kept as flapped. The route socket carries a socket filter that passes
// only RTM_DELROUTE of Protocol, so the Router's own route writes (some
// 70k a second at a reconcile) wake nothing. A lost event (the kernel
// drops them when the socket's buffer is full: ENOBUFS) is reported as
// lost, and a link subscription that ends is made again.
func (k *nlKernel) watch(done <-chan struct{}) <-chan struct{} {
	out := make(chan struct{}, 1)
	signal := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	record := func(f func(ev *events)) {
		k.fmu.Lock()
		f(&k.ev)
		k.fmu.Unlock()
		signal()
	}
	subscribe := func() (chan netlink.LinkUpdate, error) {
		ch := make(chan netlink.LinkUpdate, 256)
		opts := netlink.LinkSubscribeOptions{ErrorCallback: func(error) {}}
		if k.ns.IsOpen() {
			opts.Namespace = &k.ns
		}
		return ch, netlink.LinkSubscribeWithOptions(ch, done, opts)
	}
	ch, err := subscribe()
	if err != nil {
		return nil
	}
	go func() {
		for {
			for u := range ch {
				const upAndCarrier = unix.IFF_UP | unix.IFF_LOWER_UP
				flapped := u.Header.Type == unix.RTM_DELLINK || u.IfInfomsg.Flags&upAndCarrier != upAndCarrier
				record(func(ev *events) {
					ev.links = true
					if flapped && u.Link != nil {
						if ev.flapped == nil {
							ev.flapped = map[string]bool{}
						}
						ev.flapped[u.Link.Attrs().Name] = true
					}
				})
			}
			// The subscription ended: stopping, or an error.
			for {
				select {
				case <-done:
					return
				case <-time.After(time.Second):
				}
				record(func(ev *events) { ev.links, ev.lost = true, true })
				if ch, err = subscribe(); err == nil {
					break
				}
			}
		}
	}()
	if s, err := k.routeEvents(); err == nil {
		go func() {
			<-done
			k.emu.Lock()
			s.Close()
			if k.rev == s {
				k.rev = nil
			}
			k.emu.Unlock()
		}()
		go func() {
			for {
				msgs, _, err := s.Receive()
				switch {
				case errors.Is(err, syscall.ENOBUFS):
					record(func(ev *events) { ev.lost = true })
					continue
				case err != nil:
					return // closed
				}
				for _, m := range msgs {
					if m.Header.Type != unix.RTM_DELROUTE {
						continue
					}
					if kr, ok := parseRoute(m.Data, k.table); ok {
						record(func(ev *events) { ev.gone = append(ev.gone, kr.prefix) })
					}
				}
			}
		}()
	}
	return out
}

// routeEvents opens a socket on the IPv6 route notifications with a
// socket filter that passes RTM_DELROUTE of Protocol alone, and not
// those of the Router's own deletes.
func (k *nlKernel) routeEvents() (*nl.NetlinkSocket, error) {
	s, err := nl.SubscribeAt(k.ns, netns.None(), unix.NETLINK_ROUTE, unix.RTNLGRP_IPV6_ROUTE)
	if err != nil {
		return nil, err
	}
	k.emu.Lock()
	defer k.emu.Unlock()
	if err := attachRouteFilter(s, k.ownPID); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.SetReceiveBufferSize(sockBuf, true); err != nil {
		_ = s.SetReceiveBufferSize(sockBuf, false)
	}
	k.rev = s
	return s, nil
}

// attachRouteFilter sets (or replaces) s's socket filter:
// delRouteFilter(own).
func attachRouteFilter(s *nl.NetlinkSocket, own uint32) error {
	prog, err := bpf.Assemble(delRouteFilter(own))
	if err != nil {
		return err
	}
	fp := make([]unix.SockFilter, len(prog))
	for i, in := range prog {
		fp[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	return unix.SetsockoptSockFprog(s.GetFd(), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(fp)), Filter: &fp[0]})
}

// delRouteFilter is a classic BPF program over one notification (a
// netlink message alone in its datagram):
//
//	offset 4..5   nlmsg_type     RTM_DELROUTE (in the host's byte order)
//	offset 12..15 nlmsg_pid      not own, when own is not 0
//	offset 16     rtm_family     AF_INET6
//	offset 21     rtm_protocol   Protocol
//
// It keeps the whole message when all match and drops it otherwise. A
// notification carries the port id of the socket whose request caused
// it (0 for the kernel's own changes), so own, the write socket's port
// id, drops the echoes of the Router's deletes, which would wake the
// watcher once a route (4 % of pdrelay's CPU while 100k clients release).
func delRouteFilter(own uint32) []bpf.Instruction {
	lo, hi := uint32(4), uint32(5) // bytes of nlmsg_type: low, high
	if nl.NativeEndian().Uint16([]byte{1, 0}) != 1 {
		lo, hi = 5, 4
	}
	type test struct {
		off, size int
		val       uint32 // the message goes on when the field equals it
		not       bool   // ... when the field differs from it
	}
	tests := []test{
		{off: int(lo), size: 1, val: unix.RTM_DELROUTE & 0xff},
		{off: int(hi), size: 1, val: unix.RTM_DELROUTE >> 8},
		{off: unix.NLMSG_HDRLEN, size: 1, val: unix.AF_INET6},
		{off: unix.NLMSG_HDRLEN + 5, size: 1, val: Protocol},
	}
	if own != 0 {
		// A 4-byte absolute load reads in network byte order.
		var b [4]byte
		nl.NativeEndian().PutUint32(b[:], own)
		tests = append(tests, test{off: 12, size: 4, val: binary.BigEndian.Uint32(b[:]), not: true})
	}
	var prog []bpf.Instruction
	for i, t := range tests {
		drop := uint8(2*(len(tests)-i) - 1) // from the jump to the drop
		prog = append(prog, bpf.LoadAbsolute{Off: uint32(t.off), Size: t.size})
		if t.not {
			prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: t.val, SkipTrue: drop})
		} else {
			prog = append(prog, bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: t.val, SkipTrue: drop})
		}
	}
	return append(prog, bpf.RetConstant{Val: 0xffff}, bpf.RetConstant{Val: 0})
}

func (k *nlKernel) events() events {
	k.fmu.Lock()
	defer k.fmu.Unlock()
	ev := k.ev
	k.ev = events{}
	return ev
}

func (k *nlKernel) close() {
	k.wmu.Lock()
	k.resetWrite()
	k.wmu.Unlock()
	k.dmu.Lock()
	if k.d != nil {
		k.d.close()
		k.d = nil
	}
	k.dmu.Unlock()
	k.h.Close()
}
