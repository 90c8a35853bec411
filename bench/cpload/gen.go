package cpload

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// Phase is one exchange every client makes.
type Phase uint8

// The phases, in the order a run makes them.
const (
	PhaseBind    Phase = iota + 1 // Solicit, Advertise, Request, Reply
	PhaseRenew                    // Renew, Reply
	PhaseRelease                  // Release, Reply
)

func (p Phase) String() string {
	switch p {
	case PhaseBind:
		return "bind"
	case PhaseRenew:
		return "renew"
	case PhaseRelease:
		return "release"
	}
	return fmt.Sprintf("phase-%d", uint8(p))
}

// GenConfig configures a Generator.
type GenConfig struct {
	// Conn is the one socket of every emulated client: UDP, bound to
	// port 546 on the downlink's host.
	Conn *net.UDPConn
	// Dst is where client messages go: ff02::1:2 port 547, with the
	// interface's index as zone.
	Dst netip.AddrPort
	// Clients is how many clients to emulate (at most MaxClients).
	Clients int
	// Window bounds the clients in an exchange at once (default 1024).
	Window int
	// Rate bounds the exchanges started a second; 0: no bound.
	Rate int
	// Timeout is how long a message waits for its answer before it is
	// sent again (default 1 s, RFC 8415's SOL_TIMEOUT and REQ_TIMEOUT);
	// MaxTries is how many times it is sent before the client gives up
	// on the phase (default 10).
	Timeout  time.Duration
	MaxTries int
}

// client states within a phase.
const (
	stIdle uint8 = iota
	stWaitAdvertise
	stWaitReply
	stDone
	stFailed
)

// client is one emulated client; the Generator's mutex guards it.
type client struct {
	state    uint8
	tries    uint8
	bound    bool    // holds a prefix (the bind phase's Reply)
	server   uint8   // index into Generator.servers
	xid      [3]byte // of the message in flight
	typ      dhcp6.MessageType
	bits     uint8
	prefix   [16]byte
	began    int64 // ns since Generator.epoch: the exchange's first message
	lastSent int64
	replyAt  int64 // ns since epoch: the bind phase's Reply
}

// Generator emulates Clients DHCPv6 PD clients (see the package doc).
type Generator struct {
	cfg   GenConfig
	epoch time.Time

	mu       sync.Mutex
	clients  []client
	servers  [][]byte // server DUIDs seen, by client.server
	phase    Phase
	inflight map[uint32]struct{}
	finished int // clients done or failed in the phase
	failed   int
	xidSeq   uint32
	freed    chan struct{}
	dst      net.Addr     // cfg.Dst
	starts   *batchWriter // RunPhase's first messages and retransmissions

	// Counters, safe to read at any time.
	Sent        atomic.Uint64 // messages sent, retransmissions included
	Received    atomic.Uint64 // datagrams read
	Retransmits atomic.Uint64
	Stale       atomic.Uint64 // answers to no message in flight (late, duplicate)
	Unparsable  atomic.Uint64
	Refused     atomic.Uint64 // answers with a failure status or without a prefix
	// NoStamp counts answers without the kernel's receive time
	// (SO_TIMESTAMPNS), timed when read instead: later, by this
	// process's scheduling.
	NoStamp atomic.Uint64
}

// NewGenerator returns a Generator; Receive must run for it to make
// progress.
func NewGenerator(cfg GenConfig) (*Generator, error) {
	if cfg.Conn == nil || !cfg.Dst.IsValid() {
		return nil, errors.New("generator: needs a socket and a destination")
	}
	if cfg.Clients <= 0 || cfg.Clients > MaxClients {
		return nil, fmt.Errorf("generator: clients %d not in 1..%d", cfg.Clients, MaxClients)
	}
	if cfg.Window <= 0 {
		cfg.Window = 1024
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.MaxTries <= 0 {
		cfg.MaxTries = 10
	}
	if err := enableTimestamps(cfg.Conn); err != nil {
		return nil, fmt.Errorf("generator: %w", err)
	}
	return &Generator{
		cfg: cfg, epoch: time.Now(),
		clients:  make([]client, cfg.Clients),
		inflight: make(map[uint32]struct{}, cfg.Window),
		freed:    make(chan struct{}, 1),
		dst:      net.UDPAddrFromAddrPort(cfg.Dst),
		starts:   newBatchWriter(cfg.Conn),
	}, nil
}

func (g *Generator) now() int64 { return int64(time.Since(g.epoch)) }

// PhaseResult is what RunPhase measured.
type PhaseResult struct {
	Phase       Phase
	Clients     int
	Failed      int // clients that gave up after MaxTries, or were refused
	Duration    time.Duration
	Sent        uint64 // messages sent in the phase, retransmissions included
	Retransmits uint64
}

// RunPhase makes every client run phase p (the Receive goroutine must be
// running) and returns once each has finished it or given up, or when
// ctx ends (with ctx's error).
func (g *Generator) RunPhase(ctx context.Context, p Phase) (PhaseResult, error) {
	g.mu.Lock()
	g.phase, g.finished, g.failed = p, 0, 0
	clear(g.inflight)
	for i := range g.clients {
		g.clients[i].state, g.clients[i].tries = stIdle, 0
	}
	g.mu.Unlock()
	sent0, re0 := g.Sent.Load(), g.Retransmits.Load()
	start := time.Now()
	next, n := 0, len(g.clients)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	lastScan := start
	for {
		g.mu.Lock()
		if g.finished == n {
			res := PhaseResult{Phase: p, Clients: n, Failed: g.failed, Duration: time.Since(start)}
			g.mu.Unlock()
			res.Sent, res.Retransmits = g.Sent.Load()-sent0, g.Retransmits.Load()-re0
			return res, nil
		}
		allowed := n
		if g.cfg.Rate > 0 {
			allowed = min(n, int(time.Since(start).Seconds()*float64(g.cfg.Rate))+1)
		}
		for next < allowed && len(g.inflight) < g.cfg.Window {
			i := uint32(next)
			next++
			c := &g.clients[i]
			if p != PhaseBind && !c.bound {
				c.state = stFailed // nothing to renew or release
				g.finished++
				g.failed++
				continue
			}
			g.inflight[i] = struct{}{}
			c.began = g.now()
			switch p {
			case PhaseBind:
				c.state, c.typ = stWaitAdvertise, dhcp6.MsgSolicit
			case PhaseRenew:
				c.state, c.typ = stWaitReply, dhcp6.MsgRenew
			case PhaseRelease:
				c.state, c.typ = stWaitReply, dhcp6.MsgRelease
			}
			g.starts.push(g.dst, g.build(g.starts.next(), i, c, true))
		}
		if now := time.Now(); now.Sub(lastScan) >= g.cfg.Timeout/10 {
			lastScan = now
			g.retransmit()
		}
		g.mu.Unlock()
		sent, _ := g.starts.flush()
		g.Sent.Add(uint64(sent))
		select {
		case <-ctx.Done():
			return PhaseResult{}, ctx.Err()
		case <-g.freed:
		case <-tick.C:
		}
	}
}

// retransmit queues again in g.starts, with the mutex held, every
// message in flight for longer than the timeout, and gives up on clients
// that have sent MaxTries times.
func (g *Generator) retransmit() {
	now := g.now()
	for i := range g.inflight {
		c := &g.clients[i]
		if time.Duration(now-c.lastSent) < g.cfg.Timeout {
			continue
		}
		if int(c.tries) >= g.cfg.MaxTries {
			g.finish(i, c, stFailed)
			continue
		}
		g.Retransmits.Add(1)
		g.starts.push(g.dst, g.build(g.starts.next(), i, c, false))
	}
}

// build appends client i's message in flight (c.typ); fresh gives it a
// new transaction id. The mutex is held.
func (g *Generator) build(b []byte, i uint32, c *client, fresh bool) []byte {
	if fresh {
		g.xidSeq++
		c.xid = [3]byte{byte(g.xidSeq >> 16), byte(g.xidSeq >> 8), byte(g.xidSeq)}
	}
	now := g.now()
	c.lastSent = now
	c.tries++
	m := ClientMsg{Type: c.typ, XID: c.xid, DUID: ClientDUID(i), IAID: 1,
		Elapsed: uint16(min((now-c.began)/int64(10*time.Millisecond), 0xffff))}
	if c.typ != dhcp6.MsgSolicit {
		m.ServerID = g.servers[c.server]
	}
	if c.bits > 0 {
		m.Prefix = netip.PrefixFrom(netip.AddrFrom16(c.prefix), int(c.bits))
	}
	return AppendClientMsg(b, m)
}

// finish ends client i's phase in state st; the mutex is held.
func (g *Generator) finish(i uint32, c *client, st uint8) {
	c.state = st
	delete(g.inflight, i)
	g.finished++
	if st == stFailed {
		g.failed++
	}
	select {
	case g.freed <- struct{}{}:
	default:
	}
}

// Receive reads the clients' socket until it is closed, moving each
// client on by the answer it gets. The messages a read's answers call
// for leave together, in one sendmmsg.
func (g *Generator) Receive() error {
	in, out := newBatchReader(g.cfg.Conn, 65536, 128), newBatchWriter(g.cfg.Conn)
	for {
		ms, err := in.read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("generator: read: %w", err)
		}
		g.Received.Add(uint64(len(ms)))
		for i := range ms {
			m, err := ParseServerMsg(ms[i].Buffers[0][:ms[i].N])
			if err != nil || truncated(&ms[i]) {
				g.Unparsable.Add(1)
				continue
			}
			at, ok := rxTime(ms[i].OOB[:ms[i].NN])
			if !ok {
				g.NoStamp.Add(1)
				at = time.Now()
			}
			if b := g.handle(out.next(), m, at); len(b) > 0 {
				out.push(g.dst, b)
			}
		}
		sent, _ := out.flush()
		g.Sent.Add(uint64(sent))
	}
}

// handle moves a client on by m, which arrived at time at, and returns
// the message it sends next, if any (appended to out).
func (g *Generator) handle(out []byte, m ServerMsg, at time.Time) []byte {
	i, ok := clientIndex(m.DUID)
	g.mu.Lock()
	defer g.mu.Unlock()
	if !ok || int(i) >= len(g.clients) {
		g.Unparsable.Add(1)
		return out
	}
	c := &g.clients[i]
	if _, in := g.inflight[i]; !in || m.XID != c.xid {
		g.Stale.Add(1)
		return out
	}
	ok = m.Status == dhcp6.StatusSuccess && m.HasIA && m.IAStatus == dhcp6.StatusSuccess
	switch {
	case c.state == stWaitAdvertise && m.Type == dhcp6.MsgAdvertise:
		if !ok || !m.Prefix.IsValid() || len(m.ServerID) == 0 {
			g.Refused.Add(1)
			g.finish(i, c, stFailed)
			return out
		}
		c.server = g.serverIndex(m.ServerID)
		c.prefix, c.bits = m.Prefix.Addr().As16(), uint8(m.Prefix.Bits())
		c.state, c.typ, c.tries = stWaitReply, dhcp6.MsgRequest, 0
		return g.build(out, i, c, true)
	case c.state == stWaitReply && m.Type == dhcp6.MsgReply && c.typ == dhcp6.MsgRelease:
		if m.Status != dhcp6.StatusSuccess {
			g.Refused.Add(1)
			g.finish(i, c, stFailed)
			return out
		}
		c.bound, c.bits = false, 0
		g.finish(i, c, stDone)
	case (c.state == stWaitReply || c.state == stWaitAdvertise) && m.Type == dhcp6.MsgReply:
		// A Reply to the Request, the Renew, or a Rapid Commit Solicit.
		if !ok || !m.Prefix.IsValid() {
			g.Refused.Add(1)
			g.finish(i, c, stFailed)
			return out
		}
		if c.typ == dhcp6.MsgSolicit && len(m.ServerID) > 0 {
			c.server = g.serverIndex(m.ServerID)
		}
		c.prefix, c.bits, c.bound = m.Prefix.Addr().As16(), uint8(m.Prefix.Bits()), true
		if g.phase == PhaseBind {
			c.replyAt = int64(at.Sub(g.epoch))
		}
		g.finish(i, c, stDone)
	default:
		g.Stale.Add(1)
	}
	return out
}

// serverIndex interns a server DUID; the mutex is held.
func (g *Generator) serverIndex(id []byte) uint8 {
	for i, s := range g.servers {
		if string(s) == string(id) {
			return uint8(i)
		}
	}
	if len(g.servers) == 255 {
		return 254 // more servers than a run needs: the last one stands for the rest
	}
	g.servers = append(g.servers, append([]byte(nil), id...))
	return uint8(len(g.servers) - 1)
}

// Bound is a client's delegated prefix and when the Reply that
// delegated it arrived (bind phase).
type Bound struct {
	Client  uint32
	Prefix  netip.Prefix
	ReplyAt time.Time
}

// Bindings returns the prefix of every client that holds one.
func (g *Generator) Bindings() []Bound {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []Bound
	for i := range g.clients {
		c := &g.clients[i]
		if c.bound {
			out = append(out, Bound{Client: uint32(i), Prefix: netip.PrefixFrom(netip.AddrFrom16(c.prefix), int(c.bits)),
				ReplyAt: g.epoch.Add(time.Duration(c.replyAt))})
		}
	}
	return out
}
