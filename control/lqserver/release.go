package lqserver

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// Default RELEASE-REQUEST message types: experimental, from the
// unassigned range (the draft has no IANA numbers; ARCHITECTURE.md,
// "Code points").
const (
	DefaultReleaseRequestType = dhcp6.MessageType(250)
	DefaultReleaseReplyType   = dhcp6.MessageType(251)
)

// Reasons a RELEASE-REQUEST is discarded (draft-gandhewar section 3.2.1,
// and lqserver's own access list).
const (
	DiscardMalformed        = "malformed"
	DiscardNotRequest       = "not-release-request"
	DiscardNoRelayID        = "no-relay-id"
	DiscardNoClientData     = "no-client-data"
	DiscardNoClientID       = "no-client-id"
	DiscardNoServerID       = "no-server-id"
	DiscardServerIDMismatch = "server-id-mismatch"
	DiscardNotAllowed       = "relay-not-allowed"
)

var discardReasons = []string{DiscardMalformed, DiscardNotRequest, DiscardNoRelayID, DiscardNoClientData,
	DiscardNoClientID, DiscardNoServerID, DiscardServerIDMismatch, DiscardNotAllowed}

// ReleaseOptions configure a ReleaseServer.
type ReleaseOptions struct {
	Kea *Kea
	// ServerID is Kea's DUID: a RELEASE-REQUEST must name it. Required.
	ServerID []byte
	// RequestType and ReplyType are the message types (0: the defaults).
	RequestType, ReplyType dhcp6.MessageType
	// Allow, when not empty, lists the relay source prefixes accepted;
	// requests from elsewhere are discarded.
	Allow  []netip.Prefix
	Logger *slog.Logger
}

// ReleaseServer answers RELEASE-REQUEST (draft-gandhewar-dhc-v6-relay-
// initiated-release-01 section 4.3) by deleting the named IA_PD leases
// from Kea.
type ReleaseServer struct {
	opt ReleaseOptions
	log *slog.Logger

	mu        sync.Mutex
	discarded map[string]uint64
	lastLog   map[string]time.Time
	requests  atomic.Uint64
	released  atomic.Uint64
	failed    atomic.Uint64
}

// NewReleaseServer checks opt: without Kea's server DUID no request can
// be validated, so none is accepted.
func NewReleaseServer(opt ReleaseOptions) (*ReleaseServer, error) {
	if opt.Kea == nil {
		return nil, errors.New("release server: no kea client")
	}
	if len(opt.ServerID) == 0 {
		return nil, fmt.Errorf("release server: %w (pass --server-id)", ErrServerIDUnknown)
	}
	if opt.RequestType == 0 {
		opt.RequestType = DefaultReleaseRequestType
	}
	if opt.ReplyType == 0 {
		opt.ReplyType = DefaultReleaseReplyType
	}
	if opt.RequestType == opt.ReplyType {
		return nil, fmt.Errorf("release server: request and reply types are both %d", opt.RequestType)
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &ReleaseServer{opt: opt, log: log, discarded: map[string]uint64{}, lastLog: map[string]time.Time{}}, nil
}

// ReleaseStats are a ReleaseServer's counters.
type ReleaseStats struct {
	Requests  uint64            // RELEASE-REQUESTs answered
	Released  uint64            // leases deleted from Kea
	Failed    uint64            // prefixes or clients answered with a failure status
	Discarded map[string]uint64 // by reason (Discard*)
}

// Stats returns a snapshot of the counters.
func (rs *ReleaseServer) Stats() ReleaseStats {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	d := make(map[string]uint64, len(discardReasons))
	for _, r := range discardReasons {
		d[r] = rs.discarded[r]
	}
	return ReleaseStats{Requests: rs.requests.Load(), Released: rs.released.Load(), Failed: rs.failed.Load(), Discarded: d}
}

// discard counts a dropped request and logs it, at most once a second
// per reason.
func (rs *ReleaseServer) discard(reason string, src netip.AddrPort, err error) {
	rs.mu.Lock()
	rs.discarded[reason]++
	n := rs.discarded[reason]
	now := time.Now()
	quiet := now.Sub(rs.lastLog[reason]) < time.Second
	if !quiet {
		rs.lastLog[reason] = now
	}
	rs.mu.Unlock()
	if !quiet {
		args := []any{"reason", reason, "from", src.String(), "discarded_total", n}
		if err != nil {
			args = append(args, "error", err.Error())
		}
		rs.log.Warn("release-request discarded", args...)
	}
}

// ReleaseRequest is a validated RELEASE-REQUEST.
type ReleaseRequest struct {
	XID         [3]byte
	RelayID     []byte
	InterfaceID []byte // nil if absent
	Clients     []ReleaseClient
}

// ReleaseClient is one Client Data of a RELEASE-REQUEST.
type ReleaseClient struct {
	DUID []byte
	// Prefixes are the IAPREFIXes to release: those directly in the
	// Client Data (IAID 0, InIAPD false) and those inside IA_PDs.
	Prefixes []ReleasePrefix
	// IAIDs are IA_PDs named without any IAPREFIX: release every prefix
	// of the client in that IA.
	IAIDs []uint32
	// All is set when the Client Data names no IA: release every
	// prefix of the client.
	All bool
}

// ReleasePrefix is one prefix named for release.
type ReleasePrefix struct {
	Prefix netip.Prefix
	InIAPD bool
	IAID   uint32
}

// errDiscard carries the reason a request is discarded.
type errDiscard struct {
	reason string
	err    error
}

func (e *errDiscard) Error() string {
	if e.err != nil {
		return e.reason + ": " + e.err.Error()
	}
	return e.reason
}

// ParseReleaseRequest validates a RELEASE-REQUEST of type reqType as
// section 3.2.1 of the draft says a server must: a Relay-ID, at least one
// Client Data, a Client-ID in each, a Server-ID equal to serverID.
func ParseReleaseRequest(b []byte, reqType dhcp6.MessageType, serverID []byte) (*ReleaseRequest, error) {
	m, err := dhcp6.ParseMessage(b)
	if err != nil {
		return nil, &errDiscard{DiscardMalformed, err}
	}
	if m.Type != reqType {
		return nil, &errDiscard{DiscardNotRequest, fmt.Errorf("message type %d", m.Type)}
	}
	req := &ReleaseRequest{XID: m.XID}
	rid, ok := m.Options.Get(dhcp6.OptRelayID)
	if !ok || len(rid) == 0 {
		return nil, &errDiscard{DiscardNoRelayID, nil}
	}
	req.RelayID = rid
	sid, ok := m.Options.Get(dhcp6.OptServerID)
	if !ok {
		return nil, &errDiscard{DiscardNoServerID, nil}
	}
	if !bytes.Equal(sid, serverID) {
		return nil, &errDiscard{DiscardServerIDMismatch, fmt.Errorf("server id %x", sid)}
	}
	if ifid, ok := m.Options.Get(dhcp6.OptInterfaceID); ok {
		req.InterfaceID = ifid
	}
	for data := range m.Options.Each(dhcp6.OptClientData) {
		cd, err := dhcp6.ParseClientData(data)
		if err != nil {
			return nil, &errDiscard{DiscardMalformed, err}
		}
		if len(cd.ClientID) == 0 {
			return nil, &errDiscard{DiscardNoClientID, nil}
		}
		rc := ReleaseClient{DUID: cd.ClientID}
		for _, p := range cd.Prefixes {
			rc.Prefixes = append(rc.Prefixes, ReleasePrefix{Prefix: p.Prefix})
		}
		for _, ia := range cd.IAPDs {
			if _, ok := ia.Options.Get(dhcp6.OptIAPrefix); !ok {
				rc.IAIDs = append(rc.IAIDs, ia.IAID)
			}
			for pd := range ia.Options.Each(dhcp6.OptIAPrefix) {
				p, err := dhcp6.ParseIAPrefix(pd)
				if err != nil {
					return nil, &errDiscard{DiscardMalformed, err}
				}
				rc.Prefixes = append(rc.Prefixes, ReleasePrefix{Prefix: p.Prefix, InIAPD: true, IAID: ia.IAID})
			}
		}
		_, hasNA := cd.Options.Get(dhcp6.OptIANA)
		_, hasAddr := cd.Options.Get(dhcp6.OptIAAddr)
		rc.All = len(cd.Prefixes) == 0 && len(cd.IAPDs) == 0 && !hasNA && !hasAddr
		req.Clients = append(req.Clients, rc)
	}
	if len(req.Clients) == 0 {
		return nil, &errDiscard{DiscardNoClientData, nil}
	}
	return req, nil
}

// prefixResult is the outcome of releasing one prefix.
type prefixResult struct {
	ReleasePrefix
	status uint16
	text   string
}

// Handle processes one datagram from src and returns the reply to send,
// nil when the datagram is discarded.
func (rs *ReleaseServer) Handle(ctx context.Context, src netip.AddrPort, b []byte) []byte {
	if len(rs.opt.Allow) > 0 {
		ok := false
		for _, p := range rs.opt.Allow {
			ok = ok || p.Contains(src.Addr().Unmap())
		}
		if !ok {
			rs.discard(DiscardNotAllowed, src, nil)
			return nil
		}
	}
	req, err := ParseReleaseRequest(b, rs.opt.RequestType, rs.opt.ServerID)
	if err != nil {
		var d *errDiscard
		if errors.As(err, &d) {
			rs.discard(d.reason, src, d.err)
		}
		return nil
	}
	rs.requests.Add(1)
	reply := dhcp6.AppendHeader(nil, rs.opt.ReplyType, req.XID)
	reply = dhcp6.AppendStatus(reply, dhcp6.StatusSuccess, "")
	reply = dhcp6.AppendOption(reply, dhcp6.OptServerID, rs.opt.ServerID)
	if req.InterfaceID != nil {
		reply = dhcp6.AppendOption(reply, dhcp6.OptInterfaceID, req.InterfaceID)
	}
	released, failed := 0, 0
	for i := range req.Clients {
		rc := &req.Clients[i]
		results, clientStatus, n := rs.releaseClient(ctx, rc)
		released += n
		if clientStatus == dhcp6.StatusSuccess && len(results) == 0 {
			continue
		}
		failed += max(len(results), 1)
		var at int
		reply, at = beginOption(reply, dhcp6.OptClientData)
		reply = dhcp6.AppendOption(reply, dhcp6.OptClientID, rc.DUID)
		if clientStatus != dhcp6.StatusSuccess {
			reply = dhcp6.AppendStatus(reply, clientStatus, dhcp6.StatusName(clientStatus))
		}
		for _, pr := range results {
			st := dhcp6.AppendStatus(nil, pr.status, pr.text)
			p := dhcp6.AppendIAPrefix(nil, dhcp6.IAPrefix{Prefix: pr.Prefix, Options: st})
			if pr.InIAPD {
				reply = dhcp6.AppendIAPD(reply, pr.IAID, 0, 0, p)
			} else {
				reply = append(reply, p...)
			}
		}
		reply = endOption(reply, at)
	}
	rs.released.Add(uint64(released))
	rs.failed.Add(uint64(failed))
	rs.log.Info("release-request", "from", src.String(), "xid", hex.EncodeToString(req.XID[:]),
		"relay_id", hex.EncodeToString(req.RelayID), "clients", len(req.Clients),
		"released", released, "failed", failed)
	if len(reply) > 0xffff {
		return nil // cannot happen for a request that fitted a datagram
	}
	return reply
}

// releaseClient releases what rc names. It returns the prefixes that
// failed, a client-level status (NoBinding for a client named with no IA
// that holds nothing), and how many leases were deleted.
func (rs *ReleaseServer) releaseClient(ctx context.Context, rc *ReleaseClient) ([]prefixResult, uint16, int) {
	var failed []prefixResult
	n := 0
	for _, p := range rc.Prefixes {
		status, text := rs.releasePrefix(ctx, rc.DUID, p.Prefix)
		if status == dhcp6.StatusSuccess {
			n++
			continue
		}
		failed = append(failed, prefixResult{p, status, text})
	}
	if !rc.All && len(rc.IAIDs) == 0 {
		return failed, dhcp6.StatusSuccess, n
	}
	// Whole IAs, or the whole client: whatever Kea holds for it.
	ls, err := rs.opt.Kea.LeasesByDUID(ctx, rc.DUID)
	if err != nil {
		rs.log.Warn("release-request: kea", "client", hex.EncodeToString(rc.DUID), "error", err.Error())
		return failed, dhcp6.StatusUnspecFail, n
	}
	found := 0
	for _, l := range ls {
		if l.Type != TypePD || (!rc.All && !slices.Contains(rc.IAIDs, l.IAID)) {
			continue
		}
		found++
		ok, err := rs.opt.Kea.DeleteLease(ctx, TypePD, l.Prefix.Addr())
		switch {
		case err != nil:
			failed = append(failed, prefixResult{ReleasePrefix{Prefix: l.Prefix}, dhcp6.StatusUnspecFail, "kea: " + err.Error()})
		case ok:
			n++
		}
	}
	if found == 0 && len(rc.Prefixes) == 0 {
		return failed, dhcp6.StatusNoBinding, n
	}
	return failed, dhcp6.StatusSuccess, n
}

// releasePrefix deletes the IA_PD lease of p if Kea holds it for duid.
// Kea's lease6-del by address does not look at the client, so the lease
// is read first; a lease reassigned between the two commands (a window
// of one round trip to Kea) would be deleted anyway.
func (rs *ReleaseServer) releasePrefix(ctx context.Context, duid []byte, p netip.Prefix) (uint16, string) {
	kea := rs.opt.Kea
	l, err := kea.GetLease(ctx, TypePD, p.Addr())
	if err != nil {
		return dhcp6.StatusUnspecFail, "kea: " + err.Error()
	}
	if l == nil || l.Prefix != p || !bytes.Equal(l.DUID, duid) {
		return dhcp6.StatusNoBinding, "no such binding"
	}
	ok, err := kea.DeleteLease(ctx, TypePD, p.Addr())
	switch {
	case err != nil:
		return dhcp6.StatusUnspecFail, "kea: " + err.Error()
	case !ok:
		return dhcp6.StatusNoBinding, "no such binding"
	}
	return dhcp6.StatusSuccess, ""
}

// Serve answers RELEASE-REQUESTs on pc until ctx ends. Requests are
// handled one at a time, in arrival order.
func (rs *ReleaseServer) Serve(ctx context.Context, pc net.PacketConn) error {
	rs.log.Info("release-request listening", "addr", pc.LocalAddr().String(),
		"request_type", int(rs.opt.RequestType), "reply_type", int(rs.opt.ReplyType))
	defer rs.log.Info("release-request stopped", "addr", pc.LocalAddr().String())
	stop := context.AfterFunc(ctx, func() { pc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("release-request read: %w", err)
		}
		src := addrPortOfUDP(from)
		reply := rs.Handle(ctx, src, buf[:n])
		if reply == nil {
			continue
		}
		if _, err := pc.WriteTo(reply, from); err != nil {
			rs.log.Warn("release-request reply not sent", "to", src.String(), "error", err.Error())
		}
	}
}

func addrPortOfUDP(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
