package xsk

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
)

// Desc is one RX or TX descriptor: a frame of Len bytes at byte offset
// Addr in the UMEM. Its layout is the kernel's struct xdp_desc, so a
// []Desc is copied to and from the rings without conversion.
type Desc struct {
	Addr    uint64
	Len     uint32
	Options uint32 // XDP_PKT_CONTD etc.; always 0 here (no multi-buffer)
}

// Mode is how an XDP program is attached to an interface.
type Mode int

const (
	// ModeAuto tries ModeNative and falls back to ModeGeneric.
	ModeAuto Mode = iota
	// ModeNative runs the program in the driver (XDP_FLAGS_DRV_MODE).
	ModeNative
	// ModeGeneric runs the program on the skb path (XDP_FLAGS_SKB_MODE);
	// every driver has it, at a fraction of native speed.
	ModeGeneric
)

func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeNative:
		return "native"
	case ModeGeneric:
		return "generic"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// BindMode is how an AF_XDP socket moves frames between the driver and
// the UMEM.
type BindMode int

const (
	// BindAuto tries BindZeroCopy and falls back to BindCopy.
	BindAuto BindMode = iota
	// BindCopy: the kernel copies frames to and from the UMEM (XDP_COPY).
	// Works on every device, including veth.
	BindCopy
	// BindZeroCopy: the driver DMAs straight into the UMEM (XDP_ZEROCOPY).
	// Needs driver support (real NICs: ice, i40e, mlx5, ...).
	BindZeroCopy
)

func (b BindMode) String() string {
	switch b {
	case BindAuto:
		return "auto"
	case BindCopy:
		return "copy"
	case BindZeroCopy:
		return "zero-copy"
	}
	return fmt.Sprintf("BindMode(%d)", int(b))
}

// xdpPacketHeadroom is XDP_PACKET_HEADROOM: the room the kernel keeps in
// front of every received frame.
const xdpPacketHeadroom = 256

// Defaults used when a config field is zero.
const (
	DefaultFrames    = 4096
	DefaultFrameSize = 2048
	DefaultRingSize  = 2048
	DefaultQueues    = 64
	DefaultLocalMax  = 1024
	DefaultRouteMax  = 1024
)

// Errors. Failures of system calls are returned wrapped around their
// errno, so errors.Is(err, os.ErrPermission) and friends work too.
var (
	// ErrUnsupported: AF_XDP and XDP exist only on Linux.
	ErrUnsupported = errors.New("xsk: AF_XDP is only supported on linux")
	// ErrClosed: the socket, UMEM or program was closed.
	ErrClosed = errors.New("xsk: closed")
	// ErrSameQueue: a UMEM already has a socket on this interface and
	// queue. The kernel would make the two share one fill/completion
	// ring pair; this package does not support that.
	ErrSameQueue = errors.New("xsk: UMEM already has a socket on this interface and queue")
)

// Info describes how a socket ended up bound. Sockets fall back quietly
// (zero-copy to copy, shared UMEM to a private one); the daemon logs this
// once at start so the operator knows what the hardware gave.
type Info struct {
	Ifindex int
	Queue   int
	// ZeroCopy is the kernel's word (XDP_OPTIONS_ZEROCOPY), not the
	// request.
	ZeroCopy bool
	// ZeroCopyErr is why zero-copy was refused, when BindAuto fell back.
	ZeroCopyErr error
	// SharedUMEM is true when the socket uses the UMEM it was opened
	// with, shared with the UMEM's other sockets: descriptors received on
	// one of them can be transmitted on another with no copy.
	SharedUMEM bool
	// ShareErr is why sharing was refused, when the socket fell back to a
	// private UMEM of the same geometry. Frames must then be copied
	// between this socket's UMEM and the others'.
	ShareErr error
	// NeedWakeup is true when the socket was bound with
	// XDP_USE_NEED_WAKEUP: the kernel says through the ring flags when it
	// needs a system call to make progress.
	NeedWakeup bool
}

// Stats are a socket's counters. The first group is counted by this
// package, once per batch; the second is the kernel's (XDP_STATISTICS).
type Stats struct {
	Received    uint64 // descriptors taken from the RX ring
	Transmitted uint64 // descriptors put on the TX ring
	Completed   uint64 // descriptors taken from the completion ring
	Filled      uint64 // addresses put on the fill ring
	Kicks       uint64 // sendto/recvfrom wakeups issued
	KickErrors  uint64 // wakeups that failed with an unexpected errno
	// TxDropped counts frames the device refused in copy mode: the
	// kernel completes such a frame (it comes back through Complete)
	// but never sent it, and says so by failing that sendto with EBUSY
	// (net/xdp/xsk.c: NET_XMIT_DROP, "SKB completed but not sent"). A
	// veth does this when its peer is down or its peer's backlog is
	// full.
	TxDropped uint64

	RxDropped       uint64 // frames the kernel dropped (no room in the frame etc.)
	RxInvalidDescs  uint64 // bad fill-ring addresses
	TxInvalidDescs  uint64 // bad TX descriptors
	RxRingFull      uint64 // frames dropped because the RX ring was full
	RxFillRingEmpty uint64 // frames dropped because the fill ring was empty
	TxRingEmpty     uint64 // kernel found the TX ring empty when woken
}

// ProgramStats are the XDP program's verdict counters (Program.Stats):
// every frame the program saw is counted in exactly one of them.
type ProgramStats struct {
	// Redirected frames went to the AF_XDP socket of their queue. A
	// redirected frame the socket could not take (RX ring full, fill ring
	// empty, too long) is counted in that socket's Stats.
	Redirected uint64
	// Passed frames went to the kernel by one of the program's rules
	// (not IPv6, neighbour discovery, DHCPv6, local destination, ...).
	Passed uint64
	// NoSocket frames were to be redirected but their receive queue had
	// no socket registered, so they went to the kernel: traffic the plane
	// never saw (a queue the plane has no worker for).
	NoSocket uint64
	// Aborted frames were to be redirected and bpf_redirect_map returned
	// neither XDP_REDIRECT nor XDP_PASS: the frame is lost.
	Aborted uint64
}

// UMEMConfig sizes a UMEM. Zero fields take the defaults.
type UMEMConfig struct {
	// Frames is the number of frames (default DefaultFrames).
	Frames int
	// FrameSize is the size of one frame (the kernel's chunk size): a
	// power of two from 2048 to the page size (default 2048). The largest
	// frame a socket can receive is FrameSize - 256 - Headroom (the
	// kernel keeps XDP_PACKET_HEADROOM in front of every received frame).
	FrameSize int
	// Headroom is extra room the kernel leaves in front of received
	// frames, beyond XDP_PACKET_HEADROOM (default 0).
	Headroom int
}

func (c *UMEMConfig) withDefaults() (UMEMConfig, error) {
	d := *c
	if d.Frames == 0 {
		d.Frames = DefaultFrames
	}
	if d.FrameSize == 0 {
		d.FrameSize = DefaultFrameSize
	}
	page := os.Getpagesize()
	if d.Frames < 1 || d.Frames > 1<<24 {
		return d, fmt.Errorf("xsk: umem frames %d out of range 1..%d", d.Frames, 1<<24)
	}
	if d.FrameSize < 2048 || d.FrameSize > page || bits.OnesCount(uint(d.FrameSize)) != 1 {
		return d, fmt.Errorf("xsk: umem frame size %d: must be a power of two from 2048 to %d", d.FrameSize, page)
	}
	if d.Headroom < 0 || d.Headroom > d.FrameSize-xdpPacketHeadroom-1514 {
		return d, fmt.Errorf("xsk: umem headroom %d leaves no room for a 1514-byte frame in %d", d.Headroom, d.FrameSize)
	}
	return d, nil
}

// SocketConfig says where to bind a socket and how big its rings are.
// Ring sizes are powers of two; zero takes DefaultRingSize.
type SocketConfig struct {
	Ifindex int
	Queue   int

	RxSize         int
	TxSize         int
	FillSize       int
	CompletionSize int

	// NoRx and NoTx leave out the RX or TX ring (a TX-only or RX-only
	// socket). Not both.
	NoRx bool
	NoTx bool

	// Bind chooses copy or zero-copy for a socket that registers its
	// UMEM. A socket that shares a UMEM gets what the UMEM's first
	// socket got (the kernel refuses bind flags with XDP_SHARED_UMEM).
	Bind BindMode

	// NoShareFallback makes NewSocket fail when the kernel refuses to
	// share the UMEM, instead of giving the socket a private UMEM.
	NoShareFallback bool
}

func (c *SocketConfig) withDefaults() (SocketConfig, error) {
	d := *c
	for _, f := range []*int{&d.RxSize, &d.TxSize, &d.FillSize, &d.CompletionSize} {
		if *f == 0 {
			*f = DefaultRingSize
		}
		if *f < 1 || *f > 1<<20 || *f&(*f-1) != 0 {
			return d, fmt.Errorf("xsk: ring size %d: must be a power of two up to %d", *f, 1<<20)
		}
	}
	if d.NoRx && d.NoTx {
		return d, errors.New("xsk: a socket needs an RX or a TX ring")
	}
	if d.Ifindex <= 0 {
		return d, fmt.Errorf("xsk: bad ifindex %d", d.Ifindex)
	}
	if d.Queue < 0 {
		return d, fmt.Errorf("xsk: bad queue %d", d.Queue)
	}
	return d, nil
}

// ProgramConfig configures NewProgram.
type ProgramConfig struct {
	// Queues is the number of XSKMAP slots: one more than the highest
	// queue index a socket will be registered on (0: DefaultQueues).
	Queues int
	// Locals is the local-address map to use; nil creates one that the
	// program owns (see Program.Locals).
	Locals *LocalAddrs
	// Routes, if not nil, is the map of routed (delegated) prefixes: the
	// program then passes frames to a destination none of them holds to
	// the kernel instead of redirecting them (the uplink's no_route:
	// pass). The caller keeps ownership. Nil: no route check (downlinks).
	Routes *Routes
}
