//go:build linux

package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// Updater receives what the engine learned, in order, a turn's updates
// in one call (which must not keep the slice); *binding.Manager is one.
type Updater interface{ Apply(...binding.Update) }

// ConnConfig is the I/O configuration around an Engine.
type ConnConfig struct {
	Uplink     string // interface towards the servers
	Servers    []netip.Addr
	ServerPort int // default 547
	ListenPort int // default 547 (tests use another)
	// Rates are the downlinks' limits on relayed client messages, in
	// port order (config max_client_rate, max_client_burst); a missing or
	// zero Rate means no limit.
	Rates []Rate
}

// Queue depths between the readers and the engine: a downlink's messages
// are rate limited before they queue (clientQueueDepth), the servers'
// are not.
const (
	serverQueueDepth = 256
	// clientFrameMax is the largest client frame read (a jumbo frame);
	// longer ones are cut short and dropped as malformed.
	clientFrameMax = 16 << 10
)

// Conn runs an Engine on real sockets:
//
//   - one UDP socket on the uplink (SO_BINDTODEVICE), where Relay-Replies
//     arrive and Relay-Forwards leave: nothing from a downlink reaches it,
//     so a flood there cannot fill its buffer;
//   - per downlink, a packet socket that receives the client's frames
//     (with their MAC, and the kernel's word on their UDP checksum), and a
//     UDP socket bound to the port that sends to clients and owns port
//     547 there: a filter drops everything it would receive (the packet
//     socket has those messages), so it never queues and the kernel never
//     answers port unreachable;
//   - a reader goroutine per socket that parses, checks and rate limits,
//     then queues for the engine's goroutine, which serves the ports in
//     turn (fairQueue).
//
// Reconfigure adds and removes downlinks and changes the rest of the
// configuration while Run runs (reconfigure_linux.go).
type Conn struct {
	eng *Engine
	cfg ConnConfig // Servers change on the engine's goroutine (Reconfigure)
	log *slog.Logger
	up  *net.Interface
	udp *ipv6.PacketConn // the uplink's
	q   *fairQueue

	// mu guards downs, bySlot's growth and closed against Close, which
	// may come from any goroutine; the engine's goroutine is the only
	// one to change them otherwise (commit).
	mu     sync.Mutex
	downs  []*downlink // in the engine's port order
	bySlot []*downlink // by fair queue source; nil: the servers', or a removed port's
	closed bool

	// orig queues the messages the relay originates (Originate) for the
	// engine's goroutine; onReply gets the servers' Replies to them.
	orig    chan Originated
	onReply func(port string, reply []byte)

	// reconf hands a prepared reconfiguration to Run; reconfMu makes
	// reconfigurations one at a time. runCtx and readers belong to Run:
	// commit starts a new port's reader with them.
	reconf   chan *reconfig
	reconfMu sync.Mutex
	running  bool          // under mu: Run has started
	runDone  chan struct{} // closed when Run returns
	runCtx   context.Context
	readers  sync.WaitGroup
}

// downlink is one port's sockets and what its reader needs.
type downlink struct {
	name string
	ifi  *net.Interface
	udp  *ipv6.PacketConn // sends to clients; owns port 547 on the port
	raw  *os.File         // the clients' frames
	slot int              // its source in the fair queue, never reused
	// rate is the port's client rate limit; its reader picks up a new
	// one (Reconfigure) at its next message.
	rate atomic.Pointer[Rate]
	// gone is set when the port is removed, before its sockets close.
	gone atomic.Bool
	// port is the port's index in the engine, owned by the engine's
	// goroutine; cnt its counts, set once before its reader starts.
	port int
	cnt  *portCounters
}

func (d *downlink) close() error {
	return errors.Join(d.raw.Close(), d.udp.Close())
}

// serverSlot is the servers' source in the fair queue; the downlinks'
// follow it.
const serverSlot = 0

// originQueueDepth bounds the originated messages waiting for the engine.
const originQueueDepth = 256

// ErrOriginQueueFull is returned by Originate when the engine's queue of
// originated messages is full.
var ErrOriginQueueFull = errors.New("relay: queue of originated messages full")

// OnOriginatedReply sets the function that receives the servers' Replies
// to originated messages (see Engine.Originate), on the engine's
// goroutine: it must not block, and reply is valid only during the call.
// Set it before Run.
func (c *Conn) OnOriginatedReply(f func(port string, reply []byte)) { c.onReply = f }

// Originate queues o to be wrapped by the engine and sent to the servers
// as if the client had sent it. It never blocks: a full queue returns
// ErrOriginQueueFull. o.Payload must not change afterwards.
func (c *Conn) Originate(o Originated) error {
	select {
	case c.orig <- o:
		return nil
	default:
		return ErrOriginQueueFull
	}
}

type inbound struct {
	slot int // the fair queue source: serverSlot, or a downlink's
	src  netip.Addr
	dst  netip.Addr
	mac  [6]byte
	up   bool      // arrived on the uplink
	at   time.Time // when its reader read it
	data []byte
	buf  *[]byte // pooled buffer holding data, to recycle
}

// serverBufs hold datagrams from the servers (up to 64 KiB); clientBufs
// the payloads of admitted client messages.
var (
	serverBufs = sync.Pool{New: func() any { b := make([]byte, 65536); return &b }}
	clientBufs = sync.Pool{New: func() any { b := make([]byte, 2048); return &b }}
)

// Listen opens the sockets for eng's ports and the uplink.
func Listen(eng *Engine, cfg ConnConfig, log *slog.Logger) (c *Conn, err error) {
	if cfg.ServerPort == 0 {
		cfg.ServerPort = dhcp6.ServerPort
	}
	if cfg.ListenPort == 0 {
		cfg.ListenPort = dhcp6.ServerPort
	}
	c = &Conn{
		eng: eng, cfg: cfg, log: log,
		orig:    make(chan Originated, originQueueDepth),
		reconf:  make(chan *reconfig),
		runDone: make(chan struct{}),
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	up, err := net.InterfaceByName(cfg.Uplink)
	if err != nil {
		return nil, fmt.Errorf("uplink %s: %w", cfg.Uplink, err)
	}
	c.up = up
	if c.udp, err = listenUDP(cfg.Uplink, cfg.ListenPort, false); err != nil {
		return nil, fmt.Errorf("uplink %s: %w", cfg.Uplink, err)
	}
	if err := c.udp.SetControlMessage(ipv6.FlagInterface|ipv6.FlagDst, true); err != nil {
		return nil, fmt.Errorf("udp pktinfo: %w", err)
	}
	// A site-scoped server group (ff05::1:3) is usually routers away; the
	// default multicast hop limit of 1 would keep it on the uplink.
	if err := c.udp.SetMulticastHopLimit(dhcp6.HopCountLimit); err != nil {
		return nil, fmt.Errorf("udp multicast hop limit: %w", err)
	}
	c.q = newFairQueue(1, func(int) int { return serverQueueDepth })
	c.bySlot = []*downlink{serverSlot: nil}
	cnt := eng.Counters.setPorts(portNames(eng.ports))
	for i, p := range eng.Ports() {
		d, err := c.openDownlink(p.Name)
		if err != nil {
			return nil, err
		}
		eng.ports[i].Index = d.ifi.Index
		d.port, d.cnt = i, cnt[i]
		d.rate.Store(rateAt(cfg.Rates, i))
		c.addDownlink(d)
	}
	return c, nil
}

// openDownlink opens a downlink's sockets: the UDP socket that sends to
// its clients, joined to ff02::1:2, and the packet socket that reads
// their frames. Errors name the port.
func (c *Conn) openDownlink(name string) (d *downlink, err error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("downlink %s: %w", name, err)
	}
	d = &downlink{name: name, ifi: ifi}
	if d.udp, err = listenUDP(name, c.cfg.ListenPort, true); err != nil {
		return nil, fmt.Errorf("downlink %s: %w", name, err)
	}
	// Joining ff02::1:2 programs the NIC's multicast filter so the
	// client's frames reach the packet socket.
	group := &net.UDPAddr{IP: net.IP(dhcp6.AllRelayAgentsAndServers.AsSlice())}
	if err := d.udp.JoinGroup(ifi, group); err != nil {
		d.udp.Close()
		return nil, fmt.Errorf("join ff02::1:2 on %s: %w", name, err)
	}
	if d.raw, err = openPacketSocket(ifi.Index, uint16(c.cfg.ListenPort)); err != nil {
		d.udp.Close()
		return nil, fmt.Errorf("packet socket on %s: %w", name, err)
	}
	return d, nil
}

// addDownlink gives d a fair queue source of its own and makes it one of
// c's ports (after those already there: the caller orders downs).
func (c *Conn) addDownlink(d *downlink) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d.slot = c.q.addSource(clientQueueDepth(d.rate.Load()))
	c.downs = append(c.downs, d)
	c.bySlot = append(c.bySlot, d)
}

func rateAt(rates []Rate, i int) *Rate {
	var r Rate
	if i < len(rates) {
		r = rates[i]
	}
	return &r
}

// listenUDP opens a UDP socket on [::]:port bound to interface ifname
// (SO_BINDTODEVICE before the bind, so that one socket per interface may
// hold the port). With deaf, a socket filter drops everything it would
// receive.
func listenUDP(ifname string, port int, deaf bool) (*ipv6.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname); serr != nil {
				serr = fmt.Errorf("bind to device: %w", serr)
				return
			}
			if deaf {
				serr = attachFilter(int(fd), []bpf.Instruction{bpf.RetConstant{Val: 0}})
			}
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp6", "[::]:"+strconv.Itoa(port))
	if err != nil {
		return nil, fmt.Errorf("listen udp port %d: %w", port, err)
	}
	return ipv6.NewPacketConn(pc), nil
}

// openPacketSocket returns an AF_PACKET socket on one interface that
// receives only Ethernet/IPv6/UDP frames to port, with PACKET_AUXDATA
// (the checksum status). The filter is attached before the bind, so no
// other frame is ever queued.
func openPacketSocket(ifindex int, port uint16) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := attachFilter(fd, []bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2}, // ethertype
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: etherV6, SkipTrue: 5},
		bpf.LoadAbsolute{Off: ethLen + 6, Size: 1}, // next header
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: protUDP, SkipTrue: 3},
		bpf.LoadAbsolute{Off: ethLen + ip6Len + 2, Size: 2}, // UDP destination port
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(port), SkipTrue: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// The kernel's word on the checksum: a frame from a local virtual
	// sender carries a partial one (TP_STATUS_CSUMNOTREADY), which is not
	// a bad one.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("packet auxdata: %w", err)
	}
	// Bound to every protocol (a tap), not to ETH_P_IPV6: a socket of the
	// IPv6 protocol holds a second reference to every IPv6 frame the port
	// receives until after IPv6 input, which then clones each frame, and
	// forwarding copies its header again: 9-10 % of the rate the kernel
	// forwards from the port (kernel mode; bench PacketSocketCost). A tap
	// runs its filter and lets go of the frame before IPv6 input sees it.
	// A tap also sees the port's outgoing frames, which are not client
	// messages: PACKET_IGNORE_OUTGOING (Linux 4.20) keeps them out, and
	// without it the socket stays on ETH_P_IPV6.
	proto := uint16(unix.ETH_P_ALL)
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		proto = unix.ETH_P_IPV6
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ifindex}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind: %w", err)
	}
	return os.NewFile(uintptr(fd), "packet:"+strconv.Itoa(ifindex)), nil
}

// attachFilter attaches a classic BPF socket filter to fd.
func attachFilter(fd int, insns []bpf.Instruction) error {
	prog, err := bpf.Assemble(insns)
	if err != nil {
		return err
	}
	f := make([]unix.SockFilter, len(prog))
	for i, in := range prog {
		f[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return fmt.Errorf("attach filter: %w", err)
	}
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Close closes every socket.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	if c.udp != nil {
		errs = append(errs, c.udp.Close())
	}
	for _, d := range c.downs {
		errs = append(errs, d.close())
	}
	return errors.Join(errs...)
}

// Run relays until ctx is done. upd receives what snooping learns.
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
	c.running, c.runCtx = true, ctx
	for _, d := range c.downs {
		c.startReader(d)
	}
	c.mu.Unlock()
	c.reconfMu.Unlock()
	c.readers.Add(1)
	go func() { defer c.readers.Done(); c.readServers(ctx) }()
	defer func() { c.Close(); c.readers.Wait(); close(c.runDone) }()
	var b batch
	for {
		select {
		case o := <-c.orig:
			c.originate(o, &b)
		case r := <-c.reconf:
			c.commit(r)
		default:
		}
		// A turn takes what is waiting, up to relayBatch messages, and
		// ends with one hand-off of their updates and one send per
		// socket (flushBatch).
		for range relayBatch {
			m, ok := c.q.pop()
			if !ok {
				break
			}
			c.handle(m, &b)
		}
		if !b.empty() {
			c.flushBatch(&b, upd)
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.q.wake:
		case o := <-c.orig:
			c.originate(o, &b)
		case r := <-c.reconf:
			c.commit(r)
		}
	}
}

// startReader starts d's reader on Run's context.
func (c *Conn) startReader(d *downlink) {
	c.readers.Add(1)
	go func() { defer c.readers.Done(); c.readClients(c.runCtx, d) }()
}

// handle passes m through the engine and adds what it produced to b;
// m's buffer is b's until the turn ends.
func (c *Conn) handle(m inbound, b *batch) {
	if m.buf != nil {
		b.held = append(b.held, m)
	}
	now := time.Now()
	if m.slot != serverSlot {
		d := c.bySlot[m.slot]
		if d == nil { // a removed port's; commit drains them, so hardly ever
			c.eng.Counters.Drop(DropUnknownPort)
			return
		}
		fwd, u, err := c.eng.HandleClient(now, ClientPacket{Port: d.port, SrcMAC: m.mac, Src: m.src, Dst: m.dst, Payload: m.data})
		if err != nil {
			return // counted by the engine
		}
		if !u.Empty() {
			b.upds = append(b.upds, u)
		}
		c.addForward(b, fwd)
		return
	}
	out, u, err := c.eng.HandleServer(now, ServerPacket{Src: m.src, Uplink: m.up, Payload: m.data})
	if err != nil {
		return
	}
	if out.Originated {
		if c.onReply != nil {
			c.onReply(c.eng.ports[out.Port].Name, out.Payload)
		}
		return
	}
	if !u.Empty() {
		u.Received = m.at
		b.upds = append(b.upds, u)
	}
	dst := &net.UDPAddr{IP: net.IP(out.Dst.AsSlice()), Port: int(out.DstPort)}
	if out.Dst.IsLinkLocalUnicast() {
		dst.Zone = c.eng.ports[out.Port].Name
	}
	b.addReply(out.Port, out.Payload, dst)
}

// originate wraps a message the relay sends on a client's behalf and
// adds it to b for the servers, by the path the client's own would take.
func (c *Conn) originate(o Originated, b *batch) {
	fwd, err := c.eng.Originate(time.Now(), o)
	if err != nil {
		c.log.Warn("originate message", "port", o.Port, "err", err)
		return
	}
	c.addForward(b, fwd)
}

// readClients reads d's client frames until its socket closes or ctx
// ends: each is parsed (checksum included), rate limited, copied out of
// the read buffer and queued for the engine. What fails is counted under
// its reason.
func (c *Conn) readClients(ctx context.Context, d *downlink) {
	rc, err := d.raw.SyscallConn()
	if err != nil {
		c.log.Error("client socket", "port", d.name, "err", err)
		return
	}
	buf := make([]byte, clientFrameMax)
	oob := make([]byte, unix.CmsgSpace(int(auxdataLen)))
	rate := d.rate.Load()
	lim := newTokenBucket(rate.Rate, rate.Burst)
	cnt := d.cnt
	var statsRead time.Time
	for {
		var n, oobn, flags int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
			return rerr != unix.EAGAIN && rerr != unix.EINTR
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) || d.gone.Load() {
				return
			}
			c.log.Warn("read client frame", "port", d.name, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		now := time.Now()
		if now.Sub(statsRead) >= time.Second {
			// Frames the kernel dropped because this socket's buffer was
			// full (a flood faster than this reader) are counted too.
			statsRead = now
			_ = rc.Control(func(fd uintptr) {
				if st, err := unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
					c.eng.Counters.dropOn(cnt, DropSocketOverflow, uint64(st.Drops))
				}
			})
		}
		if flags&unix.MSG_TRUNC != 0 {
			c.eng.Counters.dropOn(cnt, DropMalformed, 1)
			continue
		}
		fr, err := ParseClientFrame(buf[:n], auxChecksum(oob[:oobn]))
		switch {
		case errors.Is(err, ErrChecksum):
			c.eng.Counters.dropOn(cnt, DropBadChecksum, 1)
			continue
		case err != nil:
			c.eng.Counters.dropOn(cnt, DropMalformed, 1)
			continue
		}
		if r := d.rate.Load(); r != rate {
			rate = r
			lim.retune(r.Rate, r.Burst)
		}
		if !lim.allow(now) {
			c.eng.Counters.dropOn(cnt, DropRateLimited, 1)
			continue
		}
		bp := clientBufs.Get().(*[]byte)
		if cap(*bp) < len(fr.Payload) {
			*bp = make([]byte, len(fr.Payload))
		}
		data := append((*bp)[:0], fr.Payload...)
		m := inbound{slot: d.slot, src: fr.Src, dst: fr.Dst, mac: fr.SrcMAC, at: now, data: data, buf: bp}
		if !c.q.push(d.slot, m) {
			clientBufs.Put(bp)
			if d.gone.Load() {
				return
			}
			c.eng.Counters.dropOn(cnt, DropQueueFull, 1)
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// auxChecksum reads the checksum status from a packet socket's control
// messages (PACKET_AUXDATA).
func auxChecksum(oob []byte) Checksum {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return ChecksumUnknown
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_PACKET || m.Header.Type != unix.PACKET_AUXDATA || len(m.Data) < 4 {
			continue
		}
		st := binary.NativeEndian.Uint32(m.Data) // tpacket_auxdata.tp_status
		switch {
		case st&unix.TP_STATUS_CSUMNOTREADY != 0:
			return ChecksumPartial
		case st&unix.TP_STATUS_CSUM_VALID != 0:
			return ChecksumValid
		}
	}
	return ChecksumUnknown
}

// auxdataLen is sizeof(struct tpacket_auxdata).
const auxdataLen = 20

// serverReadBatch is the most datagrams readServers takes from the
// kernel in one recvmmsg.
const serverReadBatch = 16

// readServers reads the uplink socket until it closes, as many datagrams
// a call as are waiting (up to serverReadBatch), and queues each for the
// engine.
func (c *Conn) readServers(ctx context.Context) {
	ms := make([]ipv6.Message, serverReadBatch)
	bps := make([]*[]byte, serverReadBatch)
	oobLen := len(ipv6.NewControlMessage(ipv6.FlagInterface | ipv6.FlagDst))
	for i := range ms {
		bps[i] = serverBufs.Get().(*[]byte)
		ms[i].Buffers = [][]byte{*bps[i]}
		ms[i].OOB = make([]byte, oobLen)
	}
	defer func() {
		for _, bp := range bps {
			serverBufs.Put(bp)
		}
	}()
	for {
		n, err := c.udp.ReadBatch(ms, 0)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			c.log.Warn("read udp", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		now := time.Now()
		for i := range ms[:n] {
			c.queueServer(&ms[i], bps[i], now)
			// The queue has the buffer now (or gave it back to the pool):
			// the slot reads into a new one.
			bps[i] = serverBufs.Get().(*[]byte)
			ms[i].Buffers[0], ms[i].OOB = *bps[i], ms[i].OOB[:cap(ms[i].OOB)]
		}
	}
}

// queueServer queues a datagram the uplink socket read into bp, or gives
// bp back to its pool; now is when it was read.
func (c *Conn) queueServer(m *ipv6.Message, bp *[]byte, now time.Time) {
	ua, _ := m.Addr.(*net.UDPAddr)
	var addr netip.Addr
	ok := ua != nil && m.Flags&unix.MSG_TRUNC == 0
	if ok {
		addr, ok = netip.AddrFromSlice(ua.IP)
	}
	if !ok {
		serverBufs.Put(bp)
		c.eng.Counters.Drop(DropMalformed)
		return
	}
	var cm ipv6.ControlMessage
	up := cm.Parse(m.OOB[:m.NN]) == nil && cm.IfIndex == c.up.Index
	in := inbound{slot: serverSlot, src: addr.Unmap(), up: up, at: now, data: (*bp)[:m.N], buf: bp}
	if !c.q.push(serverSlot, in) {
		serverBufs.Put(bp)
		c.eng.Counters.Drop(DropQueueFull)
	}
}
