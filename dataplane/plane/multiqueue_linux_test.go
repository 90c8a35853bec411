package plane

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pdrelay/pdrelay/dataplane"
	"github.com/pdrelay/pdrelay/dataplane/xsk"
	"github.com/pdrelay/pdrelay/fib"
	"github.com/pdrelay/pdrelay/internal/nstest"
)

// mqQueues is the number of queues per port (and of workers, and of
// senders in A: sender i sends on A's tx queue i).
const mqQueues = 2

// mqFlows is how many UDP sockets (source ports) each sender spreads its
// datagrams over.
const mqFlows = 4

// Test datagrams go to B's port 9000; their payload starts with a phase
// tag, the sender's index and a sequence number.
const (
	mqPort      = 9000
	mqPayload   = 62 // 14 Ethernet + 40 IPv6 + 8 UDP
	mqMinLength = mqPayload + 4
)

// newMQTopo is newTopo with mqQueues tx and rx queues on every veth end,
// and XPS in A mapping CPU cpus[i] to vA's tx queue i. On a veth with an
// XDP program on its peer, the sender's tx queue is the queue the peer's
// XDP program sees the frame on (its rx_queue_index), so a datagram sent
// by a thread pinned to cpus[i] reaches R's plane on queue i.
func newMQTopo(t *testing.T, cpus []int) *topo {
	t.Helper()
	q := fmt.Sprint(mqQueues)
	tp := newTopo(t, "numtxqueues", q, "numrxqueues", q)
	// Without XPS a veth picks the tx queue by flow hash: how the flows
	// split over the queues changes from boot to boot (the hash is
	// seeded at random). sysfs shows the namespace of whoever mounted
	// it, hence ip netns exec (which mounts A's).
	for i, cpu := range cpus {
		nstest.Run(t, "ip", "netns", "exec", tp.a, "sh", "-c",
			fmt.Sprintf("echo %s > /sys/class/net/vA/queues/tx-%d/xps_cpus", cpuMask(cpu), i))
	}
	return tp
}

// cpuMask is the sysfs cpumask (comma-separated 32-bit hex words) with
// only cpu set.
func cpuMask(cpu int) string {
	words := make([]string, cpu/32+1)
	for i := range words {
		words[i] = "00000000"
	}
	words[0] = fmt.Sprintf("%08x", uint32(1)<<(cpu%32))
	return strings.Join(words, ",")
}

// mqWorkerCounts is what one worker's decider reports.
type mqWorkerCounts struct {
	decide, forwarded, txFull, flush atomic.Int64
	// Decided test datagrams by phase tag and sender.
	tagged [256][mqQueues]atomic.Int64
	// UMEM accounting sampled in Flush (-1 until the decider knows its
	// worker): free-list length and bad frees.
	free, bad atomic.Int64
}

// mqState is shared by the test and the deciders of all workers.
type mqState struct {
	drop atomic.Bool
	// The workers' UMEMs, set before Run: which one a frame lies in
	// says which worker received it.
	umems [mqQueues]*xsk.UMEM
	base  [mqQueues]uintptr
	size  [mqQueues]uintptr
	w     [mqQueues]mqWorkerCounts
	// Frames in no worker's UMEM, or in another UMEM than the first
	// frame the same decider saw: a decider is per worker, so either
	// means a worker got a frame it does not own.
	stray    atomic.Int64
	deciders atomic.Int64
}

// queueOf returns the index of the worker whose UMEM holds fr, or -1.
func (s *mqState) queueOf(fr []byte) int {
	if len(fr) == 0 {
		return -1
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(fr)))
	for q := range s.umems {
		if p >= s.base[q] && p-s.base[q] < s.size[q] {
			return q
		}
	}
	return -1
}

// mqDecider forwards like testDecider (completing partial checksums), and
// counts per worker. It learns
// its worker from the UMEM of the first frame it decides.
type mqDecider struct {
	s              *mqState
	q              int // -1 until the first frame
	srcMAC, dstMAC net.HardwareAddr
}

func (d *mqDecider) Decide(_ *fib.Snapshot, in fib.PortID, frames [][]byte, _ int64, out []Decision) {
	for i, fr := range frames {
		port, n, send := d.decide(in, fr)
		out[i] = Decision{Port: port, Len: n, Send: send}
	}
}

func (d *mqDecider) decide(in fib.PortID, fr []byte) (fib.PortID, int, bool) {
	q := d.s.queueOf(fr)
	if q < 0 || (d.q >= 0 && q != d.q) {
		d.s.stray.Add(1)
		return 0, 0, false
	}
	d.q = q
	w := &d.s.w[q]
	w.decide.Add(1)
	if len(fr) >= mqMinLength && fr[12] == 0x86 && fr[13] == 0xdd && fr[20] == unix.IPPROTO_UDP &&
		int(fr[56])<<8|int(fr[57]) == mqPort && fr[mqPayload+1] < mqQueues {
		w.tagged[fr[mqPayload]][fr[mqPayload+1]].Add(1)
	}
	if d.s.drop.Load() || in != 1 || len(fr) < 54 || fr[12] != 0x86 || fr[13] != 0xdd || fr[21] <= 1 {
		return 0, 0, false
	}
	copy(fr[0:6], d.dstMAC)
	copy(fr[6:12], d.srcMAC)
	fr[21]--
	dataplane.CompleteChecksum(fr) // A keeps its default offloads
	w.forwarded.Add(1)
	return 2, len(fr), true
}

func (d *mqDecider) TxFull(_ fib.PortID, n int) {
	if d.q >= 0 {
		d.s.w[d.q].txFull.Add(int64(n))
	}
}

func (d *mqDecider) Flush() {
	if d.q < 0 {
		return
	}
	w := &d.s.w[d.q]
	w.flush.Add(1)
	w.free.Store(int64(d.s.umems[d.q].FreeFrames()))
	w.bad.Store(int64(d.s.umems[d.q].BadFrees()))
}

// decided is how many datagrams of sender i tagged tag the workers decided.
func (s *mqState) decided(tag byte, i int) int64 {
	var n int64
	for q := range s.w {
		n += s.w[q].tagged[tag][i].Load()
	}
	return n
}

// mqReceiver counts datagrams arriving at B by phase tag and sender.
type mqReceiver struct {
	got [256][mqQueues]atomic.Int64
}

func (r *mqReceiver) run(c *net.UDPConn) {
	receive(c, func(b []byte) {
		if len(b) >= 2 && b[1] < mqQueues {
			r.got[b[0]][b[1]].Add(1)
		}
	})
}

// mqSend sends n datagrams tagged tag from sender i's sockets in turn,
// from a thread pinned to cpu (so on vA's tx queue i), paced like
// sendPaced on the workers' progress with sender i's datagrams. It runs
// on its own goroutine, whose thread ends with it (never unpinned).
func mqSend(s *mqState, socks []*net.UDPConn, i, cpu int, tag byte, n int) error {
	errc := make(chan error, 1)
	go func() {
		errc <- func() error {
			runtime.LockOSThread() // not unlocked: the pinned thread exits with the goroutine
			var set unix.CPUSet
			set.Set(cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				return fmt.Errorf("pin sender %d to cpu %d: %w", i, cpu, err)
			}
			to := &net.UDPAddr{IP: net.ParseIP(addrVB), Port: mqPort}
			payload := make([]byte, 64)
			payload[0], payload[1] = tag, byte(i)
			start := s.decided(tag, i)
			deadline := time.Now().Add(3 * time.Second)
			for sent := 0; sent < n; {
				k := min(64, n-sent)
				for range k {
					payload[2], payload[3] = byte(sent>>8), byte(sent)
					if _, err := socks[sent%len(socks)].WriteToUDP(payload, to); err != nil {
						return fmt.Errorf("sender %d: send %c #%d: %w", i, tag, sent, err)
					}
					sent++
				}
				target := start + int64(sent) - 64
				if time.Now().Before(deadline) {
					waitFor(200*time.Millisecond, func() bool { return s.decided(tag, i) >= target })
				}
			}
			want := start + int64(n)
			waitFor(max(time.Until(deadline), 100*time.Millisecond), func() bool { return s.decided(tag, i) >= want })
			return nil
		}()
	}()
	return <-errc
}

// TestMultiQueue runs the plane with two queues per port (two workers,
// each with its own UMEM shared by its sockets on rA and rB) between A
// and B, with A's sender i pinned to a CPU that XPS maps to vA's tx
// queue i, over mqFlows sockets (source ports) each:
//
//  1. Start: four sockets, one per port and queue, all on their
//     worker's UMEM; two workers with distinct UMEMs;
//  2. forward: every datagram of both senders reaches B; each worker
//     decided exactly the datagrams of its own sender (its queue), so
//     both forward; no TX ring was full, no frame was decided by a
//     worker whose UMEM it is not in; once idle, each UMEM's free list
//     is back to its size (all frames not on the two full fill rings);
//  3. drop: with the deciders dropping, twice each UMEM's frames go
//     through each worker, B gets none, and once idle both free lists
//     are back to their size with no bad frees;
//  4. forward again on both queues;
//  5. cancel: Run returns nil, both programs are detached, and all four
//     queues are free again (a new plane binds them all).
func TestMultiQueue(t *testing.T) {
	nstest.RequireRoot(t)
	var cpuset unix.CPUSet
	if err := unix.SchedGetaffinity(0, &cpuset); err != nil {
		t.Fatalf("sched_getaffinity: %v", err)
	}
	var cpus []int
	for c := 0; c < len(cpuset)*64 && len(cpus) < mqQueues; c++ {
		if cpuset.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) < mqQueues {
		t.Skipf("needs %d CPUs to steer the senders over %d tx queues (XPS), has %d", mqQueues, mqQueues, len(cpus))
	}
	tp := newMQTopo(t, cpus)

	dst := udpIn(t, tp.b, fmt.Sprintf("[%s]:%d", addrVB, mqPort))
	if rc, err := dst.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
		})
	}
	var rcv mqReceiver
	go rcv.run(dst)
	var socks [mqQueues][]*net.UDPConn
	for i := range socks {
		for range mqFlows {
			socks[i] = append(socks[i], udpIn(t, tp.a, "["+addrVA+"]:0"))
		}
	}

	p, cfg, closed := startPlane(t, tp, mqQueues)

	// 1. Sockets and workers.
	info := p.Info()
	t.Logf("attach mode %v; sockets %+v", p.Mode(), info)
	var bound []string
	for _, in := range info {
		bound = append(bound, fmt.Sprintf("%d/%d", in.Ifindex, in.Queue))
		if !in.SharedUMEM {
			t.Fatalf("socket on ifindex %d queue %d does not share its worker's UMEM: %v", in.Ifindex, in.Queue, in.ShareErr)
		}
	}
	var want []string
	for _, port := range cfg.Ports {
		for q := range mqQueues {
			want = append(want, fmt.Sprintf("%d/%d", port.Ifindex, q))
		}
	}
	slices.Sort(bound)
	slices.Sort(want)
	if !slices.Equal(bound, want) {
		t.Fatalf("sockets bound to ifindex/queue %v, want %v", bound, want)
	}
	if len(p.workers) != mqQueues {
		t.Fatalf("%d workers, want %d", len(p.workers), mqQueues)
	}
	s := &mqState{}
	var wantFree [mqQueues]int64
	for q, w := range p.workers {
		if w.queue != q {
			t.Fatalf("worker %d serves queue %d", q, w.queue)
		}
		for _, sk := range w.socks {
			if sk.Info().Queue != q || sk.UMEM() != w.umem {
				t.Fatalf("worker %d has a socket of queue %d (own UMEM %v)", q, sk.Info().Queue, sk.UMEM() == w.umem)
			}
		}
		s.umems[q] = w.umem
		s.base[q] = uintptr(unsafe.Pointer(unsafe.SliceData(w.umem.Buffer(0))))
		s.size[q] = uintptr(w.umem.Frames() * w.umem.FrameSize())
		// Idle, every frame is on one of the worker's full fill rings
		// (one per port) or on the free list.
		wantFree[q] = int64(w.umem.Frames() - len(cfg.Ports)*ringSize)
		s.w[q].free.Store(-1)
	}
	if s.umems[0] == s.umems[1] {
		t.Fatalf("both workers on one UMEM")
	}

	stop := runPlane(t, tp, p, closed, func() Decider {
		s.deciders.Add(1)
		return &mqDecider{s: s, q: -1, srcMAC: tp.macRB, dstMAC: tp.macVB}
	})
	start := time.Now()

	// send runs both senders at once, n datagrams each.
	send := func(tag byte, n int) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make([]error, mqQueues)
		for i := range mqQueues {
			wg.Go(func() { errs[i] = mqSend(s, socks[i], i, cpus[i], tag, n) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	// split is the per-worker decision counts of tag, for messages.
	split := func(tag byte) string {
		var b strings.Builder
		for q := range s.w {
			fmt.Fprintf(&b, "worker %d:", q)
			for i := range mqQueues {
				fmt.Fprintf(&b, " sender %d %d", i, s.w[q].tagged[tag][i].Load())
			}
			b.WriteString("; ")
		}
		return b.String()
	}
	// idleUMEMs waits until both workers, idle, report their full free
	// list and no bad frees.
	idleUMEMs := func(phase string) {
		t.Helper()
		ok := waitFor(2*time.Second, func() bool {
			for q := range s.w {
				if s.w[q].free.Load() != wantFree[q] || s.w[q].bad.Load() != 0 {
					return false
				}
			}
			return true
		})
		if !ok {
			for q := range s.w {
				if s.w[q].free.Load() == wantFree[q] && s.w[q].bad.Load() == 0 {
					continue
				}
				t.Errorf("%s: idle, worker %d's UMEM free list has %d frames (want %d of %d: the rest on %d full fill rings), bad frees %d",
					phase, q, s.w[q].free.Load(), wantFree[q], s.umems[q].Frames(), len(cfg.Ports), s.w[q].bad.Load())
			}
		}
	}

	// Warm-up: one datagram of each sender through.
	to := &net.UDPAddr{IP: net.ParseIP(addrVB), Port: mqPort}
	for i := range mqQueues {
		if !waitFor(3*time.Second, func() bool {
			_, _ = socks[i][0].WriteToUDP([]byte{'w', byte(i)}, to)
			time.Sleep(20 * time.Millisecond)
			return rcv.got['w'][i].Load() > 0
		}) {
			t.Fatalf("warm-up datagram of sender %d did not reach B through the plane; %s; %s", i, split('w'), socketStats(p))
		}
	}

	// 2. Forward N from each sender.
	const N = 2000
	var fwd0 [mqQueues]int64
	for q := range s.w {
		fwd0[q] = s.w[q].forwarded.Load()
	}
	t0 := time.Now()
	send('f', N)
	waitFor(2*time.Second, func() bool { return rcv.got['f'][0].Load()+rcv.got['f'][1].Load() >= mqQueues*N })
	t.Logf("forward: %d datagrams from each of %d senders (%d flows each) in %v; %s", N, mqQueues, mqFlows,
		time.Since(t0).Round(time.Millisecond), split('f'))
	for i := range mqQueues {
		if got := rcv.got['f'][i].Load(); got != N {
			t.Errorf("forward: B got %d of sender %d's %d datagrams; %s; %s", got, i, N, split('f'), socketStats(p))
		}
	}
	for q := range s.w {
		for i := range mqQueues {
			want := int64(0)
			if i == q {
				want = N
			}
			if n := s.w[q].tagged['f'][i].Load(); n != want {
				t.Errorf("forward: worker %d decided %d datagrams of sender %d (tx queue %d), want %d", q, n, i, i, want)
			}
		}
		if n := s.w[q].forwarded.Load() - fwd0[q]; n < N {
			t.Errorf("forward: worker %d forwarded %d frames, want at least %d", q, n, N)
		}
		if n := s.w[q].txFull.Load(); n != 0 {
			t.Errorf("forward: worker %d: TxFull counted %d frames", q, n)
		}
	}
	idleUMEMs("forward")

	// 3. Drop: each worker must decide more frames than its UMEM has.
	s.drop.Store(true)
	dropN := 2 * s.umems[0].Frames()
	t0 = time.Now()
	send('d', dropN)
	t.Logf("drop: %d datagrams from each sender (2 × %d UMEM frames) in %v; %s", dropN, s.umems[0].Frames(),
		time.Since(t0).Round(time.Millisecond), split('d'))
	for q := range s.w {
		if n := s.w[q].tagged['d'][q].Load(); n < int64(dropN) {
			t.Errorf("drop: worker %d decided %d of sender %d's %d datagrams (frames leaked or lost before R); %s",
				q, n, q, dropN, socketStats(p))
		}
	}
	idleUMEMs("drop")
	time.Sleep(50 * time.Millisecond)
	if n := rcv.got['d'][0].Load() + rcv.got['d'][1].Load(); n != 0 {
		t.Errorf("drop: B got %d datagrams the deciders dropped", n)
	}

	// 4. Forward again on both queues.
	s.drop.Store(false)
	const N2 = 500
	send('g', N2)
	waitFor(2*time.Second, func() bool { return rcv.got['g'][0].Load()+rcv.got['g'][1].Load() >= mqQueues*N2 })
	for i := range mqQueues {
		if got, n := rcv.got['g'][i].Load(), s.w[i].tagged['g'][i].Load(); got != N2 || n != N2 {
			t.Errorf("forward after drop: B got %d of sender %d's %d, worker %d decided %d; %s", got, i, N2, i, n, split('g'))
		}
	}

	// 5. Cancel: Run returns nil, closes the plane and detaches.
	stop()
	if n := s.deciders.Load(); n != mqQueues {
		t.Errorf("Run made %d deciders, want %d", n, mqQueues)
	}
	if n := s.stray.Load(); n != 0 {
		t.Errorf("%d frames were decided by a worker whose UMEM they are not in", n)
	}
	for q := range s.w {
		if s.w[q].bad.Load() != 0 {
			t.Errorf("worker %d: %d bad frees", q, s.w[q].bad.Load())
		}
		if s.w[q].flush.Load() == 0 {
			t.Errorf("worker %d: Flush never called", q)
		}
	}
	// Every queue is free again: a new plane binds all four sockets.
	nstest.MustInNS(t, tp.r, func() error {
		p2, err := Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			return fmt.Errorf("Start again after Run returned: %w", err)
		}
		if n := len(p2.Info()); n != len(want) {
			err = fmt.Errorf("second plane has %d sockets, want %d", n, len(want))
		}
		if cerr := p2.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close second plane: %w", cerr)
		}
		return err
	})
	for _, dev := range []string{"rA", "rB"} {
		if x := nstest.XDPShown(t, tp.r, dev); x != "" {
			t.Errorf("after the second plane closed, %s still has an XDP program: %s", dev, x)
		}
	}
	var total [mqQueues]int64
	for q := range s.w {
		total[q] = s.w[q].decide.Load()
	}
	t.Logf("total %v; Decide by worker %v", time.Since(start).Round(time.Millisecond), total)
}
