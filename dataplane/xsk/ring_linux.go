package xsk

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ringHdr is the user side of one single-producer single-consumer ring
// shared with the kernel through mmap. The kernel's ABI
// (include/uapi/linux/if_xdp.h, net/xdp/xsk_queue.h):
//
//   - producer and consumer are free-running u32 indices in the mapping,
//     each on its own cache line; an entry's slot is index & (size-1).
//   - the producer writes entries, then publishes them with a
//     store-release of producer; the consumer reads producer with a
//     load-acquire before reading entries, and hands slots back with a
//     store-release of consumer. The kernel uses smp_load_acquire /
//     smp_store_release; sync/atomic's loads and stores are sequentially
//     consistent, which is at least as strong.
//   - flags holds XDP_RING_NEED_WAKEUP when bound with
//     XDP_USE_NEED_WAKEUP.
//
// cachedProd and cachedCons are this side's view, in Go memory, so a batch
// touches the shared cache lines once: for a ring we produce, cachedProd
// is ours and cachedCons the last consumer we read; for a ring we consume,
// the other way round.
type ringHdr struct {
	producer   *uint32
	consumer   *uint32
	flags      *uint32
	mask       uint32
	size       uint32
	cachedProd uint32
	cachedCons uint32
	mem        []byte // the mapping, for munmap
}

func (r *ringHdr) init(mem []byte, off unix.XDPRingOffset, size uint32) {
	base := unsafe.Pointer(&mem[0])
	r.producer = (*uint32)(unsafe.Add(base, off.Producer))
	r.consumer = (*uint32)(unsafe.Add(base, off.Consumer))
	r.flags = (*uint32)(unsafe.Add(base, off.Flags))
	r.size = size
	r.mask = size - 1
	r.mem = mem
	r.cachedProd = atomic.LoadUint32(r.producer)
	r.cachedCons = atomic.LoadUint32(r.consumer)
}

// freeSlots returns how many entries a producer can write, reading the
// kernel's consumer index only when the cached view has fewer than want.
func (r *ringHdr) freeSlots(want uint32) uint32 {
	free := r.size - (r.cachedProd - r.cachedCons)
	if free >= want {
		return want
	}
	r.cachedCons = atomic.LoadUint32(r.consumer) // acquire
	free = r.size - (r.cachedProd - r.cachedCons)
	return min(free, want)
}

// publish makes the entries written since the last publish visible.
func (r *ringHdr) publish() {
	atomic.StoreUint32(r.producer, r.cachedProd) // release
}

// available returns how many entries a consumer can read, reading the
// kernel's producer index only when the cached view has fewer than want.
func (r *ringHdr) available(want uint32) uint32 {
	n := r.cachedProd - r.cachedCons
	if n >= want {
		return want
	}
	r.cachedProd = atomic.LoadUint32(r.producer) // acquire
	n = r.cachedProd - r.cachedCons
	return min(n, want)
}

// release hands the slots read since the last release back.
func (r *ringHdr) release() {
	atomic.StoreUint32(r.consumer, r.cachedCons) // release
}

// needWakeup reports whether the kernel asked for a system call.
func (r *ringHdr) needWakeup() bool {
	return atomic.LoadUint32(r.flags)&unix.XDP_RING_NEED_WAKEUP != 0
}

// outstanding is how many entries we produced that the kernel has not
// consumed yet (for rings we produce).
func (r *ringHdr) outstanding() uint32 {
	return r.cachedProd - atomic.LoadUint32(r.consumer)
}

// descRing is an RX or TX ring: entries are struct xdp_desc.
type descRing struct {
	ringHdr
	descs []Desc
}

// addrRing is a fill or completion ring: entries are u64 UMEM addresses.
type addrRing struct {
	ringHdr
	addrs []uint64
}

func (r *descRing) init(mem []byte, off unix.XDPRingOffset, size uint32) {
	r.ringHdr.init(mem, off, size)
	r.descs = unsafe.Slice((*Desc)(unsafe.Add(unsafe.Pointer(&mem[0]), off.Desc)), size)
}

func (r *addrRing) init(mem []byte, off unix.XDPRingOffset, size uint32) {
	r.ringHdr.init(mem, off, size)
	r.addrs = unsafe.Slice((*uint64)(unsafe.Add(unsafe.Pointer(&mem[0]), off.Desc)), size)
}

// ringBytes is the length to mmap for a ring of size entries of entry
// bytes each whose entries start at off.Desc.
func ringBytes(off unix.XDPRingOffset, size uint32, entry uintptr) int {
	return int(off.Desc + uint64(size)*uint64(entry))
}
