//go:build linux

package plane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/pdrelay/pdrelay/dataplane/xsk"
	"github.com/pdrelay/pdrelay/fib"
)

// Plane is the running forwarding plane.
type Plane struct {
	cfg     Config
	log     *slog.Logger
	progs   []*xsk.Program
	locals  *xsk.LocalAddrs
	workers []*worker
	mode    xsk.Mode
	// closeMu keeps SocketStats (a metrics scrape) off sockets Close is
	// closing: a closed socket's descriptor number may be reused.
	closeMu sync.RWMutex
	// The counters as they were at Close (under closeMu), for a reader
	// that comes after Run returned.
	lastSockets  []SocketStats
	lastPrograms []ProgramStats
}

const (
	// ringSize is each socket's ring size. Twice the xsk default: over
	// veth it took the plane from 0.64-0.67x to 0.79-0.80x of Linux
	// forwarding (BenchmarkVethForwarding), the RX ring no longer filling
	// while the worker shares a core with the traffic's ends.
	ringSize = 4096
)

// Start attaches the XDP program to every port and opens the sockets. An
// attach failure (privilege, driver) is returned with its cause, and
// nothing is left attached.
func Start(cfg Config, log *slog.Logger) (_ *Plane, err error) {
	if cfg.Queues <= 0 {
		cfg.Queues = 1
	}
	if cfg.FrameSize == 0 {
		cfg.FrameSize = 2048
	}
	if cfg.Batch == 0 {
		cfg.Batch = BatchSize
	}
	if cfg.Batch < 1 || cfg.Batch > MaxBatch {
		return nil, fmt.Errorf("forwarding plane: batch %d out of range 1..%d", cfg.Batch, MaxBatch)
	}
	p := &Plane{cfg: cfg, log: log}
	defer func() {
		// p, not the result: "return nil, err" has cleared that by now.
		if err != nil {
			p.Close()
		}
	}()
	if p.locals, err = xsk.NewLocalAddrs(1024); err != nil {
		return nil, fmt.Errorf("local address map: %w", err)
	}
	for _, a := range cfg.Locals {
		if err := p.locals.Add(a); err != nil {
			return nil, fmt.Errorf("local address %s: %w", a, err)
		}
	}
	for _, port := range cfg.Ports {
		prog, err := xsk.NewProgram(xsk.ProgramConfig{Queues: cfg.Queues, Locals: p.locals, Routes: port.Routes})
		if err != nil {
			return nil, fmt.Errorf("xdp program for %s: %w", port.Name, err)
		}
		p.progs = append(p.progs, prog)
		mode, err := prog.Attach(port.Ifindex, cfg.Mode)
		if err != nil {
			return nil, fmt.Errorf("attach xdp to %s: %w", port.Name, err)
		}
		p.mode = mode
	}
	for q := 0; q < cfg.Queues; q++ {
		w, err := p.newWorker(q)
		if err != nil {
			return nil, err
		}
		p.workers = append(p.workers, w)
	}
	return p, nil
}

// Mode is the attach mode the kernel accepted (native or generic).
func (p *Plane) Mode() xsk.Mode { return p.mode }

// Info returns the sockets' bind facts (copy or zero-copy, shared UMEM).
func (p *Plane) Info() []xsk.Info {
	var out []xsk.Info
	for _, w := range p.workers {
		for _, s := range w.socks {
			out = append(out, s.Info())
		}
	}
	return out
}

// Run runs the workers, each with its own Decider from newDecider, until
// ctx ends, then closes the plane.
func (p *Plane) Run(ctx context.Context, fibs *fib.FIB, newDecider func() Decider) error {
	ctx, cancel := context.WithCancel(ctx) // one failing worker stops them all
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(p.workers))
	for _, w := range p.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One OS thread per worker, for its whole life: the
			// scheduler does not move a busy worker's rings between
			// threads, and a profile shows one thread per queue.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			if err := w.run(ctx, fibs, newDecider()); err != nil {
				errc <- err
				cancel()
			}
		}()
	}
	wg.Wait()
	close(errc)
	p.Close()
	return <-errc
}

// SocketStats returns the counters of every socket, by port name and
// queue: the package's and the kernel's (XDP_STATISTICS: RX ring full,
// fill ring empty, dropped, invalid descriptors), which count the frames
// lost before the plane saw them. Once the plane is closed, the counters
// as they were at Close. Safe to call from any goroutine.
func (p *Plane) SocketStats() []SocketStats {
	p.closeMu.RLock()
	defer p.closeMu.RUnlock()
	if p.workers == nil {
		return p.lastSockets
	}
	return p.socketStats()
}

// ProgramStats returns the verdict counters of every port's XDP program,
// in port order: frames redirected to a socket, passed to the kernel by
// a rule, passed for want of a socket on their queue (NoSocket), and
// lost in the redirect (Aborted). Once the plane is closed, the counters
// as they were at Close. Safe to call from any goroutine.
func (p *Plane) ProgramStats() []ProgramStats {
	p.closeMu.RLock()
	defer p.closeMu.RUnlock()
	if p.progs == nil {
		return p.lastPrograms
	}
	return p.programStats()
}

func (p *Plane) programStats() []ProgramStats {
	var out []ProgramStats
	for i, prog := range p.progs {
		st, err := prog.Stats()
		if err != nil {
			continue
		}
		out = append(out, ProgramStats{Port: p.cfg.Ports[i].Name, ProgramStats: st})
	}
	return out
}

func (p *Plane) socketStats() []SocketStats {
	var out []SocketStats
	for _, w := range p.workers {
		for i, s := range w.socks {
			st, err := s.Stats()
			if err != nil {
				continue // the package's half alone would read as no loss
			}
			out = append(out, SocketStats{Port: p.cfg.Ports[i].Name, Queue: w.queue, ZeroCopy: s.Info().ZeroCopy, Stats: st})
		}
	}
	return out
}

// Close detaches the programs and closes the sockets. Idempotent.
func (p *Plane) Close() error {
	p.closeMu.Lock()
	defer p.closeMu.Unlock()
	if p.workers != nil {
		p.lastSockets = p.socketStats()
	}
	if p.progs != nil {
		p.lastPrograms = p.programStats()
	}
	var errs []error
	for _, w := range p.workers {
		errs = append(errs, w.umem.Close())
	}
	p.workers = nil
	for _, prog := range p.progs {
		errs = append(errs, prog.Close())
	}
	p.progs = nil
	if p.locals != nil {
		p.locals.Close()
		p.locals = nil
	}
	return errors.Join(errs...)
}

// worker moves frames between the ports' sockets of one queue index.
type worker struct {
	queue  int
	umem   *xsk.UMEM
	socks  []*xsk.Socket // by port index
	ids    []fib.PortID
	byID   map[fib.PortID]int
	poller *xsk.Poller
	start  time.Time
	batch  int // Config.Batch

	rx []xsk.Desc
	// frames and dec hold one batch for the Decider.
	frames [][]byte
	dec    []Decision
	tx     [][]xsk.Desc // per egress port
	addrs  []uint64
}

func (p *Plane) newWorker(q int) (*worker, error) {
	frames := 2 * ringSize * len(p.cfg.Ports) // full fill rings, and as many in flight
	u, err := xsk.NewUMEM(xsk.UMEMConfig{Frames: frames, FrameSize: p.cfg.FrameSize})
	if err != nil {
		return nil, fmt.Errorf("umem for queue %d: %w", q, err)
	}
	batch := p.cfg.Batch
	w := &worker{queue: q, umem: u, byID: map[fib.PortID]int{}, batch: batch,
		rx: make([]xsk.Desc, batch), frames: make([][]byte, batch), dec: make([]Decision, batch), addrs: make([]uint64, 4*batch)}
	for i, port := range p.cfg.Ports {
		// The worker moves descriptors between its sockets, so they must
		// share its UMEM: a socket the kernel would give a private one is
		// refused rather than read and freed in the wrong memory.
		s, err := xsk.NewSocket(u, xsk.SocketConfig{Ifindex: port.Ifindex, Queue: q, NoShareFallback: true,
			RxSize: ringSize, FillSize: ringSize, TxSize: ringSize, CompletionSize: ringSize})
		if err != nil {
			u.Close()
			return nil, fmt.Errorf("af_xdp socket on %s queue %d: %w", port.Name, q, err)
		}
		if err := p.progs[i].Register(q, s); err != nil {
			u.Close()
			return nil, fmt.Errorf("register socket of %s queue %d: %w", port.Name, q, err)
		}
		s.FillFromUMEM(ringSize)
		w.socks = append(w.socks, s)
		w.ids = append(w.ids, port.ID)
		w.byID[port.ID] = i
		w.tx = append(w.tx, make([]xsk.Desc, 0, batch*len(p.cfg.Ports)))
		info := s.Info()
		p.log.Info("af_xdp socket", "port", port.Name, "queue", q, "zero_copy", info.ZeroCopy,
			"shared_umem", info.SharedUMEM, "need_wakeup", info.NeedWakeup)
	}
	w.poller = xsk.NewPoller(w.socks...)
	return w, nil
}

func (w *worker) run(ctx context.Context, fibs *fib.FIB, d Decider) error {
	defer d.Flush()
	w.start = time.Now() // now is monotonic nanoseconds since then
	idle := 0
	for ctx.Err() == nil {
		if idle > 0 {
			d.Flush()
			if _, err := w.poller.Wait(50 * time.Millisecond); err != nil && !errors.Is(err, xsk.ErrClosed) {
				return fmt.Errorf("queue %d: %w", w.queue, err)
			}
		}
		if w.step(fibs.Load(), d) == 0 {
			idle++
		} else {
			idle = 0
			d.Flush()
		}
	}
	return nil
}

// step runs one batch on every port and returns how many frames it moved.
func (w *worker) step(snap *fib.Snapshot, d Decider) int {
	now := int64(time.Since(w.start))
	moved := 0
	for i, s := range w.socks {
		n := s.Receive(w.rx)
		if n == 0 {
			continue
		}
		frames, dec := w.frames[:n], w.dec[:n]
		for k, desc := range w.rx[:n] {
			frames[k] = w.umem.Buffer(desc.Addr)[:desc.Len]
		}
		d.Decide(snap, w.ids[i], frames, now, dec)
		for k, desc := range w.rx[:n] {
			j, ok := w.byID[dec[k].Port]
			if ln := dec[k].Len; !dec[k].Send || !ok || ln <= 0 || ln > cap(frames[k]) {
				w.addrs = append(w.addrs[:0], desc.Addr)
				w.umem.Free(w.addrs)
				continue
			}
			w.tx[j] = append(w.tx[j], xsk.Desc{Addr: desc.Addr, Len: uint32(dec[k].Len)})
		}
		moved += n
	}
	for j, s := range w.socks {
		if len(w.tx[j]) > 0 {
			k := s.Transmit(w.tx[j])
			if k < len(w.tx[j]) {
				w.umem.FreeDescs(w.tx[j][k:])
				d.TxFull(w.ids[j], len(w.tx[j])-k)
			}
			w.tx[j] = w.tx[j][:0]
		} else if s.TxQueued() > 0 {
			s.Transmit(nil)
		}
		for {
			c := s.Complete(w.addrs[:cap(w.addrs)])
			if c == 0 {
				break
			}
			w.umem.Free(w.addrs[:c])
		}
		s.FillFromUMEM(w.batch * 4)
	}
	return moved
}
