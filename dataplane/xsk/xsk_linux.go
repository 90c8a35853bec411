package xsk

import (
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Socket is an AF_XDP socket bound to one queue of one interface. Its
// methods other than Stats and Info are for one goroutine: the one that
// owns the socket's UMEM (see the package doc).
type Socket struct {
	fd      int
	id      uint8 // owner id in umem.owner
	umem    *UMEM
	ownUMEM bool // umem is a private fallback this socket closes
	info    Info

	rx   descRing
	tx   descRing
	fill addrRing
	comp addrRing

	pfd     [1]unix.PollFd
	scratch [256]uint64 // FillFromUMEM's batch

	received    atomic.Uint64
	transmitted atomic.Uint64
	completed   atomic.Uint64
	filled      atomic.Uint64
	kicks       atomic.Uint64
	kickErrors  atomic.Uint64
	txDropped   atomic.Uint64 // copy mode: sendto's EBUSY, one refused frame each
	lastErrno   atomic.Uint32 // last unexpected wakeup errno
	sockErrno   atomic.Uint32 // SO_ERROR once seen: the socket was unbound
}

// NewSocket opens an AF_XDP socket on u and binds it to cfg's interface
// and queue. The first socket on a UMEM registers it with the kernel
// (trying zero-copy first under BindAuto); later sockets share it
// (XDP_SHARED_UMEM) with their own fill and completion rings, which the
// kernel allows across interfaces and queues since Linux 5.10. If the
// kernel refuses to share, the socket gets a private UMEM of the same
// geometry and Info().ShareErr says why (unless cfg.NoShareFallback).
//
// The socket receives nothing until it is registered with the XDP
// program on its interface (Program.Register) and its fill ring has
// frames (Fill, FillFromUMEM).
func NewSocket(u *UMEM, cfg SocketConfig) (*Socket, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if u == nil || u.closed {
		return nil, ErrClosed
	}
	for _, o := range u.sockets {
		if o.info.Ifindex == c.Ifindex && o.info.Queue == c.Queue {
			return nil, fmt.Errorf("xsk: socket on ifindex %d queue %d: %w", c.Ifindex, c.Queue, ErrSameQueue)
		}
	}
	if len(u.sockets) == 0 {
		s, err := openOwner(u, c)
		if err != nil {
			return nil, err
		}
		s.info.SharedUMEM = true
		return s, nil
	}
	// Any bound socket of the UMEM names it to the kernel; skip ones
	// known to be unbound (their interface went away).
	share := u.sockets[0]
	for _, o := range u.sockets {
		if o.unboundErr() == nil {
			share = o
			break
		}
	}
	s, shareErr := open(u, c, share, unix.XDP_SHARED_UMEM)
	if shareErr == nil {
		// Copy or zero-copy and need_wakeup are the UMEM's first
		// socket's; Info.ZeroCopy is read back from the kernel.
		s.info.SharedUMEM = true
		s.info.NeedWakeup = share.info.NeedWakeup
		return s, nil
	}
	if c.NoShareFallback || !isBindErr(shareErr) {
		return nil, shareErr
	}
	priv, err := NewUMEM(u.config())
	if err != nil {
		return nil, errors.Join(shareErr, err)
	}
	s, err = openOwner(priv, c)
	if err != nil {
		priv.Close()
		return nil, errors.Join(shareErr, err)
	}
	s.ownUMEM = true
	s.info.ShareErr = shareErr
	return s, nil
}

// openOwner opens the socket that registers u, with the copy/zero-copy
// fallback of BindAuto. A failed bind leaves an AF_XDP socket half set
// up, so each attempt starts from a new socket.
func openOwner(u *UMEM, c SocketConfig) (*Socket, error) {
	const wake = unix.XDP_USE_NEED_WAKEUP
	switch c.Bind {
	case BindCopy:
		return open(u, c, nil, unix.XDP_COPY|wake)
	case BindZeroCopy:
		return open(u, c, nil, unix.XDP_ZEROCOPY|wake)
	}
	s, zcErr := open(u, c, nil, unix.XDP_ZEROCOPY|wake)
	if zcErr == nil || !isBindErr(zcErr) {
		return s, zcErr
	}
	s, err := open(u, c, nil, unix.XDP_COPY|wake)
	if err != nil {
		return nil, fmt.Errorf("%w (zero-copy: %v)", err, zcErr)
	}
	s.info.ZeroCopyErr = zcErr
	return s, nil
}

// busyWait is how long open retries a bind refused with EBUSY. Closing a
// socket unbinds it at once, but the kernel frees the queue for a new
// socket only when it releases the old socket's buffer pool, from a work
// queue, a little later: reopening a queue just closed can meet EBUSY.
const busyWait = 2 * time.Second

// open creates, sets up and binds one socket, retrying while the queue
// is still held by a socket closed just before. share, if not nil, is a
// bound socket on u whose UMEM this one shares; otherwise this socket
// registers u.
func open(u *UMEM, c SocketConfig, share *Socket, flags uint16) (*Socket, error) {
	start := time.Now()
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		s, err := openOnce(u, c, share, flags)
		if err == nil || !errors.Is(err, unix.EBUSY) || time.Since(start) > busyWait {
			return s, err
		}
		time.Sleep(wait)
	}
}

func openOnce(u *UMEM, c SocketConfig, share *Socket, flags uint16) (*Socket, error) {
	id, err := u.socketID()
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			err = fmt.Errorf("permission denied (needs root or CAP_NET_RAW): %w", err)
		}
		return nil, fmt.Errorf("xsk: socket(AF_XDP): %w", err)
	}
	s := &Socket{fd: fd, id: id, umem: u}
	s.info = Info{Ifindex: c.Ifindex, Queue: c.Queue, NeedWakeup: flags&unix.XDP_USE_NEED_WAKEUP != 0}
	if err := s.setup(c, share, flags); err != nil {
		s.teardown()
		return nil, fmt.Errorf("xsk: ifindex %d queue %d: %w", c.Ifindex, c.Queue, err)
	}
	u.sockets = append(u.sockets, s)
	u.reclaimPending(c.Ifindex, c.Queue)
	return s, nil
}

func (s *Socket) setup(c SocketConfig, share *Socket, flags uint16) error {
	u := s.umem
	if share == nil {
		reg := unix.XDPUmemReg{
			Addr:     uint64(uintptr(unsafe.Pointer(&u.area[0]))),
			Len:      uint64(len(u.area)),
			Size:     uint32(u.frameSize),
			Headroom: uint32(u.headroom),
		}
		// The kernel takes struct xdp_umem_reg in three sizes; this is the
		// newest (with flags and tx_metadata_len, both zero here), and
		// kernels that know a shorter one read only that prefix.
		if err := setsockopt(s.fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
			return fmt.Errorf("register umem (%d x %d bytes): %w", u.frames, u.frameSize, err)
		}
	}
	// Every socket that is not on the same interface and queue as the
	// socket it shares with needs its own fill and completion rings:
	// they belong to the (interface, queue) buffer pool, not the UMEM.
	// NewSocket refuses a second socket on the same queue, so always.
	if err := unix.SetsockoptInt(s.fd, unix.SOL_XDP, unix.XDP_UMEM_FILL_RING, c.FillSize); err != nil {
		return fmt.Errorf("fill ring of %d: %w", c.FillSize, err)
	}
	if err := unix.SetsockoptInt(s.fd, unix.SOL_XDP, unix.XDP_UMEM_COMPLETION_RING, c.CompletionSize); err != nil {
		return fmt.Errorf("completion ring of %d: %w", c.CompletionSize, err)
	}
	if !c.NoRx {
		if err := unix.SetsockoptInt(s.fd, unix.SOL_XDP, unix.XDP_RX_RING, c.RxSize); err != nil {
			return fmt.Errorf("rx ring of %d: %w", c.RxSize, err)
		}
	}
	if !c.NoTx {
		if err := unix.SetsockoptInt(s.fd, unix.SOL_XDP, unix.XDP_TX_RING, c.TxSize); err != nil {
			return fmt.Errorf("tx ring of %d: %w", c.TxSize, err)
		}
	}

	// Where producer, consumer, flags and the entries sit in each ring's
	// mapping. Kernels before 5.4 return a shorter struct without the
	// flags word, which need_wakeup depends on: refuse them.
	var off unix.XDPMmapOffsets
	n, err := getsockopt(s.fd, unix.XDP_MMAP_OFFSETS, unsafe.Pointer(&off), unsafe.Sizeof(off))
	if err != nil {
		return fmt.Errorf("XDP_MMAP_OFFSETS: %w", err)
	}
	if n != unsafe.Sizeof(off) {
		return fmt.Errorf("XDP_MMAP_OFFSETS returned %d bytes, want %d: kernel too old (need 5.10)", n, unsafe.Sizeof(off))
	}
	mm := func(pgoff int64, length int) ([]byte, error) {
		return unix.Mmap(s.fd, pgoff, length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	}
	mem, err := mm(unix.XDP_UMEM_PGOFF_FILL_RING, ringBytes(off.Fr, uint32(c.FillSize), 8))
	if err != nil {
		return fmt.Errorf("mmap fill ring: %w", err)
	}
	s.fill.init(mem, off.Fr, uint32(c.FillSize))
	mem, err = mm(unix.XDP_UMEM_PGOFF_COMPLETION_RING, ringBytes(off.Cr, uint32(c.CompletionSize), 8))
	if err != nil {
		return fmt.Errorf("mmap completion ring: %w", err)
	}
	s.comp.init(mem, off.Cr, uint32(c.CompletionSize))
	if !c.NoRx {
		mem, err = mm(unix.XDP_PGOFF_RX_RING, ringBytes(off.Rx, uint32(c.RxSize), unsafe.Sizeof(Desc{})))
		if err != nil {
			return fmt.Errorf("mmap rx ring: %w", err)
		}
		s.rx.init(mem, off.Rx, uint32(c.RxSize))
	}
	if !c.NoTx {
		mem, err = mm(unix.XDP_PGOFF_TX_RING, ringBytes(off.Tx, uint32(c.TxSize), unsafe.Sizeof(Desc{})))
		if err != nil {
			return fmt.Errorf("mmap tx ring: %w", err)
		}
		s.tx.init(mem, off.Tx, uint32(c.TxSize))
	}

	sa := &unix.SockaddrXDP{Flags: flags, Ifindex: uint32(c.Ifindex), QueueID: uint32(c.Queue)}
	if share != nil {
		sa.SharedUmemFD = uint32(share.fd)
	}
	if err := unix.Bind(s.fd, sa); err != nil {
		return bindError{fmt.Errorf("bind (%s): %w", bindFlagsString(flags), explainBind(err))}
	}

	var opts struct{ Flags uint32 } // struct xdp_options
	if _, err := getsockopt(s.fd, unix.XDP_OPTIONS, unsafe.Pointer(&opts), unsafe.Sizeof(opts)); err != nil {
		return fmt.Errorf("XDP_OPTIONS: %w", err)
	}
	s.info.ZeroCopy = opts.Flags&unix.XDP_OPTIONS_ZEROCOPY != 0

	// In copy mode one sendto transmits at most a budget of frames (32
	// by default) and returns EAGAIN if more are queued. Linux 6.17+
	// lets the budget grow to the TX ring size; older kernels refuse the
	// option, and kickTx loops instead.
	if !c.NoTx && !s.info.ZeroCopy {
		_ = unix.SetsockoptInt(s.fd, unix.SOL_XDP, unix.XDP_MAX_TX_SKB_BUDGET, c.TxSize)
	}
	return nil
}

// bindError marks a failure of bind itself, the step where another mode
// (copy instead of zero-copy, a private UMEM instead of a shared one) may
// still succeed; failures before it would fail again.
type bindError struct{ error }

func (e bindError) Unwrap() error { return e.error }

func isBindErr(err error) bool {
	var b bindError
	return errors.As(err, &b)
}

func bindFlagsString(f uint16) string {
	switch {
	case f&unix.XDP_SHARED_UMEM != 0:
		return "shared umem"
	case f&unix.XDP_ZEROCOPY != 0:
		return "zero-copy"
	case f&unix.XDP_COPY != 0:
		return "copy"
	}
	return "auto"
}

// explainBind adds what a bind errno usually means to it.
func explainBind(err error) error {
	var hint string
	switch {
	case errors.Is(err, unix.EOPNOTSUPP):
		hint = "driver does not support this AF_XDP mode"
	case errors.Is(err, unix.EBUSY):
		hint = "queue already has an AF_XDP socket or is in use by the driver"
	case errors.Is(err, unix.ENODEV):
		hint = "no such interface in this network namespace"
	case errors.Is(err, unix.EINVAL):
		hint = "bad queue id, ring setup or flags"
	case errors.Is(err, unix.EPERM):
		hint = "needs CAP_NET_RAW"
	default:
		return err
	}
	return fmt.Errorf("%s: %w", hint, err)
}

// teardown unmaps the rings and closes the fd. It does not touch the
// UMEM's socket list.
func (s *Socket) teardown() error {
	var first error
	// Each ring mapping holds a reference to the socket's file: the kernel
	// releases the socket (unbinds it, removes it from XSKMAPs, stops
	// touching its frames) when the fd and all four mappings are gone.
	for _, m := range [][]byte{s.rx.mem, s.tx.mem, s.fill.mem, s.comp.mem} {
		if m != nil {
			if err := unix.Munmap(m); err != nil && first == nil {
				first = fmt.Errorf("xsk: munmap ring: %w", err)
			}
		}
	}
	s.rx, s.tx, s.fill, s.comp = descRing{}, descRing{}, addrRing{}, addrRing{}
	if s.fd >= 0 {
		if err := unix.Close(s.fd); err != nil && first == nil {
			first = fmt.Errorf("xsk: close: %w", err)
		}
		s.fd = -1
	}
	return first
}

// Close releases the socket. Frames its kernel side held (on its fill
// and TX rings, received but not read, completed but not reaped) go back
// to the UMEM's free list: at once in copy mode; in zero-copy mode once
// the kernel has detached the socket from the driver (see
// pendingReclaim), at the latest when the UMEM closes. A private
// fallback UMEM is closed with the socket. Idempotent; the batch methods
// return 0 after Close.
func (s *Socket) Close() error {
	if s.fd < 0 {
		return nil
	}
	err := s.teardown()
	s.umem.removeSocket(s)
	if s.info.ZeroCopy {
		s.umem.pending = append(s.umem.pending, pendingReclaim{s.id, s.info.Ifindex, s.info.Queue})
	} else {
		s.umem.reclaim(s.id)
	}
	if s.ownUMEM {
		if e := s.umem.Close(); e != nil && err == nil {
			err = e
		}
	}
	return err
}

// FD returns the socket's file descriptor (-1 after Close), for polling
// it with others.
func (s *Socket) FD() int { return s.fd }

// UMEM returns the UMEM the socket's descriptors address: the one it was
// opened with, or its private one if sharing was refused.
func (s *Socket) UMEM() *UMEM { return s.umem }

// Info says how the socket was bound.
func (s *Socket) Info() Info { return s.info }

// SameUMEM reports whether a descriptor received on s can be transmitted
// on o as is (zero-copy forwarding); if not, the frame must be copied
// into a frame of o's UMEM.
func (s *Socket) SameUMEM(o *Socket) bool { return s.umem == o.umem }

// Frame returns the bytes of a descriptor received on (or to be
// transmitted by) this socket: a slice into the UMEM, no copy.
func (s *Socket) Frame(d Desc) []byte { return s.umem.Frame(d) }

// clamp turns a slice length into a ring count.
func clamp(n int) uint32 {
	if uint64(n) > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(n)
}

// Receive moves up to len(descs) received descriptors from the RX ring
// into descs and returns how many. The frames are the caller's until it
// fills, transmits or frees them. When the ring is empty and the kernel
// asked for a wakeup on the fill ring (zero-copy drivers do, when they
// ran out of frames), Receive issues it.
func (s *Socket) Receive(descs []Desc) int {
	if s.rx.descs == nil {
		return 0
	}
	n := s.rx.available(clamp(len(descs)))
	if n == 0 {
		if s.fill.addrs != nil && s.fill.needWakeup() {
			s.kickRx()
		}
		return 0
	}
	cons := s.rx.cachedCons
	for i := uint32(0); i < n; i++ {
		d := s.rx.descs[(cons+i)&s.rx.mask]
		descs[i] = d
		s.umem.setOwner(d.Addr, 0)
	}
	s.rx.cachedCons = cons + n
	s.rx.release()
	s.received.Add(uint64(n))
	return int(n)
}

// Fill gives up to len(addrs) frames to the kernel to receive into and
// returns how many fit on the fill ring. Any address inside a frame
// will do (a received descriptor's Addr included).
func (s *Socket) Fill(addrs []uint64) int {
	if s.fill.addrs == nil {
		return 0
	}
	n := s.fill.freeSlots(clamp(len(addrs)))
	if n == 0 {
		return 0
	}
	prod := s.fill.cachedProd
	for i := uint32(0); i < n; i++ {
		a := addrs[i]
		s.fill.addrs[(prod+i)&s.fill.mask] = a
		s.umem.setOwner(a, s.id)
	}
	s.fill.cachedProd = prod + n
	s.fill.publish()
	s.filled.Add(uint64(n))
	return int(n)
}

// FillFromUMEM takes up to max frames off the UMEM's free list and puts
// them on the fill ring, as many as fit; it returns how many.
func (s *Socket) FillFromUMEM(max int) int {
	if s.fill.addrs == nil {
		return 0
	}
	total := 0
	for total < max {
		k := int(s.fill.freeSlots(clamp(min(max-total, len(s.scratch)))))
		if k == 0 {
			break
		}
		got := s.umem.Alloc(s.scratch[:k])
		if got == 0 {
			break
		}
		s.Fill(s.scratch[:got])
		total += got
	}
	return total
}

// Transmit puts up to len(descs) descriptors on the TX ring and returns
// how many fit; the rest are the caller's to retry or drop (count them as
// TX ring full). A transmitted frame belongs to the kernel until Complete
// returns its address. Transmit then wakes the kernel if it asked
// (always, in copy mode: the copy is done by the sendto), so
// Transmit(nil) pushes out frames a previous call left queued.
func (s *Socket) Transmit(descs []Desc) int {
	if s.tx.descs == nil {
		return 0
	}
	n := s.tx.freeSlots(clamp(len(descs)))
	if n > 0 {
		prod := s.tx.cachedProd
		for i := uint32(0); i < n; i++ {
			d := descs[i]
			s.tx.descs[(prod+i)&s.tx.mask] = d
			s.umem.setOwner(d.Addr, s.id)
		}
		s.tx.cachedProd = prod + n
		s.tx.publish()
		s.transmitted.Add(uint64(n))
	}
	if (!s.info.NeedWakeup || s.tx.needWakeup()) && s.tx.outstanding() > 0 {
		s.kickTx()
	}
	return int(n)
}

// Complete moves up to len(addrs) addresses of transmitted frames from
// the completion ring into addrs and returns how many. The frames are the
// caller's again (to fill, reuse or free).
func (s *Socket) Complete(addrs []uint64) int {
	if s.comp.addrs == nil {
		return 0
	}
	n := s.comp.available(clamp(len(addrs)))
	if n == 0 {
		return 0
	}
	cons := s.comp.cachedCons
	for i := uint32(0); i < n; i++ {
		a := s.comp.addrs[(cons+i)&s.comp.mask]
		addrs[i] = a
		s.umem.setOwner(a, 0)
	}
	s.comp.cachedCons = cons + n
	s.comp.release()
	s.completed.Add(uint64(n))
	return int(n)
}

// TxQueued returns how many transmitted descriptors the kernel has not
// taken off the TX ring yet.
func (s *Socket) TxQueued() int {
	if s.tx.descs == nil {
		return 0
	}
	return int(s.tx.outstanding())
}

// maxKicks bounds the sendto loop of one Transmit: with the default copy
// budget of 32 a 2048-entry ring drains in 64 calls.
const maxKicks = 128

// kickTx asks the kernel to transmit what is on the TX ring: sendto with
// no data. In copy mode the frames are copied and sent inside the call;
// EAGAIN then means "budget used up, more queued" (call again while the
// kernel makes progress) or "completion ring full" (no progress: the
// caller must reap completions first). EBUSY and ENOBUFS are transient.
// Any other errno is counted and kept for Err.
func (s *Socket) kickTx() {
	for range maxKicks {
		before := atomic.LoadUint32(s.tx.consumer)
		_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(s.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
		s.kicks.Add(1)
		switch e {
		case 0:
			if s.lastErrno.Load() != 0 {
				s.lastErrno.Store(0)
			}
			return
		case unix.EAGAIN, unix.EINTR:
			if atomic.LoadUint32(s.tx.consumer) == before || s.tx.outstanding() == 0 {
				return
			}
		case unix.EBUSY:
			// Copy mode: the device dropped one frame (completed,
			// not sent) and the kernel stopped there; the rest wait
			// for the next kick.
			if !s.info.ZeroCopy {
				s.txDropped.Add(1)
			}
			return
		case unix.ENOBUFS:
			return
		default:
			s.kickErrors.Add(1)
			s.lastErrno.Store(uint32(e))
			return
		}
	}
}

// kickRx wakes a zero-copy driver that ran out of fill-ring frames.
func (s *Socket) kickRx() {
	_, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(s.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	s.kicks.Add(1)
	switch e {
	case 0, unix.EAGAIN, unix.EINTR, unix.EBUSY, unix.ENOBUFS:
	default:
		s.kickErrors.Add(1)
		s.lastErrno.Store(uint32(e))
	}
}

// Err returns the error of the last TX wakeup if it failed unexpectedly
// (or of an RX wakeup since), or nil:
// ENETDOWN while the interface is down (queued frames wait for it to come
// back), ENXIO once the interface is gone and the socket unbound (close
// it; Poll reports that too).
func (s *Socket) Err() error {
	if e := s.lastErrno.Load(); e != 0 {
		return fmt.Errorf("xsk: ifindex %d queue %d: wakeup: %w", s.info.Ifindex, s.info.Queue, syscall.Errno(e))
	}
	return nil
}

// pollEvents is what a socket waits for: frames to read, or for a
// TX-only socket, room on the TX ring.
func (s *Socket) pollEvents() int16 {
	if s.rx.descs != nil {
		return unix.POLLIN
	}
	return unix.POLLOUT
}

// Poll blocks until the RX ring has frames (for a TX-only socket: the TX
// ring has room), the timeout passes (negative: no timeout) or a signal
// interrupts it; it reports whether the socket is ready. Polling also
// wakes the kernel: it transmits in copy mode and refills zero-copy
// drivers. An unbound socket (its interface was removed) returns an
// error.
func (s *Socket) Poll(timeout time.Duration) (bool, error) {
	if s.fd < 0 {
		return false, ErrClosed
	}
	if err := s.unboundErr(); err != nil {
		return false, err
	}
	s.pfd[0] = unix.PollFd{Fd: int32(s.fd), Events: s.pollEvents()}
	n, err := unix.Poll(s.pfd[:], pollMillis(timeout))
	if err != nil {
		if err == unix.EINTR {
			return false, nil
		}
		return false, fmt.Errorf("xsk: poll: %w", err)
	}
	ready := n > 0 && s.pfd[0].Revents&s.pfd[0].Events != 0
	if !ready {
		// An unbound socket polls as never ready, with no POLLERR: the
		// kernel says it only through SO_ERROR. Look when idle.
		if err := s.checkSockErr(); err != nil {
			return false, err
		}
	}
	return ready, nil
}

func pollMillis(d time.Duration) int {
	if d < 0 {
		return -1
	}
	ms := (d + time.Millisecond - 1) / time.Millisecond
	if ms > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(ms)
}

// checkSockErr reads SO_ERROR. The kernel sets it (ENETDOWN) when it
// unbinds the socket because its interface is being removed; reading
// clears it, so it is kept in sockErrno.
func (s *Socket) checkSockErr() error {
	v, err := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return fmt.Errorf("xsk: ifindex %d queue %d: SO_ERROR: %w", s.info.Ifindex, s.info.Queue, err)
	}
	if v != 0 {
		s.sockErrno.Store(uint32(v))
	}
	return s.unboundErr()
}

// unboundErr returns the error that unbound the socket, if any.
func (s *Socket) unboundErr() error {
	if e := s.sockErrno.Load(); e != 0 {
		return fmt.Errorf("xsk: ifindex %d queue %d: socket unbound (interface removed?): %w", s.info.Ifindex, s.info.Queue, syscall.Errno(e))
	}
	return nil
}

// Stats returns the socket's counters. Safe to call from any goroutine
// while the socket is open.
func (s *Socket) Stats() (Stats, error) {
	st := Stats{
		Received:    s.received.Load(),
		Transmitted: s.transmitted.Load(),
		Completed:   s.completed.Load(),
		Filled:      s.filled.Load(),
		Kicks:       s.kicks.Load(),
		KickErrors:  s.kickErrors.Load(),
		TxDropped:   s.txDropped.Load(),
	}
	var ks unix.XDPStatistics // kernels before 5.9 fill only the first three
	if _, err := getsockopt(s.fd, unix.XDP_STATISTICS, unsafe.Pointer(&ks), unsafe.Sizeof(ks)); err != nil {
		return st, fmt.Errorf("xsk: XDP_STATISTICS: %w", err)
	}
	st.RxDropped = ks.Rx_dropped
	st.RxInvalidDescs = ks.Rx_invalid_descs
	st.TxInvalidDescs = ks.Tx_invalid_descs
	st.RxRingFull = ks.Rx_ring_full
	st.RxFillRingEmpty = ks.Rx_fill_ring_empty_descs
	st.TxRingEmpty = ks.Tx_ring_empty_descs
	return st, nil
}

func setsockopt(fd, opt int, p unsafe.Pointer, size uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), size, 0)
	if e != 0 {
		return e
	}
	return nil
}

// getsockopt returns how many bytes the kernel wrote.
func getsockopt(fd, opt int, p unsafe.Pointer, size uintptr) (uintptr, error) {
	l := uint32(size)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, e
	}
	return uintptr(l), nil
}

// Poller waits on several sockets at once: a worker that owns a UMEM and
// the sockets of several ports on it blocks on all of them when idle.
type Poller struct {
	socks []*Socket
	pfds  []unix.PollFd
}

// NewPoller returns a Poller over socks.
func NewPoller(socks ...*Socket) *Poller {
	return &Poller{socks: socks, pfds: make([]unix.PollFd, len(socks))}
}

// Wait blocks until one of the sockets is ready (as in Socket.Poll), the
// timeout passes or a signal arrives, and returns how many are ready;
// Ready(i) tells which. An unbound socket returns an error.
func (p *Poller) Wait(timeout time.Duration) (int, error) {
	for i, s := range p.socks {
		if s.fd < 0 {
			return 0, ErrClosed
		}
		if err := s.unboundErr(); err != nil {
			return 0, err
		}
		p.pfds[i] = unix.PollFd{Fd: int32(s.fd), Events: s.pollEvents()}
	}
	n, err := unix.Poll(p.pfds, pollMillis(timeout))
	if err != nil {
		if err == unix.EINTR {
			return 0, nil
		}
		return 0, fmt.Errorf("xsk: poll: %w", err)
	}
	ready := 0
	if n > 0 {
		for _, pfd := range p.pfds {
			if pfd.Revents&pfd.Events != 0 {
				ready++
			}
		}
	}
	if ready == 0 {
		for _, s := range p.socks {
			if err := s.checkSockErr(); err != nil {
				return 0, err
			}
		}
	}
	return ready, nil
}

// Ready reports whether socket i was ready at the last Wait.
func (p *Poller) Ready(i int) bool {
	return p.pfds[i].Revents&p.pfds[i].Events != 0
}

// Driver returns the name of the kernel driver of the network interface
// name in the calling thread's network namespace, as `ethtool -i` shows
// it (the SIOCETHTOOL ioctl, ETHTOOL_GDRVINFO; no ethtool binary). A
// software device without driver information (no get_drvinfo and no
// parent device) gives an error wrapping EOPNOTSUPP.
func Driver(name string) (string, error) {
	// Any socket reaches the device ioctls of its namespace; AF_UNIX
	// exists whatever the IP configuration.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("xsk: driver of %s: socket: %w", name, err)
	}
	defer unix.Close(fd)
	info, err := unix.IoctlGetEthtoolDrvinfo(fd, name)
	if err != nil {
		return "", fmt.Errorf("xsk: driver of %s (ethtool GDRVINFO): %w", name, err)
	}
	return unix.ByteSliceToString(info.Driver[:]), nil
}

// ethtoolChannels is struct ethtool_channels.
type ethtoolChannels struct {
	Cmd                                         uint32
	MaxRx, MaxTx, MaxOther, MaxCombined         uint32
	RxCount, TxCount, OtherCount, CombinedCount uint32
}

// Queues returns how many receive queues of the network interface name
// (in the calling thread's network namespace) an AF_XDP socket can bind
// to: the channels `ethtool -l` shows in use, receive-only plus combined
// (ETHTOOL_GCHANNELS). A driver without channel information (EOPNOTSUPP)
// has one queue.
func Queues(name string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("xsk: queues of %s: socket: %w", name, err)
	}
	defer unix.Close(fd)
	ch := ethtoolChannels{Cmd: unix.ETHTOOL_GCHANNELS}
	var ifr struct { // struct ifreq with ifr_data
		name [unix.IFNAMSIZ]byte
		data uintptr
		_    [24 - unsafe.Sizeof(uintptr(0))]byte
	}
	if len(name) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("xsk: queues of %s: name too long", name)
	}
	copy(ifr.name[:], name)
	ifr.data = uintptr(unsafe.Pointer(&ch))
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	switch {
	case e == unix.EOPNOTSUPP:
		return 1, nil
	case e != 0:
		return 0, fmt.Errorf("xsk: queues of %s (ethtool GCHANNELS): %w", name, e)
	}
	return max(int(ch.RxCount+ch.CombinedCount), 1), nil
}
