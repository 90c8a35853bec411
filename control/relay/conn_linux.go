//go:build linux

package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
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
}

// Conn runs an Engine on real sockets.
type Conn struct {
	eng     *Engine
	cfg     ConnConfig
	log     *slog.Logger
	up      *net.Interface
	udp     *ipv6.PacketConn
	raw     []*os.File  // one AF_PACKET socket per downlink, in port order
	ifindex map[int]int // interface index -> port
	in      chan inbound
}

type inbound struct {
	port  int // -1: from the servers' side
	src   netip.Addr
	mac   [6]byte
	data  []byte
	frame []byte // buffer to recycle
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 65536); return &b }}

// Listen opens the sockets for eng's ports and the uplink.
func Listen(eng *Engine, cfg ConnConfig, log *slog.Logger) (*Conn, error) {
	if cfg.ServerPort == 0 {
		cfg.ServerPort = dhcp6.ServerPort
	}
	if cfg.ListenPort == 0 {
		cfg.ListenPort = dhcp6.ServerPort
	}
	c := &Conn{eng: eng, cfg: cfg, log: log, ifindex: make(map[int]int), in: make(chan inbound, 1024)}
	up, err := net.InterfaceByName(cfg.Uplink)
	if err != nil {
		return nil, fmt.Errorf("uplink %s: %w", cfg.Uplink, err)
	}
	c.up = up
	pc, err := net.ListenPacket("udp6", "[::]:"+strconv.Itoa(cfg.ListenPort))
	if err != nil {
		return nil, fmt.Errorf("listen udp port %d: %w", cfg.ListenPort, err)
	}
	c.udp = ipv6.NewPacketConn(pc)
	if err := c.udp.SetControlMessage(ipv6.FlagInterface|ipv6.FlagDst, true); err != nil {
		c.Close()
		return nil, fmt.Errorf("udp pktinfo: %w", err)
	}
	// A site-scoped server group (ff05::1:3) is usually routers away; the
	// default multicast hop limit of 1 would keep it on the uplink.
	if err := c.udp.SetMulticastHopLimit(dhcp6.HopCountLimit); err != nil {
		c.Close()
		return nil, fmt.Errorf("udp multicast hop limit: %w", err)
	}
	group := &net.UDPAddr{IP: net.IP(dhcp6.AllRelayAgentsAndServers.AsSlice())}
	for i, p := range eng.Ports() {
		ifi, err := net.InterfaceByName(p.Name)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("downlink %s: %w", p.Name, err)
		}
		c.ifindex[ifi.Index] = i
		eng.ports[i].Index = ifi.Index
		// Joining ff02::1:2 programs the NIC's multicast filter so the
		// client's frames reach the packet socket.
		if err := c.udp.JoinGroup(ifi, group); err != nil {
			c.Close()
			return nil, fmt.Errorf("join ff02::1:2 on %s: %w", p.Name, err)
		}
		f, err := openPacketSocket(ifi.Index, uint16(cfg.ListenPort))
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("packet socket on %s: %w", p.Name, err)
		}
		c.raw = append(c.raw, f)
	}
	return c, nil
}

// openPacketSocket returns an AF_PACKET socket on one interface that
// receives only Ethernet/IPv6/UDP frames to port. The filter is attached
// before the bind, so no other frame is ever queued.
func openPacketSocket(ifindex int, port uint16) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2}, // ethertype
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: etherV6, SkipTrue: 5},
		bpf.LoadAbsolute{Off: ethLen + 6, Size: 1}, // next header
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: protUDP, SkipTrue: 3},
		bpf.LoadAbsolute{Off: ethLen + ip6Len + 2, Size: 2}, // UDP destination port
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(port), SkipTrue: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: (*unix.SockFilter)(rawFilter(prog))}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("attach filter: %w", err)
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

func rawFilter(prog []bpf.RawInstruction) *unix.SockFilter {
	f := make([]unix.SockFilter, len(prog))
	for i, in := range prog {
		f[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	return &f[0]
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Close closes every socket.
func (c *Conn) Close() error {
	var errs []error
	if c.udp != nil {
		errs = append(errs, c.udp.Close())
	}
	for _, f := range c.raw {
		errs = append(errs, f.Close())
	}
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
		case <-ctx.Done():
			return nil
		case m := <-c.in:
			c.handle(m, upd)
			if m.frame != nil {
				bufPool.Put(&m.frame)
			}
		}
	}
}

func (c *Conn) handle(m inbound, upd Updater) {
	now := time.Now()
	if m.port >= 0 {
		fwd, u, err := c.eng.HandleClient(now, ClientPacket{Port: m.port, SrcMAC: m.mac, Src: m.src, Payload: m.data})
		if err != nil {
			return // counted by the engine
		}
		if !u.Empty() {
			upd.Apply(u)
		}
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
		return
	}
	out, u, err := c.eng.HandleServer(now, ServerPacket{Src: m.src, Payload: m.data})
	if err != nil {
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
	if _, err := c.udp.WriteTo(out.Payload, &ipv6.ControlMessage{IfIndex: p.Index}, dst); err != nil {
		c.eng.Counters.Drop(DropSendError)
		c.log.Debug("send to client", "port", p.Name, "dst", out.Dst, "err", err)
	}
}

func (c *Conn) readClients(ctx context.Context, port int, f *os.File) {
	for {
		bp := bufPool.Get().(*[]byte)
		n, err := f.Read(*bp)
		if err != nil {
			bufPool.Put(bp)
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return
			}
			c.log.Warn("read client frame", "port", c.eng.ports[port].Name, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		fr, err := ParseClientFrame((*bp)[:n])
		if err != nil {
			c.eng.Counters.Drop(DropMalformed)
			bufPool.Put(bp)
			continue
		}
		select {
		case c.in <- inbound{port: port, src: fr.Src, mac: fr.SrcMAC, data: fr.Payload, frame: *bp}:
		case <-ctx.Done():
			return
		}
	}
}

func (c *Conn) readServers(ctx context.Context) {
	for {
		bp := bufPool.Get().(*[]byte)
		n, cm, src, err := c.udp.ReadFrom(*bp)
		if err != nil {
			bufPool.Put(bp)
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			c.log.Warn("read udp", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if cm != nil {
			if _, down := c.ifindex[cm.IfIndex]; down {
				// Client side: the packet socket has the same message with
				// its frame; this copy only keeps the kernel from
				// answering port-unreachable.
				bufPool.Put(bp)
				continue
			}
		}
		ua, _ := src.(*net.UDPAddr)
		addr, ok := netip.AddrFromSlice(ua.IP)
		if !ok {
			bufPool.Put(bp)
			continue
		}
		select {
		case c.in <- inbound{port: -1, src: addr.Unmap(), data: (*bp)[:n], frame: *bp}:
		case <-ctx.Done():
			return
		}
	}
}
