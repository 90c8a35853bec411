package replay

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"time"

	"github.com/pdrelay/pdrelay/dataplane/xsk"
)

// The live replay's UMEM: frames of one page (4096 bytes on x86 and
// arm64), the largest an AF_XDP frame can be without multi-buffer, so
// that every frame an Ethernet MTU up to about 4000 allows fits; twice as
// many frames as the TX ring has slots, so that a full ring and a full
// completion ring never run out of frames.
const (
	liveRing   = 2048
	liveFrames = 2 * liveRing
)

// liveFrameSize is the UMEM frame size: the page size, at most 4096.
func liveFrameSize() int { return min(os.Getpagesize(), 4096) }

// Live sends the capture read from in out of opts.Interface through an
// AF_XDP socket, paced by opts.Rate, opts.Loops times (0: until ctx
// ends), and returns what it did. The frames are sent as captured; the
// forwarding function does not run. The capture is read into memory
// first. Live locks its goroutine to its OS thread while it sends (the
// pacing clock tunes the thread's timer slack).
func Live(ctx context.Context, opts LiveOptions, in io.Reader) (LiveSummary, error) {
	ifi, err := net.InterfaceByName(opts.Interface)
	if err != nil {
		return LiveSummary{}, fmt.Errorf("--interface %s: %w", opts.Interface, err)
	}
	// A frame may carry one VLAN tag beyond the MTU and the Ethernet
	// header (the veth driver's limit too); the kernel would drop longer
	// ones after taking them.
	tr, err := loadTrace(in, liveFrameSize(), ifi.MTU+14+4)
	if err != nil {
		return LiveSummary{}, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p, err := openXSKPort(ifi.Index, opts.Queue)
	if err != nil {
		return tr.sum, fmt.Errorf("open AF_XDP socket on %s queue %d: %w", opts.Interface, opts.Queue, err)
	}
	defer p.close()
	clk, err := newPreciseClock(opts.Realtime && opts.Rate.Mode != RateMax, opts.Burst <= 1)
	if err != nil {
		return tr.sum, err
	}
	defer clk.close()
	r := &replayer{tr: tr, opts: opts, port: p, clk: clk,
		batch: make([][]byte, 0, maxBatch), due: make([]int64, 0, maxBatch)}
	sum, err := r.run(ctx)
	sum.ZeroCopy = p.sock.Info().ZeroCopy
	return sum, err
}

// xskPort is a TX-only AF_XDP socket with its own UMEM.
type xskPort struct {
	umem  *xsk.UMEM
	sock  *xsk.Socket
	addrs []uint64
	descs []xsk.Desc
	done  []uint64
	held  int // frames the kernel has (on the TX ring or not yet completed)
}

func openXSKPort(ifindex, queue int) (*xskPort, error) {
	u, err := xsk.NewUMEM(xsk.UMEMConfig{Frames: liveFrames, FrameSize: liveFrameSize()})
	if err != nil {
		return nil, err
	}
	s, err := xsk.NewSocket(u, xsk.SocketConfig{
		Ifindex: ifindex, Queue: queue, NoRx: true,
		TxSize: liveRing, CompletionSize: liveRing, FillSize: 64,
	})
	if err != nil {
		u.Close()
		return nil, err
	}
	return &xskPort{umem: u, sock: s, addrs: make([]uint64, maxBatch),
		descs: make([]xsk.Desc, maxBatch), done: make([]uint64, liveRing)}, nil
}

// reap takes completed frames back onto the UMEM's free list.
func (p *xskPort) reap() int {
	n := p.sock.Complete(p.done)
	if n > 0 {
		p.umem.Free(p.done[:n])
		p.held -= n
	}
	return n
}

func (p *xskPort) send(frames [][]byte) (int, error) {
	p.reap()
	n := p.umem.Alloc(p.addrs[:min(len(frames), len(p.addrs))])
	for i := 0; i < n; i++ {
		p.descs[i] = xsk.Desc{Addr: p.addrs[i], Len: uint32(copy(p.umem.Buffer(p.addrs[i]), frames[i]))}
	}
	k := p.sock.Transmit(p.descs[:n])
	p.held += k
	if k < n {
		p.umem.FreeDescs(p.descs[k:n])
	}
	if k == 0 {
		// The TX ring or the UMEM is full: wait for room (poll also
		// wakes the kernel's transmit in copy mode).
		if _, err := p.sock.Poll(time.Millisecond); err != nil {
			return 0, err
		}
		if err := p.sock.Err(); err != nil && p.reap() == 0 {
			return 0, err
		}
	}
	return k, nil
}

func (p *xskPort) drain(timeout time.Duration) uint64 {
	end := time.Now().Add(timeout)
	for p.held > 0 && time.Now().Before(end) {
		p.sock.Transmit(nil) // kick what is still queued
		if p.reap() == 0 {
			p.sock.Poll(time.Millisecond)
		}
	}
	return uint64(p.held)
}

func (p *xskPort) txInvalid() uint64 {
	st, err := p.sock.Stats()
	if err != nil {
		return 0
	}
	return st.TxInvalidDescs
}

func (p *xskPort) close() {
	p.sock.Close()
	p.umem.Close()
}
