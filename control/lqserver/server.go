package lqserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// Bulk Leasequery defaults (RFC 5460 section 5.6) and lqserver's own.
const (
	DefaultMaxConns    = 10               // BULK_LQ_MAX_CONNS
	DefaultDataTimeout = 30 * time.Second // BULK_LQ_DATA_TIMEOUT
	DefaultMaxQueries  = 4                // parallel queries per connection
	DefaultLinksTTL    = 5 * time.Second  // how long a config-get is reused
	// flushBytes is how much of a query's answer is gathered before it is
	// written: several LEASEQUERY-DATA messages per write.
	flushBytes = 32 << 10
	// maxGroup bounds the prefixes of one OPTION_CLIENT_DATA.
	maxGroup = 64
	// shutdownGrace is how long Serve lets queries tell their requestors
	// QueryTerminated before it closes their connections.
	shutdownGrace = 2 * time.Second
)

// Options configure a Server.
type Options struct {
	Kea *Kea
	// ServerID is the DUID sent as Server-ID in every LEASEQUERY-REPLY.
	// It should be Kea's own (see ServerID), so that a relay releasing a
	// recovered binding names the server Kea is.
	ServerID []byte
	// Allow lists the requestor prefixes that may connect; a connection
	// from elsewhere is closed at once. Empty allows nobody.
	Allow []netip.Prefix
	// MaxConns bounds the open connections (0: DefaultMaxConns); one
	// more is closed at once.
	MaxConns int
	// MaxQueries bounds the queries one connection runs at a time (0:
	// DefaultMaxQueries); lqserver reads no further query until one
	// finishes.
	MaxQueries int
	// DataTimeout bounds every read and write (0: DefaultDataTimeout).
	// A connection with no query running and nothing sent for this long
	// is closed.
	DataTimeout time.Duration
	// QueryTypes, when not empty, are the query types answered; others
	// get NotAllowed.
	QueryTypes []uint8
	// BarePrefixes sends each prefix as a bare OPTION_IAPREFIX in
	// OPTION_CLIENT_DATA, strictly as RFC 5007 has it, for requestors
	// that expect nothing else. By default each IA_PD's prefixes are
	// wrapped in an OPTION_IA_PD carrying its IAID (see appendClientData).
	BarePrefixes bool
	Logger       *slog.Logger
	// Now is the clock lease times are read with (CLT time, expiry);
	// nil means time.Now. Timeouts always use the real clock.
	Now func() time.Time
}

// Server answers Bulk Leasequery (RFC 5460) over TCP from Kea's leases.
type Server struct {
	opt   Options
	log   *slog.Logger
	stats stats
	conns atomic.Int64

	linksMu sync.Mutex
	links   *Links
	linksAt time.Time
}

// Stats are a Server's counters since it was made.
type Stats struct {
	Accepted      uint64 // connections served
	Refused       uint64 // closed at once: requestor not allowed
	OverLimit     uint64 // closed at once: MaxConns reached
	Queries       uint64 // LEASEQUERY messages answered
	Refusals      uint64 // answered with an error status in the REPLY
	Terminated    uint64 // ended early with QueryTerminated
	ClientData    uint64 // OPTION_CLIENT_DATA sent
	Prefixes      uint64 // IAPREFIX sent
	Discarded     uint64 // frames that were no LEASEQUERY (not answered)
	SkippedLeases uint64 // leases from Kea that did not decode
	TooLarge      uint64 // client data too large for a frame, not sent
}

type stats struct {
	accepted, refused, overLimit, queries, refusals, terminated,
	clientData, prefixes, discarded, skipped, tooLarge atomic.Uint64
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		Accepted: c.accepted.Load(), Refused: c.refused.Load(), OverLimit: c.overLimit.Load(),
		Queries: c.queries.Load(), Refusals: c.refusals.Load(), Terminated: c.terminated.Load(),
		ClientData: c.clientData.Load(), Prefixes: c.prefixes.Load(), Discarded: c.discarded.Load(),
		SkippedLeases: c.skipped.Load(), TooLarge: c.tooLarge.Load(),
	}
}

// NewServer checks opt and returns a Server.
func NewServer(opt Options) (*Server, error) {
	if opt.Kea == nil {
		return nil, errors.New("lqserver: no kea client")
	}
	if len(opt.ServerID) == 0 || len(opt.ServerID) > 130 {
		return nil, fmt.Errorf("lqserver: server id of %d bytes (want 1..130)", len(opt.ServerID))
	}
	if opt.MaxConns <= 0 {
		opt.MaxConns = DefaultMaxConns
	}
	if opt.MaxQueries <= 0 {
		opt.MaxQueries = DefaultMaxQueries
	}
	if opt.DataTimeout <= 0 {
		opt.DataTimeout = DefaultDataTimeout
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{opt: opt, log: log}, nil
}

func (s *Server) allowed(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.opt.Allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (s *Server) typeAllowed(t uint8) bool {
	return len(s.opt.QueryTypes) == 0 || slices.Contains(s.opt.QueryTypes, t)
}

// Serve accepts connections on ln until ctx ends, then closes ln, tells
// every running query QueryTerminated, closes the connections and
// returns nil. It returns early with the error of a failed Accept.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.log.Info("bulk leasequery listening", "addr", ln.Addr().String(), "max_conns", s.opt.MaxConns)
	defer s.log.Info("bulk leasequery stopped", "addr", ln.Addr().String())
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]struct{}{}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var acceptErr error
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				acceptErr = fmt.Errorf("bulk leasequery accept: %w", err)
			}
			break
		}
		remote := addrPortOf(c.RemoteAddr())
		if !s.allowed(remote.Addr()) {
			s.stats.refused.Add(1)
			s.log.Warn("bulk leasequery connection refused: requestor not allowed", "remote", remote.String())
			c.Close()
			continue
		}
		if s.conns.Add(1) > int64(s.opt.MaxConns) {
			s.conns.Add(-1)
			s.stats.overLimit.Add(1)
			s.log.Warn("bulk leasequery connection refused: connection limit", "remote", remote.String(), "max_conns", s.opt.MaxConns)
			c.Close()
			continue
		}
		s.stats.accepted.Add(1)
		mu.Lock()
		open[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.conns.Add(-1)
			s.serveConn(ctx, c, remote)
			mu.Lock()
			delete(open, c)
			mu.Unlock()
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(shutdownGrace):
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		<-done
	}
	return acceptErr
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// conn is one requestor connection. Queries write whole batches of
// frames under wmu, so messages of parallel queries interleave only at
// message boundaries.
type conn struct {
	s      *Server
	c      net.Conn
	remote netip.AddrPort
	wmu    sync.Mutex
	broken atomic.Bool // a write failed: nothing more is sent
	active atomic.Int32
	// stopRead makes the reader stop taking queries (an aborted query,
	// a protocol error); the running ones finish first.
	stopRead context.CancelCauseFunc

	xmu sync.Mutex
	xid map[[3]byte]bool // transaction ids of running queries
}

var (
	errBroken     = errors.New("connection broken")
	errAborted    = errors.New("a query was aborted")
	errDuplicate  = errors.New("transaction id of a running query reused")
	errIdle       = errors.New("idle")
	errFrameRead  = errors.New("frame unreadable")
	errPeerClosed = errors.New("requestor closed")
)

// write sends b (whole frames) within the data timeout. After a failed
// write the connection is closed and every later write fails.
func (cc *conn) write(b []byte) error {
	if cc.broken.Load() {
		return errBroken
	}
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	if cc.broken.Load() {
		return errBroken
	}
	_ = cc.c.SetWriteDeadline(time.Now().Add(cc.s.opt.DataTimeout))
	if _, err := cc.c.Write(b); err != nil {
		cc.broken.Store(true)
		cc.c.Close()
		return fmt.Errorf("%w: %v", errBroken, err)
	}
	return nil
}

func (s *Server) serveConn(ctx context.Context, c net.Conn, remote netip.AddrPort) {
	start := time.Now()
	readCtx, stopRead := context.WithCancelCause(ctx)
	defer stopRead(nil)
	cc := &conn{s: s, c: c, remote: remote, stopRead: stopRead, xid: map[[3]byte]bool{}}
	// Waking the reader: a deadline in the past fails its blocked read.
	wake := context.AfterFunc(readCtx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	defer wake()

	var wg sync.WaitGroup
	sem := make(chan struct{}, s.opt.MaxQueries)
	br := bufio.NewReaderSize(c, 4096)
	fr := dhcp6.NewFrameReader(br)
	queries := 0
	var why error
read:
	for {
		select {
		case sem <- struct{}{}:
		case <-readCtx.Done():
			break read
		}
		// Wait for a query's first byte: indefinitely while queries run
		// (the requestor is reading answers), else for DataTimeout.
		for {
			if readCtx.Err() != nil {
				break read
			}
			_ = c.SetReadDeadline(time.Now().Add(s.opt.DataTimeout))
			_, err := br.Peek(1)
			if err == nil {
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && readCtx.Err() == nil && cc.active.Load() > 0 {
				continue
			}
			switch {
			case readCtx.Err() != nil:
			case errors.As(err, &ne) && ne.Timeout():
				why = errIdle
			case errors.Is(err, io.EOF):
				why = errPeerClosed
			default:
				why = err
			}
			break read
		}
		_ = c.SetReadDeadline(time.Now().Add(s.opt.DataTimeout))
		frame, err := fr.Next()
		if err != nil {
			if readCtx.Err() == nil {
				why = fmt.Errorf("%w: %v", errFrameRead, err)
			}
			break
		}
		m, err := dhcp6.ParseMessage(frame)
		if err != nil && (len(frame) < dhcp6.HeaderLen || dhcp6.MessageType(frame[0]) != dhcp6.MsgLeasequery) {
			s.stats.discarded.Add(1)
			<-sem
			continue
		}
		if err == nil && m.Type != dhcp6.MsgLeasequery {
			// RFC 5007: a server discards what is not a LEASEQUERY.
			s.stats.discarded.Add(1)
			<-sem
			continue
		}
		msg := bytes.Clone(frame)
		xid := [3]byte{msg[1], msg[2], msg[3]}
		cc.xmu.Lock()
		dup := cc.xid[xid]
		cc.xid[xid] = true
		cc.xmu.Unlock()
		if dup {
			why = errDuplicate
			break
		}
		queries++
		cc.active.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			defer cc.active.Add(-1)
			s.answer(ctx, cc, msg)
			cc.xmu.Lock()
			delete(cc.xid, xid)
			cc.xmu.Unlock()
		}()
	}
	wg.Wait()
	c.Close()
	if why == nil {
		why = context.Cause(readCtx)
	}
	reason := "done"
	if why != nil {
		reason = why.Error()
	}
	if ctx.Err() != nil {
		reason = "shutdown"
	}
	s.log.Info("bulk leasequery connection closed", "remote", remote.String(), "queries", queries,
		"duration", time.Since(start).Round(time.Millisecond).String(), "reason", reason)
}

// responder streams one query's answer.
type responder struct {
	s       *Server
	cc      *conn
	q       *query
	now     time.Time
	buf     []byte
	replied bool
	err     error // first write error

	group    bool // a client's data is pending
	first    Lease
	prefixes []prefixGrant

	clients, nprefixes int
}

func (s *Server) answer(ctx context.Context, cc *conn, msg []byte) {
	start := time.Now()
	s.stats.queries.Add(1)
	r := &responder{s: s, cc: cc, now: s.opt.Now()}
	m, perr := dhcp6.ParseMessage(msg)
	var q query
	status, text := dhcp6.StatusMalformedQuery, ""
	if perr != nil {
		q.xid = [3]byte{msg[1], msg[2], msg[3]}
		text = perr.Error()
	} else {
		q, status, text = parseQuery(&m, s.typeAllowed)
	}
	r.q = &q
	log := func(status uint16, text string, skipped int) {
		s.log.Info("bulk leasequery", "remote", cc.remote.String(), "xid", hex.EncodeToString(q.xid[:]),
			"query", QueryTypeName(q.typ), "link", q.link.String(), "status", dhcp6.StatusName(status),
			"text", text, "clients", r.clients, "prefixes", r.nprefixes, "skipped_leases", skipped,
			"duration", time.Since(start).Round(time.Millisecond).String())
	}
	if status != dhcp6.StatusSuccess {
		s.stats.refusals.Add(1)
		r.reply(status, text)
		r.flush()
		log(status, text, 0)
		return
	}
	mt := &matcher{q: &q, now: r.now.Unix()}
	if q.scoped() {
		links, err := s.subnetLinks(ctx)
		if err != nil {
			s.stats.terminated.Add(1)
			text := "kea configuration unavailable: " + err.Error()
			r.reply(dhcp6.StatusQueryTerminated, text)
			r.flush()
			log(dhcp6.StatusQueryTerminated, text, 0)
			return
		}
		mt.subnets = links.Subnets(q.link)
	}
	skipped, err := s.opt.Kea.Leases(ctx, func(l *Lease) error {
		if mt.match(l) {
			r.add(l)
		}
		return r.err
	})
	s.stats.skipped.Add(uint64(skipped))
	r.flushGroup()
	switch {
	case r.err != nil:
		// The requestor stopped reading: nothing more can be said.
		log(dhcp6.StatusQueryTerminated, r.err.Error(), skipped)
		return
	case err != nil:
		// Kea failed or lqserver is shutting down (RFC 5460 section 7.2:
		// a DONE with the error after a REPLY; the connection closes).
		s.stats.terminated.Add(1)
		text := "kea control socket: " + err.Error()
		if ctx.Err() != nil {
			text = "server shutting down"
		}
		if r.replied {
			r.done(dhcp6.StatusQueryTerminated, text)
			cc.stopRead(errAborted)
		} else {
			r.reply(dhcp6.StatusQueryTerminated, text)
		}
		r.flush()
		log(dhcp6.StatusQueryTerminated, text, skipped)
		return
	}
	switch {
	case r.replied:
		r.done(dhcp6.StatusSuccess, "")
	case mt.notConfigured():
		s.stats.refusals.Add(1)
		r.reply(dhcp6.StatusNotConfigured, "no link of "+q.link.String())
		status = dhcp6.StatusNotConfigured
	default:
		r.reply(dhcp6.StatusSuccess, "") // nothing matched: no CLIENT_DATA, no DONE
	}
	r.flush()
	log(status, "", skipped)
}

// subnetLinks returns Kea's subnets by link, reusing a config-get for
// DefaultLinksTTL. A Kea without config-get (result 2) has no subnets to
// match: scoped queries then match the relays' link-addresses only.
func (s *Server) subnetLinks(ctx context.Context) (*Links, error) {
	s.linksMu.Lock()
	defer s.linksMu.Unlock()
	now := s.opt.Now()
	if s.links != nil && now.Sub(s.linksAt) < DefaultLinksTTL {
		return s.links, nil
	}
	cfg, err := s.opt.Kea.Config(ctx)
	var ke *KeaError
	switch {
	case errors.As(err, &ke) && ke.Result == keaUnsupported:
		s.links = &Links{}
	case err != nil:
		return nil, err
	default:
		s.links = &cfg.Links
	}
	s.linksAt = now
	return s.links, nil
}

// add takes one matching lease: it joins the pending client data when
// it is the same client seen the same way, else the pending one is sent.
func (r *responder) add(l *Lease) {
	if r.group && len(r.prefixes) < maxGroup && sameClient(&r.first, l) {
		r.prefixes = append(r.prefixes, prefixGrant{l.Prefix, l.IAID, l.Preferred, l.Valid})
		return
	}
	r.flushGroup()
	r.group, r.first = true, *l
	r.prefixes = append(r.prefixes[:0], prefixGrant{l.Prefix, l.IAID, l.Preferred, l.Valid})
}

func sameClient(a, b *Lease) bool {
	if a.CLTT != b.CLTT || !bytes.Equal(a.DUID, b.DUID) || len(a.Relays) != len(b.Relays) {
		return false
	}
	for i := range a.Relays {
		x, y := &a.Relays[i], &b.Relays[i]
		if x.Hop != y.Hop || x.Link != y.Link || x.Peer != y.Peer || !bytes.Equal(x.Options, y.Options) {
			return false
		}
	}
	return true
}

// flushGroup appends the pending client's data as the REPLY (first) or
// a LEASEQUERY-DATA, and writes when enough is gathered.
func (r *responder) flushGroup() {
	if !r.group || r.err != nil {
		return
	}
	r.group = false
	clt := r.now.Unix() - r.first.CLTT
	clt = max(0, min(clt, infinite))
	var at int
	if !r.replied {
		r.buf, at = beginFrame(r.buf, dhcp6.MsgLeasequeryReply, r.q.xid)
		r.buf = appendReplyHead(r.buf, r.s.opt.ServerID, r.q.clientID)
	} else {
		r.buf, at = beginFrame(r.buf, dhcp6.MsgLeasequeryData, r.q.xid)
	}
	r.buf = appendClientData(r.buf, &r.first, r.prefixes, uint32(clt), r.s.opt.BarePrefixes)
	var ok bool
	if r.buf, ok = endFrame(r.buf, at); !ok {
		r.s.stats.tooLarge.Add(1)
		return
	}
	r.replied = true
	r.clients++
	r.nprefixes += len(r.prefixes)
	r.s.stats.clientData.Add(1)
	r.s.stats.prefixes.Add(uint64(len(r.prefixes)))
	if len(r.buf) >= flushBytes {
		r.flush()
	}
}

// reply appends a LEASEQUERY-REPLY without client data.
func (r *responder) reply(status uint16, text string) {
	buf, at := beginFrame(r.buf, dhcp6.MsgLeasequeryReply, r.q.xid)
	buf = appendReplyHead(buf, r.s.opt.ServerID, r.q.clientID)
	if status != dhcp6.StatusSuccess {
		buf = dhcp6.AppendStatus(buf, status, text)
	}
	r.buf, _ = endFrame(buf, at)
}

// done appends the LEASEQUERY-DONE.
func (r *responder) done(status uint16, text string) {
	buf, at := beginFrame(r.buf, dhcp6.MsgLeasequeryDone, r.q.xid)
	// A DONE always carries its status, Success too: RFC 5460 allows
	// it, and Wireshark's dissector (4.0, Debian 12) flags a DONE with no
	// option at all as malformed, which would hide real faults in traces.
	buf = dhcp6.AppendStatus(buf, status, text)
	r.buf, _ = endFrame(buf, at)
}

func (r *responder) flush() {
	if len(r.buf) == 0 || r.err != nil {
		return
	}
	r.err = r.cc.write(r.buf)
	r.buf = r.buf[:0]
}
