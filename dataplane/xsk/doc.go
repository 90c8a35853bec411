// Package xsk is pdrelay's AF_XDP layer: the XDP program that splits
// traffic between the kernel and the dataplane, and the AF_XDP sockets
// through which the dataplane receives and transmits frames. It is the
// only package in pdrelay with unsafe, mmap and raw system calls; the
// forwarding logic above it works on the byte slices it hands out.
//
// # Pieces
//
//   - Program: the XDP program of one interface, with its XSKMAP (receive
//     queue → socket). Frames the relay's control plane or the kernel
//     must see (non-IPv6, ICMPv6 RS/RA/NS/NA/Redirect, DHCPv6 on UDP 546
//     and 547, hop-by-hop options, link-local and multicast destinations,
//     hop limit ≤ 1, the relay's own addresses, truncated frames) pass to
//     the kernel; all other IPv6 is redirected to the socket registered
//     for the receiving queue, or passed when there is none. A program
//     given a Routes map (the uplink's, for no_route: pass) also passes
//     destinations that none of its prefixes holds. See
//     programInsns for the exact rules. The program counts every frame
//     once by verdict in a per-CPU array (Program.Stats, ProgramStats):
//     redirected, passed by a rule, passed because its queue had no
//     socket (NoSocket: the plane never saw it), or aborted. A frame
//     redirected and then refused by the socket (RX ring full, fill ring
//     empty) is counted in that socket's Stats. Attach uses a BPF link:
//     Detach is a close, synchronous in native and generic mode, and a
//     crashed daemon leaves no program behind.
//   - LocalAddrs: the BPF hash map of the relay's own addresses, shared
//     by the programs of all ports.
//   - Routes: an optional BPF hash map of routed (delegated) IPv6
//     prefixes, keyed by length and masked address, with the lengths in
//     use beside it (ProgramConfig.Routes). The decision has to be made in
//     XDP: a frame an AF_XDP socket has taken cannot go back to the
//     kernel. With it the program looks the destination up (masked to
//     each length in use) after all its other pass rules: a
//     miss passes, a hit is redirected. Without it (downlink ports)
//     there is no lookup. In front of the hash, windows (routewin_linux.go)
//     hold a bit per prefix for dense ranges of 2^20 prefixes of one
//     length (a pool): a hash lookup misses the cache once the flows'
//     prefixes outgrow it (about 0.5 us a frame with 100k /56s and 10k
//     flows in the bench/fwd harness, a third of the downstream rate); a
//     window's bit is 128 KiB of bitmap for a million prefixes.
//   - UMEM: the frame memory shared with the kernel, with a free list.
//   - Socket: an AF_XDP socket on one (interface, queue), with its RX, TX,
//     fill and completion rings, and a batch API that allocates nothing:
//     Receive, Transmit, Fill, FillFromUMEM, Complete, Frame, Poll.
//   - Poller: blocks on several sockets when a worker is idle.
//   - Driver and PartialChecksums: which kernel driver a port has
//     (ethtool GDRVINFO), and whether its frames can carry partial
//     checksums. Queues: how many queues a socket can bind to (ethtool
//     GCHANNELS).
//
// # Frames and their owners
//
// A frame is always owned by exactly one side. The caller takes frames
// from the UMEM (Alloc, or FillFromUMEM directly) and gives them to the
// kernel on a fill ring; the kernel hands them back filled through
// Receive; the caller then transmits them (Transmit; back through
// Complete), gives them back to a fill ring, or frees them (Free,
// FreeDescs). A received descriptor's address points past the headroom
// the kernel keeps (256 bytes) inside its frame; every method accepts
// such addresses. The largest frame a socket receives is
// UMEM.MaxFrameLen (FrameSize - 256 - Headroom: 1792 bytes with the
// default 2048-byte frames, enough for a 1500-byte MTU; use 4096-byte
// frames for up to 3840).
//
// # Sharing a UMEM
//
// The first socket opened on a UMEM registers it with the kernel.
// Later sockets on other interfaces or queues share it (XDP_SHARED_UMEM,
// Linux 5.10+), each with its own fill and completion rings. A
// descriptor received on one of them can then be transmitted on another
// as is: forwarding between ports without a copy (Socket.SameUMEM). Rules
// the kernel imposes:
//
//   - sharing sockets inherit copy or zero-copy mode and need_wakeup from
//     the UMEM's first socket; when that mode is impossible on the new
//     interface (zero-copy on one NIC, a driver without it on another) the
//     bind fails, and NewSocket gives the socket a private UMEM of the same
//     geometry instead (Info.ShareErr; SameUMEM is then false and frames
//     must be copied);
//   - two sockets of one UMEM on the same interface and queue would share
//     one fill/completion ring pair; this package refuses that
//     (ErrSameQueue);
//   - a closed socket's frames come back to the free list at once in copy
//     mode; in zero-copy mode when the queue is bound again or the UMEM
//     closes (the kernel detaches the driver lazily).
//
// # Concurrency
//
// A UMEM and every socket on it belong to one goroutine, the worker that
// polls them: the free list, the rings' cached indices and the ownership
// table are not locked. Parallel workers each own a UMEM and, on a
// multi-queue NIC, the sockets of "their" queue on every port. Exceptions:
// Socket.Stats and Socket.Info may be called from any goroutine while
// the socket is open; LocalAddrs and Routes are safe for concurrent use
// (the program sees each Add or Delete at once); a Program's
// Register and Unregister may be called while traffic flows, but a
// Program's methods must not race each other.
//
// # Kernel and machine notes
//
//   - Needs Linux 5.10+ and root (CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW;
//     the UMEM is pinned, which needs CAP_IPC_LOCK or RLIMIT_MEMLOCK).
//   - Copy mode works on every device; zero-copy needs driver support
//     (not veth). BindAuto tries zero-copy first and reports why it fell
//     back (Info.ZeroCopyErr).
//   - veth: native XDP works on the receiving veth with no program on its
//     peer (the peer needs one only for XDP_REDIRECT into the veth, which
//     AF_XDP transmit does not use). It refuses native mode when the
//     peer's MTU is above about 3500 (ERANGE) or the veth has fewer rx
//     queues than its peer has tx queues (ENOSPC); ModeAuto then uses
//     generic. A veth has one queue unless created with numrxqueues.
//   - Every receive queue that can carry forwarded traffic needs a socket:
//     frames on a queue with none go to the kernel.
//   - Frames a local stack sends over a veth carry unfinished UDP and
//     TCP checksums (CHECKSUM_PARTIAL), and XDP and AF_XDP see them as
//     they are, without the mark. Driver reads a port's driver and
//     PartialChecksums says whether its frames can be partial (veth, tun
//     and other virtual devices); the dataplane then completes them
//     (dataplane.PortConfig.CompleteChecksums). Real NICs receive
//     finished checksums.
//   - Rebinding a queue right after closing its socket can meet EBUSY for
//     some milliseconds (the kernel releases the queue from a work
//     queue); NewSocket retries for up to two seconds.
//   - In copy mode the kernel copies and sends TX frames inside the sendto
//     that Transmit issues, so Transmit costs a system call per batch. A
//     frame the device refuses (a veth whose peer is down or whose
//     backlog is full) still comes back through Complete; the sendto
//     fails with EBUSY, which Stats.TxDropped counts. In copy mode a frame
//     lost to an empty fill ring is counted in both RxFillRingEmpty and
//     RxDropped.
package xsk
