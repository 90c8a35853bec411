package xsk

import (
	"fmt"
	"math/bits"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Desc must be the kernel's struct xdp_desc, byte for byte.
var _ = [1]struct{}{}[unsafe.Sizeof(Desc{})-unsafe.Sizeof(unix.XDPDesc{})]

// UMEM is a region of frames shared by this process and the kernel, and a
// free list of its frames. Frames are named by their byte offset in the
// region ("address"); a received descriptor's address points inside its
// frame (past the headroom), and every method here accepts such addresses
// and rounds them down to the frame.
//
// A UMEM and all the sockets on it are used by one goroutine.
type UMEM struct {
	area      []byte
	frameSize uint64
	frameMask uint64 // ^(frameSize-1)
	shift     uint   // log2(frameSize): address to frame index
	frames    int
	headroom  int

	free   []uint64 // stack of free frame addresses
	isFree []uint64 // bitmap by frame index, to refuse double frees
	// owner[i] is the id of the socket whose kernel side holds frame i
	// (on its fill or TX ring, or in flight), 0 when the frame is free or
	// with the caller. Set by Fill and Transmit, cleared by Receive and
	// Complete; Close uses it to take back the frames a closed socket's
	// kernel side held, so sockets can come and go on a shared UMEM
	// without leaking frames.
	owner  []uint8
	nextID uint8

	sockets []*Socket // live sockets on this UMEM, first is the registering one
	pending []pendingReclaim
	closed  bool

	badFrees atomic.Uint64
}

// NewUMEM maps a UMEM. It is registered with the kernel by the first
// socket opened on it.
func NewUMEM(cfg UMEMConfig) (*UMEM, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	size := c.Frames * c.FrameSize
	// Anonymous and private, populated now so the kernel can pin it at
	// registration without faulting page by page.
	area, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("xsk: mmap umem of %d bytes: %w", size, err)
	}
	u := &UMEM{
		area:      area,
		frameSize: uint64(c.FrameSize),
		frameMask: ^uint64(c.FrameSize - 1),
		shift:     uint(bits.TrailingZeros(uint(c.FrameSize))),
		frames:    c.Frames,
		headroom:  c.Headroom,
		free:      make([]uint64, c.Frames),
		isFree:    make([]uint64, (c.Frames+63)/64),
		owner:     make([]uint8, c.Frames),
	}
	// Hand out low addresses first.
	for i := range u.free {
		u.free[i] = uint64(c.Frames-1-i) * u.frameSize
		u.isFree[i/64] |= 1 << (i % 64)
	}
	return u, nil
}

// config returns the geometry, for a private UMEM made like this one.
func (u *UMEM) config() UMEMConfig {
	return UMEMConfig{Frames: u.frames, FrameSize: int(u.frameSize), Headroom: u.headroom}
}

// Frames returns the number of frames.
func (u *UMEM) Frames() int { return u.frames }

// FrameSize returns the size of one frame.
func (u *UMEM) FrameSize() int { return int(u.frameSize) }

// MaxFrameLen is the longest frame a socket on this UMEM can receive.
func (u *UMEM) MaxFrameLen() int {
	return int(u.frameSize) - xdpPacketHeadroom - u.headroom
}

// FreeFrames returns how many frames are on the free list.
func (u *UMEM) FreeFrames() int { return len(u.free) }

// BadFrees counts addresses given to Free that were out of range or
// already free. Non-zero means a frame was owned twice: a bug in the
// caller.
func (u *UMEM) BadFrees() uint64 { return u.badFrees.Load() }

// Alloc takes up to len(addrs) frames off the free list, writes their
// addresses to addrs and returns how many it took.
func (u *UMEM) Alloc(addrs []uint64) int {
	n := min(len(addrs), len(u.free))
	top := len(u.free)
	for i := 0; i < n; i++ {
		a := u.free[top-1-i]
		idx := a >> u.shift
		u.isFree[idx/64] &^= 1 << (idx % 64)
		addrs[i] = a
	}
	u.free = u.free[:top-n]
	return n
}

// Free puts frames back on the free list. An address anywhere inside a
// frame frees that frame. Addresses out of range or already free are
// ignored and counted (BadFrees).
func (u *UMEM) Free(addrs []uint64) {
	for _, a := range addrs {
		u.freeOne(a)
	}
}

// FreeDescs frees the frames of descriptors (received frames dropped, or
// transmit descriptors the TX ring had no room for).
func (u *UMEM) FreeDescs(descs []Desc) {
	for _, d := range descs {
		u.freeOne(d.Addr)
	}
}

func (u *UMEM) freeOne(a uint64) {
	a &= u.frameMask
	idx := a >> u.shift
	if idx >= uint64(u.frames) {
		u.badFrees.Add(1)
		return
	}
	w, b := idx/64, uint64(1)<<(idx%64)
	if u.isFree[w]&b != 0 {
		u.badFrees.Add(1)
		return
	}
	u.isFree[w] |= b
	u.free = append(u.free, a) // within capacity: never more than frames
}

// Frame returns the bytes of a descriptor's frame, a slice into the
// UMEM (no copy), or nil if the descriptor lies outside the UMEM or
// crosses a frame boundary.
func (u *UMEM) Frame(d Desc) []byte {
	end := d.Addr + uint64(d.Len)
	if end > uint64(len(u.area)) || end < d.Addr || (d.Len > 0 && d.Addr&u.frameMask != (end-1)&u.frameMask) {
		return nil
	}
	return u.area[d.Addr:end:end]
}

// Buffer returns the room from addr to the end of its frame, to build a
// frame for transmission in place: write it, then transmit
// Desc{Addr: addr, Len: n}. Nil if addr is outside the UMEM.
func (u *UMEM) Buffer(addr uint64) []byte {
	if addr >= uint64(len(u.area)) {
		return nil
	}
	end := (addr & u.frameMask) + u.frameSize
	return u.area[addr:end:end]
}

// Close closes every socket still open on the UMEM, then unmaps it.
// Slices from Frame and Buffer must not be used after. Idempotent.
func (u *UMEM) Close() error {
	if u.closed {
		return nil
	}
	var first error
	for len(u.sockets) > 0 {
		if err := u.sockets[len(u.sockets)-1].Close(); err != nil && first == nil {
			first = err
		}
	}
	u.closed = true
	if err := unix.Munmap(u.area); err != nil && first == nil {
		first = fmt.Errorf("xsk: munmap umem: %w", err)
	}
	u.area = nil
	u.free = nil
	return first
}

// pendingReclaim is a closed zero-copy socket whose frames are not yet
// safe to reuse. On close, the kernel unbinds a socket at once but
// detaches its buffer pool from the driver's queue later, from a work
// queue; until then a zero-copy driver may still DMA into the frames
// that were on the fill ring. A successful bind to the same interface
// and queue proves the pool is gone (the kernel refuses it with EBUSY
// before), so the frames are taken back then, or when the UMEM closes.
// Copy mode never writes a frame after the unbind, so its frames are
// taken back at Close.
type pendingReclaim struct {
	id             uint8
	ifindex, queue int
}

// socketID returns an owner id that neither a live socket nor a pending
// reclaim on the UMEM uses.
func (u *UMEM) socketID() (uint8, error) {
	for range 255 {
		u.nextID++
		if u.nextID == 0 {
			u.nextID = 1
		}
		used := false
		for _, s := range u.sockets {
			used = used || s.id == u.nextID
		}
		for _, p := range u.pending {
			used = used || p.id == u.nextID
		}
		if !used {
			return u.nextID, nil
		}
	}
	return 0, fmt.Errorf("xsk: umem already has 255 sockets")
}

// setOwner records that socket id's kernel side holds the frame of addr
// (0: nobody's); an address outside the UMEM is ignored.
func (u *UMEM) setOwner(addr uint64, id uint8) {
	if i := addr >> u.shift; i < uint64(len(u.owner)) {
		u.owner[i] = id
	}
}

// reclaim frees every frame the kernel side of socket id held. Called
// once the socket is released, when the kernel no longer touches them.
func (u *UMEM) reclaim(id uint8) int {
	n := 0
	for i, o := range u.owner {
		if o == id {
			u.owner[i] = 0
			u.freeOne(uint64(i) << u.shift)
			n++
		}
	}
	return n
}

// reclaimPending takes back the frames of closed zero-copy sockets that
// were bound to ifindex and queue: called after a bind there succeeded.
func (u *UMEM) reclaimPending(ifindex, queue int) {
	kept := u.pending[:0]
	for _, p := range u.pending {
		if p.ifindex == ifindex && p.queue == queue {
			u.reclaim(p.id)
		} else {
			kept = append(kept, p)
		}
	}
	u.pending = kept
}

func (u *UMEM) removeSocket(s *Socket) {
	for i, o := range u.sockets {
		if o == s {
			u.sockets = append(u.sockets[:i], u.sockets[i+1:]...)
			return
		}
	}
}
