//go:build linux

package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
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

// clientFrameMax is the largest client frame read (a jumbo frame); longer
// ones are cut short and dropped as malformed.
const clientFrameMax = 16 << 10

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
//   - one goroutine (Run) that owns every socket and the engine: it waits
//     on an epoll instance of its own for all of them and takes, in a
//     turn, up to relayBatch messages from each socket that is ready
//     (loop_linux.go).
//
// The sockets are the kernel's, not the Go runtime's: no other goroutine
// is woken for a datagram, so a message costs one wake-up of the relay's
// thread at most, and none when it arrives while a turn runs.
//
// Reconfigure adds and removes downlinks and changes the rest of the
// configuration while Run runs (reconfigure_linux.go).
type Conn struct {
	eng *Engine
	cfg ConnConfig // Servers change on the engine's goroutine (Reconfigure)
	log *slog.Logger
	up  *net.Interface
	udp int // the uplink's socket
	// upPktinfo is the control message that sends from the uplink (to
	// link-scoped servers); upDrops the uplink socket's overflow count
	// seen last (SO_RXQ_OVFL).
	upPktinfo []byte
	upDrops   uint32
	// ep is Run's epoll instance; wakeFD an eventfd in it that Originate,
	// Reconfigure and Close (or Run's context) write to.
	ep, wakeFD int

	// mu guards downs, bySlot's growth, closed and the descriptors'
	// lifetime (fdsClosed) against Close and wake, which may come from
	// any goroutine; Run's goroutine is the only one to change them
	// otherwise (commit).
	mu        sync.Mutex
	downs     []*downlink // in the engine's port order
	bySlot    []*downlink // by epoll token; nil: the uplink's, or a removed port's
	closed    bool
	fdsClosed bool

	// orig queues the messages the relay originates (Originate) for the
	// engine's goroutine; onReply gets the servers' Replies to them.
	orig    chan Originated
	onReply func(port string, reply []byte)

	// reconf hands a prepared reconfiguration to Run; reconfMu makes
	// reconfigurations one at a time.
	reconf   chan *reconfig
	reconfMu sync.Mutex
	running  bool          // under mu: Run has started
	runDone  chan struct{} // closed when Run returns
	// statsRead is when Run last read the packet sockets' drop counts;
	// upWarned when it last logged a read error on the uplink.
	statsRead, upWarned time.Time
}

// downlink is one port's sockets and what Run needs to read them.
type downlink struct {
	name string
	ifi  *net.Interface
	udp  int // sends to clients; owns port 547 on the port
	raw  int // the clients' frames
	slot int // its epoll token and index in bySlot, never reused
	// lim is the port's client rate limit, owned by Run's goroutine;
	// rate what it was set from (commit retunes it).
	lim  tokenBucket
	rate Rate
	// port is the port's index in the engine, owned by the engine's
	// goroutine; cnt its counts, set once before it is read.
	port int
	cnt  *portCounters
	// warned is when a read error on the port was last logged.
	warned time.Time
}

func (d *downlink) close() error {
	return errors.Join(closeFD(d.raw), closeFD(d.udp))
}

func closeFD(fd int) error {
	if fd < 0 {
		return nil
	}
	return unix.Close(fd)
}

// serverSlot is the uplink socket's epoll token (and the slot of the
// messages it reads); the downlinks' follow it. wakeToken is the eventfd's.
const (
	serverSlot = 0
	wakeToken  = -1
)

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
		c.wake()
		return nil
	default:
		return ErrOriginQueueFull
	}
}

type inbound struct {
	slot int // serverSlot, or the downlink's
	src  netip.Addr
	dst  netip.Addr
	mac  [6]byte
	up   bool      // arrived on the uplink
	at   time.Time // when it was read
	data []byte
	buf  *[]byte // pooled buffer holding data, to recycle
}

// serverBufs hold datagrams from the servers (up to 64 KiB); clientBufs
// the payloads of admitted client messages.
var (
	serverBufs = sync.Pool{New: func() any { b := make([]byte, 65536); return &b }}
	clientBufs = sync.Pool{New: func() any { b := make([]byte, 2048); return &b }}
)

// sockBuf is the receive buffer asked for each socket that reads
// (SO_RCVBUFFORCE, else SO_RCVBUF up to the host's limit): it is the only
// queue between the kernel and the relay, and holds a port's burst.
const sockBuf = 4 << 20

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
		udp: -1, ep: -1, wakeFD: -1,
		orig:    make(chan Originated, originQueueDepth),
		reconf:  make(chan *reconfig, 1),
		runDone: make(chan struct{}),
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if c.ep, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	if c.wakeFD, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := c.watch(c.wakeFD, wakeToken); err != nil {
		return nil, err
	}
	up, err := net.InterfaceByName(cfg.Uplink)
	if err != nil {
		return nil, fmt.Errorf("uplink %s: %w", cfg.Uplink, err)
	}
	c.up = up
	c.upPktinfo = pktinfo(up.Index)
	if c.udp, err = udpSocket(cfg.Uplink, cfg.ListenPort, false); err != nil {
		return nil, fmt.Errorf("uplink %s: %w", cfg.Uplink, err)
	}
	for _, o := range []struct {
		level, opt, v int
		what          string
	}{
		{unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1, "pktinfo"},
		// A site-scoped server group (ff05::1:3) is usually routers
		// away; the default multicast hop limit of 1 would keep it on
		// the uplink.
		{unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, dhcp6.HopCountLimit, "multicast hop limit"},
		// The kernel's count of datagrams it dropped on a full buffer,
		// with each datagram read.
		{unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1, "overflow count"},
	} {
		if err := unix.SetsockoptInt(c.udp, o.level, o.opt, o.v); err != nil {
			return nil, fmt.Errorf("uplink %s: %s: %w", cfg.Uplink, o.what, err)
		}
	}
	if err := c.watch(c.udp, serverSlot); err != nil {
		return nil, err
	}
	c.bySlot = []*downlink{serverSlot: nil}
	cnt := eng.Counters.setPorts(portNames(eng.ports))
	for i, p := range eng.Ports() {
		d, err := c.openDownlink(p.Name)
		if err != nil {
			return nil, err
		}
		eng.ports[i].Index = d.ifi.Index
		d.port, d.cnt = i, cnt[i]
		d.setRate(rateAt(cfg.Rates, i))
		if err := c.addDownlink(d); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// watch adds fd to Run's epoll instance under token.
func (c *Conn) watch(fd, token int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(token)}
	if err := unix.EpollCtl(c.ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll add: %w", err)
	}
	return nil
}

// wake makes Run's epoll_wait return, to look at its channels, its
// context and closed.
func (c *Conn) wake() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.fdsClosed {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		unix.Write(c.wakeFD, one[:]) // a full counter (EAGAIN) is already a wake-up
	}
}

// openDownlink opens a downlink's sockets: the UDP socket that sends to
// its clients, joined to ff02::1:2, and the packet socket that reads
// their frames. Errors name the port.
func (c *Conn) openDownlink(name string) (d *downlink, err error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("downlink %s: %w", name, err)
	}
	d = &downlink{name: name, ifi: ifi, udp: -1, raw: -1}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	if d.udp, err = udpSocket(name, c.cfg.ListenPort, true); err != nil {
		return nil, fmt.Errorf("downlink %s: %w", name, err)
	}
	// Joining ff02::1:2 programs the NIC's multicast filter so the
	// client's frames reach the packet socket.
	mreq := &unix.IPv6Mreq{Multiaddr: dhcp6.AllRelayAgentsAndServers.As16(), Interface: uint32(ifi.Index)}
	if err := unix.SetsockoptIPv6Mreq(d.udp, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, mreq); err != nil {
		return nil, fmt.Errorf("join ff02::1:2 on %s: %w", name, err)
	}
	if d.raw, err = openPacketSocket(ifi.Index, uint16(c.cfg.ListenPort)); err != nil {
		return nil, fmt.Errorf("packet socket on %s: %w", name, err)
	}
	return d, nil
}

// addDownlink gives d an epoll token of its own and makes it one of c's
// ports (after those already there: the caller orders downs).
func (c *Conn) addDownlink(d *downlink) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	d.slot = len(c.bySlot)
	if err := c.watch(d.raw, d.slot); err != nil {
		return err
	}
	c.downs = append(c.downs, d)
	c.bySlot = append(c.bySlot, d)
	return nil
}

// setRate sets the port's client rate limit, keeping the tokens saved
// (a bucket never set has a burst of 0).
func (d *downlink) setRate(r *Rate) {
	if d.lim.burst == 0 {
		d.lim = newTokenBucket(r.Rate, r.Burst)
	} else {
		d.lim.retune(r.Rate, r.Burst)
	}
	d.rate = *r
}

func rateAt(rates []Rate, i int) *Rate {
	var r Rate
	if i < len(rates) {
		r = rates[i]
	}
	return &r
}

// udpSocket opens a blocking UDP socket on [::]:port bound to interface
// ifname (SO_BINDTODEVICE before the bind, so that one socket per
// interface may hold the port). With deaf, a socket filter drops
// everything it would receive; without, its receive buffer is sockBuf.
// Reads pass MSG_DONTWAIT; a send waits for room at most sendTimeout.
func udpSocket(ifname string, port int, deaf bool) (fd int, err error) {
	fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
			fd = -1
		}
	}()
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
		return -1, fmt.Errorf("v6only: %w", err)
	}
	if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname); err != nil {
		return -1, fmt.Errorf("bind to device: %w", err)
	}
	if deaf {
		if err := attachFilter(fd, []bpf.Instruction{bpf.RetConstant{Val: 0}}); err != nil {
			return -1, err
		}
	} else {
		setRcvBuf(fd)
	}
	tv := unix.NsecToTimeval(sendTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return -1, fmt.Errorf("send timeout: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet6{Port: port}); err != nil {
		return -1, fmt.Errorf("listen udp port %d: %w", port, err)
	}
	return fd, nil
}

// sendTimeout bounds how long a send waits for room in a socket's
// buffer; what still does not fit is counted (send_error).
const sendTimeout = 100 * time.Millisecond

// setRcvBuf asks for a receive buffer of sockBuf: past the host's limit
// when the relay may (CAP_NET_ADMIN), else up to it.
func setRcvBuf(fd int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, sockBuf) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, sockBuf)
	}
}

// pktinfo is an IPV6_PKTINFO control message that sends from interface
// ifindex.
func pktinfo(ifindex int) []byte {
	b := make([]byte, unix.CmsgSpace(unix.SizeofInet6Pktinfo))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
	pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
	pi.Ifindex = uint32(ifindex)
	return b
}

// openPacketSocket returns a blocking AF_PACKET socket on one interface
// that receives only Ethernet/IPv6/UDP frames to port, with PACKET_AUXDATA
// (the checksum status). The filter is attached before the bind, so no
// other frame is ever queued.
func openPacketSocket(ifindex int, port uint16) (int, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
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
		return -1, err
	}
	// The kernel's word on the checksum: a frame from a local virtual
	// sender carries a partial one (TP_STATUS_CSUMNOTREADY), which is not
	// a bad one.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("packet auxdata: %w", err)
	}
	setRcvBuf(fd)
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
		return -1, fmt.Errorf("bind: %w", err)
	}
	return fd, nil
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

// Close closes every socket. While Run runs, it asks Run to stop, and
// Run closes them as it returns; Close returns once it has.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	running := c.running
	c.mu.Unlock()
	if running {
		c.wake()
		<-c.runDone
		return nil
	}
	return c.closeFDs()
}

// closeFDs closes every descriptor, once.
func (c *Conn) closeFDs() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fdsClosed {
		return nil
	}
	c.fdsClosed = true
	errs := []error{closeFD(c.udp), closeFD(c.wakeFD), closeFD(c.ep)}
	for _, d := range c.downs {
		errs = append(errs, d.close())
	}
	return errors.Join(errs...)
}

// handle passes m through the engine and adds what it produced to b;
// m's buffer is b's until the turn ends.
func (c *Conn) handle(m inbound, b *batch) {
	if m.buf != nil {
		b.held = append(b.held, m)
	}
	now := m.at
	if m.slot != serverSlot {
		d := c.bySlot[m.slot]
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
	b.addReply(out.Port, out.Payload, netip.AddrPortFrom(out.Dst.WithZone(""), out.DstPort), c.eng.ports[out.Port].Index)
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

// auxChecksum reads the checksum status from a packet socket's control
// messages (PACKET_AUXDATA).
func auxChecksum(oob []byte) Checksum {
	for m := range cmsgs(oob) {
		if m.level != unix.SOL_PACKET || m.typ != unix.PACKET_AUXDATA || len(m.data) < 4 {
			continue
		}
		st := binary.NativeEndian.Uint32(m.data) // tpacket_auxdata.tp_status
		switch {
		case st&unix.TP_STATUS_CSUMNOTREADY != 0:
			return ChecksumPartial
		case st&unix.TP_STATUS_CSUM_VALID != 0:
			return ChecksumValid
		}
		return ChecksumUnknown
	}
	return ChecksumUnknown
}

// cmsg is one control message: its level, type and data.
type cmsg struct {
	level, typ int32
	data       []byte
}

// cmsgs yields the control messages in oob, as recvmsg left them; one
// whose length runs past oob ends it.
func cmsgs(oob []byte) iter.Seq[cmsg] {
	return func(yield func(cmsg) bool) {
		for len(oob) >= unix.SizeofCmsghdr {
			h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
			l := int(h.Len)
			if l < unix.SizeofCmsghdr || l > len(oob) {
				return
			}
			if !yield(cmsg{h.Level, h.Type, oob[unix.CmsgLen(0):l]}) {
				return
			}
			oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
		}
	}
}
