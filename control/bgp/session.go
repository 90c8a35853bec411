package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// Session is one neighbour's session as the operator sees it.
type Session struct {
	Peer    netip.Addr
	PeerASN uint32
	// State is the RFC 4271 state in lower case: idle, connect, active,
	// opensent, openconfirm, established.
	State string
	// Since is when the session came up (State established) or when it
	// last went down; zero if it never came up.
	Since time.Time
	// PrefixesSent is how many prefixes the session carries to the peer
	// (GoBGP's Adj-RIB-Out for it); PrefixesReceived how many the peer
	// sent (pdrelay uses none of them).
	PrefixesSent     uint64
	PrefixesReceived uint64
	// UpdatesSent and UpdatesReceived count UPDATE messages since the
	// neighbour was added.
	UpdatesSent     uint64
	UpdatesReceived uint64
	// Flaps counts how often the session went down after being up.
	Flaps uint32
	// GracefulRestart is whether the peer advertised graceful restart in
	// its last OPEN: without it a pdrelay restart withdraws the routes.
	GracefulRestart bool
	// LastError is why the session last went down, if it did.
	LastError string
}

// Established reports whether the session is up.
func (s *Session) Established() bool { return s.State == stateName(bgp.BGP_FSM_ESTABLISHED) }

// Status is the Speaker as the operator sees it.
type Status struct {
	ASN      uint32
	RouterID netip.Addr
	NextHop  netip.Addr
	// Prefixes is how many prefixes the local table holds: the delegated
	// ones and the aggregates.
	Prefixes int64
	// Delegated is how many of them are delegated prefixes.
	Delegated int64
	Sessions  []Session
}

// Status returns the Speaker's sessions, sorted by peer address. While
// the BGP server is not running (before Run, after it, or during a
// restart for a new identity) Sessions is empty.
func (s *Speaker) Status(ctx context.Context) (Status, error) {
	st := Status{Prefixes: s.stats.announced.Load(), Delegated: s.stats.delegated.Load()}
	if c := s.shown.Load(); c != nil {
		st.ASN, st.RouterID, st.NextHop = c.ASN, c.RouterID, c.NextHop
	}
	srv := s.cur.Load()
	if srv == nil {
		return st, nil
	}
	err := srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		st.Sessions = append(st.Sessions, s.session(p))
	})
	if err != nil {
		return st, fmt.Errorf("list bgp sessions: %w", err)
	}
	slices.SortFunc(st.Sessions, func(a, b Session) int { return a.Peer.Compare(b.Peer) })
	return st, nil
}

func (s *Speaker) session(p *api.Peer) Session {
	var out Session
	if c := p.GetConf(); c != nil {
		out.Peer, _ = netip.ParseAddr(c.NeighborAddress)
		out.PeerASN = c.PeerAsn
	}
	if st := p.GetState(); st != nil {
		out.State = apiStateName(st.SessionState)
		out.Flaps = st.Flops
		if m := st.GetMessages(); m != nil {
			out.UpdatesSent = m.GetSent().GetUpdate()
			out.UpdatesReceived = m.GetReceived().GetUpdate()
		}
		for _, c := range st.RemoteCap {
			if c.GetGracefulRestart() != nil {
				out.GracefulRestart = true
			}
		}
		if st.SessionState != api.PeerState_SESSION_STATE_ESTABLISHED && st.DisconnectReason != api.PeerState_DISCONNECT_REASON_UNSPECIFIED {
			out.LastError = reasonName(st.DisconnectReason)
			if st.DisconnectMessage != "" {
				out.LastError += ": " + st.DisconnectMessage
			}
		}
	}
	if t := p.GetTimers().GetState(); t != nil {
		if out.State == "established" && t.Uptime != nil && t.Uptime.Seconds > 0 {
			out.Since = t.Uptime.AsTime()
		} else if t.Downtime != nil && t.Downtime.Seconds > 0 {
			out.Since = t.Downtime.AsTime()
		}
	}
	for _, af := range p.AfiSafis {
		if st := af.GetState(); st != nil {
			out.PrefixesSent += st.Advertised
			out.PrefixesReceived += st.Received
		}
	}
	if out.Since.IsZero() {
		// GoBGP keeps times in whole seconds; the watcher saw the change.
		out.Since = s.peers.since(out.Peer)
	}
	return out
}

func apiStateName(st api.PeerState_SessionState) string {
	switch st {
	case api.PeerState_SESSION_STATE_IDLE, api.PeerState_SESSION_STATE_UNSPECIFIED:
		return "idle"
	case api.PeerState_SESSION_STATE_CONNECT:
		return "connect"
	case api.PeerState_SESSION_STATE_ACTIVE:
		return "active"
	case api.PeerState_SESSION_STATE_OPENSENT:
		return "opensent"
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return "openconfirm"
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return "established"
	}
	return "unknown(" + strconv.Itoa(int(st)) + ")"
}

// peerStates is the last state the watcher saw of each neighbour.
type peerStates struct {
	mu sync.Mutex
	m  map[netip.Addr]peerState
}

type peerState struct {
	state bgp.FSMState
	at    time.Time
}

// set records st for addr and returns the state before.
func (p *peerStates) set(addr netip.Addr, st bgp.FSMState, at time.Time) (old bgp.FSMState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev, seen := p.m[addr]
	if !seen {
		prev.state = bgp.BGP_FSM_IDLE
	}
	if prev.state != st {
		p.m[addr] = peerState{st, at}
	}
	return prev.state
}

func (p *peerStates) forget(addr netip.Addr) {
	p.mu.Lock()
	delete(p.m, addr)
	p.mu.Unlock()
}

func (p *peerStates) since(addr netip.Addr) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m[addr].at
}

// communityStrings formats communities as "asn:value".
func communityStrings(cs []uint32) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = fmt.Sprintf("%d:%d", c>>16, c&0xffff)
	}
	return out
}
