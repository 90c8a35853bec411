//go:build linux

package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// Updater receives what the engine learned; *binding.Manager is one.
type Updater interface{ Apply(binding.Update) }

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

// Rate is a token bucket's rate (a second) and burst.
type Rate struct{ Rate, Burst int }

// Queue depths between the readers and the engine: a downlink's messages
// are rate limited before they queue, the servers' are not.
const (
	clientQueueDepth = 32
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
type Conn struct {
	eng     *Engine
	cfg     ConnConfig
	log     *slog.Logger
	up      *net.Interface
	udp     *ipv6.PacketConn   // the uplink's
	down    []*ipv6.PacketConn // by port: sends to clients
	raw     []*os.File         // by port: the clients' frames
	q       *fairQueue
	limits  []tokenBucket // by port; each owned by its reader
	closers []io.Closer
	// orig queues the messages the relay originates (Originate) for the
	// engine's goroutine; onReply gets the servers' Replies to them.
	orig    chan Originated
	onReply func(port string, reply []byte)
}

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
	port int // -1: from the servers' side
	src  netip.Addr
	dst  netip.Addr
	mac  [6]byte
	up   bool // arrived on the uplink
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
	c = &Conn{eng: eng, cfg: cfg, log: log, orig: make(chan Originated, originQueueDepth)}
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
	c.closers = append(c.closers, c.udp)
	if err := c.udp.SetControlMessage(ipv6.FlagInterface|ipv6.FlagDst, true); err != nil {
		return nil, fmt.Errorf("udp pktinfo: %w", err)
	}
	// A site-scoped server group (ff05::1:3) is usually routers away; the
	// default multicast hop limit of 1 would keep it on the uplink.
	if err := c.udp.SetMulticastHopLimit(dhcp6.HopCountLimit); err != nil {
		return nil, fmt.Errorf("udp multicast hop limit: %w", err)
	}
	group := &net.UDPAddr{IP: net.IP(dhcp6.AllRelayAgentsAndServers.AsSlice())}
	for i, p := range eng.Ports() {
		ifi, err := net.InterfaceByName(p.Name)
		if err != nil {
			return nil, fmt.Errorf("downlink %s: %w", p.Name, err)
		}
		eng.ports[i].Index = ifi.Index
		pc, err := listenUDP(p.Name, cfg.ListenPort, true)
		if err != nil {
			return nil, fmt.Errorf("downlink %s: %w", p.Name, err)
		}
		c.closers = append(c.closers, pc)
		c.down = append(c.down, pc)
		// Joining ff02::1:2 programs the NIC's multicast filter so the
		// client's frames reach the packet socket.
		if err := pc.JoinGroup(ifi, group); err != nil {
			return nil, fmt.Errorf("join ff02::1:2 on %s: %w", p.Name, err)
		}
		f, err := openPacketSocket(ifi.Index, uint16(cfg.ListenPort))
		if err != nil {
			return nil, fmt.Errorf("packet socket on %s: %w", p.Name, err)
		}
		c.closers = append(c.closers, f)
		c.raw = append(c.raw, f)
		var r Rate
		if i < len(cfg.Rates) {
			r = cfg.Rates[i]
		}
		c.limits = append(c.limits, newTokenBucket(r.Rate, r.Burst))
	}
	n := len(c.raw)
	c.q = newFairQueue(n+1, func(i int) int {
		if i == n {
			return serverQueueDepth
		}
		return clientQueueDepth
	})
	return c, nil
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
	// Our own transmissions are not client messages.
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IPV6), Ifindex: ifindex}
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
	var errs []error
	for _, cl := range c.closers {
		errs = append(errs, cl.Close())
	}
	c.closers = nil
	return errors.Join(errs...)
}

// Run relays until ctx is done. upd receives what snooping learns.
func (c *Conn) Run(ctx context.Context, upd Updater) error {
	var wg sync.WaitGroup
	for i, f := range c.raw {
		wg.Add(1)
		go func() { defer wg.Done(); c.readClients(ctx, i, f) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); c.readServers(ctx) }()
	defer func() { c.Close(); wg.Wait() }()
	for {
		select {
		case o := <-c.orig:
			c.originate(o)
		default:
		}
		m, ok := c.q.pop()
		if !ok {
			select {
			case <-ctx.Done():
				return nil
			case <-c.q.wake:
			case o := <-c.orig:
				c.originate(o)
			}
			continue
		}
		c.handle(m, upd)
		if m.buf != nil {
			if m.port >= 0 {
				clientBufs.Put(m.buf)
			} else {
				serverBufs.Put(m.buf)
			}
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

func (c *Conn) handle(m inbound, upd Updater) {
	now := time.Now()
	if m.port >= 0 {
		fwd, u, err := c.eng.HandleClient(now, ClientPacket{Port: m.port, SrcMAC: m.mac, Src: m.src, Dst: m.dst, Payload: m.data})
		if err != nil {
			return // counted by the engine
		}
		if !u.Empty() {
			upd.Apply(u)
		}
		c.toServers(fwd)
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
		upd.Apply(u)
	}
	p := c.eng.ports[out.Port]
	dst := &net.UDPAddr{IP: net.IP(out.Dst.AsSlice()), Port: int(out.DstPort)}
	if out.Dst.IsLinkLocalUnicast() {
		dst.Zone = p.Name
	}
	if _, err := c.down[out.Port].WriteTo(out.Payload, nil, dst); err != nil {
		c.eng.Counters.Drop(DropSendError)
		c.log.Debug("send to client", "port", p.Name, "dst", out.Dst, "err", err)
	}
}

// originate wraps a message the relay sends on a client's behalf and
// sends it to the servers, by the path the client's own would take.
func (c *Conn) originate(o Originated) {
	fwd, err := c.eng.Originate(time.Now(), o)
	if err != nil {
		c.log.Warn("originate message", "port", o.Port, "err", err)
		return
	}
	c.toServers(fwd)
}

// toServers sends a Relay-Forward to every server through the uplink.
func (c *Conn) toServers(fwd []byte) {
	for _, s := range c.cfg.Servers {
		dst := &net.UDPAddr{IP: net.IP(s.AsSlice()), Port: c.cfg.ServerPort, Zone: s.Zone()}
		var cm *ipv6.ControlMessage
		if s.IsMulticast() || s.IsLinkLocalUnicast() {
			cm = &ipv6.ControlMessage{IfIndex: c.up.Index}
			if dst.Zone == "" {
				dst.Zone = c.up.Name
			}
		}
		if _, err := c.udp.WriteTo(fwd, cm, dst); err != nil {
			c.eng.Counters.Drop(DropSendError)
			c.log.Debug("send relay-forward", "server", s, "err", err)
		}
	}
}

// readClients reads port's client frames until ctx ends: each is parsed
// (checksum included), rate limited, copied out of the read buffer and
// queued for the engine. What fails is counted under its reason.
func (c *Conn) readClients(ctx context.Context, port int, f *os.File) {
	rc, err := f.SyscallConn()
	if err != nil {
		c.log.Error("client socket", "port", c.eng.ports[port].Name, "err", err)
		return
	}
	buf := make([]byte, clientFrameMax)
	oob := make([]byte, unix.CmsgSpace(int(auxdataLen)))
	lim := &c.limits[port]
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
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return
			}
			c.log.Warn("read client frame", "port", c.eng.ports[port].Name, "err", err)
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
					c.eng.Counters.dropPortN(port, DropSocketOverflow, uint64(st.Drops))
				}
			})
		}
		if flags&unix.MSG_TRUNC != 0 {
			c.eng.Counters.DropPort(port, DropMalformed)
			continue
		}
		fr, err := ParseClientFrame(buf[:n], auxChecksum(oob[:oobn]))
		switch {
		case errors.Is(err, ErrChecksum):
			c.eng.Counters.DropPort(port, DropBadChecksum)
			continue
		case err != nil:
			c.eng.Counters.DropPort(port, DropMalformed)
			continue
		}
		if !lim.allow(now) {
			c.eng.Counters.DropPort(port, DropRateLimited)
			continue
		}
		bp := clientBufs.Get().(*[]byte)
		if cap(*bp) < len(fr.Payload) {
			*bp = make([]byte, len(fr.Payload))
		}
		data := append((*bp)[:0], fr.Payload...)
		m := inbound{port: port, src: fr.Src, dst: fr.Dst, mac: fr.SrcMAC, data: data, buf: bp}
		if !c.q.push(port, m) {
			clientBufs.Put(bp)
			c.eng.Counters.DropPort(port, DropQueueFull)
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

func (c *Conn) readServers(ctx context.Context) {
	server := len(c.raw)
	for {
		bp := serverBufs.Get().(*[]byte)
		n, cm, src, err := c.udp.ReadFrom(*bp)
		if err != nil {
			serverBufs.Put(bp)
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			c.log.Warn("read udp", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		ua, _ := src.(*net.UDPAddr)
		addr, ok := netip.AddrFromSlice(ua.IP)
		if !ok {
			serverBufs.Put(bp)
			continue
		}
		m := inbound{port: -1, src: addr.Unmap(), up: cm != nil && cm.IfIndex == c.up.Index, data: (*bp)[:n], buf: bp}
		if !c.q.push(server, m) {
			serverBufs.Put(bp)
			c.eng.Counters.Drop(DropQueueFull)
		}
	}
}
