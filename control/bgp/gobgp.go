package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// Session timers. The hold time is BGP's usual 90 s. A peer that is down
// is called again every connectRetry: after a restart of the peer (or of
// pdrelay behind a passive peer) the session is back within seconds, well
// inside the restart time.
const (
	holdTime     = 90
	keepalive    = 30
	connectRetry = 5
	// deferralTime bounds how long, after a restart, the Speaker waits for
	// the peers' End-of-RIB before it sends its own table (RFC 4724 4.1,
	// the Selection_Deferral_Timer). pdrelay selects nothing from what the
	// peers send, so there is nothing to wait for beyond a peer that is
	// slow to send its End-of-RIB; a peer that never comes up must not
	// hold the others' announcements for long.
	deferralTime = 2
	// pathBatch is how many paths one GoBGP call takes: its management
	// loop is held for one call, so sessions keep being served between
	// batches of a large table.
	pathBatch = 2048
)

// ipv6Unicast is the one address family the Speaker speaks.
var ipv6Unicast = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}

// globalIPv6Unicast is IPv6 unicast in api.Global.Families (oc's
// AfiSafiTypeToIntMap).
const globalIPv6Unicast = 1

// start creates and starts the BGP server, fills its table and adds the
// neighbours. restarting sets the Restart State and Forwarding State bits
// in the OPENs (RFC 4724): the peers keep what they hold from the last run
// until the End-of-RIB that follows the table.
func (s *Speaker) start(restarting bool) error {
	c := &s.cfg
	srv := server.NewBgpServer(server.LoggerOption(s.gobgpLogger()))
	go srv.Serve()
	err := srv.StartBgp(context.Background(), &api.StartBgpRequest{Global: &api.Global{
		Asn:        c.ASN,
		RouterId:   c.RouterID.String(),
		ListenPort: c.listenPort(),
		Families:   []uint32{globalIPv6Unicast},
	}})
	if err != nil {
		srv.Stop()
		return fmt.Errorf("start bgp (asn %d, router id %s, port %d): %w", c.ASN, c.RouterID, c.listenPort(), err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	if err := srv.WatchEvent(wctx, server.WatchEventMessageCallbacks{OnPeerUpdate: s.peerEvent}, server.WatchPeer()); err != nil {
		s.log.Warn("bgp: no session events (state changes are not logged)", "err", err)
	}
	s.srv, s.stopWatch = srv, cancel
	s.cur.Store(srv)
	s.shown.Store(&Config{ASN: c.ASN, RouterID: c.RouterID, NextHop: c.NextHop})
	s.stats.restarts.Add(1)
	// The whole table before any session: a session that comes up gets
	// it all, then End-of-RIB.
	s.announce(s.all())
	s.counted()
	for _, n := range c.Neighbors {
		if err := s.addPeer(n, restarting); err != nil {
			s.log.Error("bgp neighbor not added", "peer", n.Address, "err", err)
		}
	}
	return nil
}

// stop ends every session without a NOTIFICATION to peers that
// negotiated graceful restart (they keep the routes as stale for the
// restart time) and with a Cease to the others, then stops the server.
func (s *Speaker) stop() {
	srv := s.srv
	if srv == nil {
		return
	}
	s.srv = nil
	s.cur.Store(nil)
	if err := srv.StopBgp(context.Background(), &api.StopBgpRequest{AllowGracefulRestart: true}); err != nil {
		s.log.Error("bgp stop", "err", err)
	}
	s.stopWatch()
	// srv.Stop would also end GoBGP's idle BFD goroutine, but it calls
	// StopBgp again, which fails (and logs an error) on a stopped
	// server; that goroutine waits on channels and costs nothing.
}

// addPeer adds one neighbour to the running server.
func (s *Speaker) addPeer(n Neighbor, restarting bool) error {
	if s.srv == nil {
		return nil
	}
	if err := s.srv.AddPeer(context.Background(), &api.AddPeerRequest{Peer: peerConf(&s.cfg, n, restarting)}); err != nil {
		return fmt.Errorf("add bgp neighbor %s: %w", n.Address, err)
	}
	s.log.Info("bgp neighbor added", "peer", n.Address, "asn", n.ASN, "passive", n.Passive,
		"md5", n.Password != "", "restarting", restarting)
	return nil
}

// deletePeer deletes a neighbour: GoBGP sends it a Cease (Peer
// De-configured), and the peer withdraws what it learned from pdrelay.
func (s *Speaker) deletePeer(n Neighbor, why string) {
	if s.srv == nil {
		return
	}
	s.peers.forget(n.Address)
	if err := s.srv.DeletePeer(context.Background(), &api.DeletePeerRequest{Address: n.Address.String()}); err != nil {
		s.log.Error("bgp neighbor not deleted", "peer", n.Address, "err", err)
		return
	}
	s.log.Info("bgp neighbor deleted", "peer", n.Address, "reason", why)
}

// peerConf is GoBGP's configuration of neighbour n: IPv6 unicast only,
// graceful restart with the configured restart time.
func peerConf(c *Config, n Neighbor, restarting bool) *api.Peer {
	port := uint32(n.Port)
	if port == 0 {
		port = DefaultPort
	}
	return &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: n.Address.String(),
			PeerAsn:         n.ASN,
			AuthPassword:    n.Password,
		},
		Transport: &api.Transport{PassiveMode: n.Passive, RemotePort: port},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry: connectRetry, HoldTime: holdTime, KeepaliveInterval: keepalive,
		}},
		GracefulRestart: &api.GracefulRestart{
			Enabled:      true,
			RestartTime:  c.restartSeconds(),
			DeferralTime: deferralTime,
			// RFC 8538: with the N-bit on both sides a NOTIFICATION
			// (other than Hard Reset) keeps the routes too, so a
			// session the peer resets (or whose hold timer expires)
			// does not withdraw them; a deleted neighbour gets a Hard
			// Reset and withdraws them.
			NotificationEnabled: true,
			LocalRestarting:     restarting,
		},
		AfiSafis: []*api.AfiSafi{{
			Config:            &api.AfiSafiConfig{Family: ipv6Unicast, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}},
		}},
	}
}

// announce adds ps to the local table with the configured attributes;
// GoBGP sends them to the established sessions. A prefix already there is
// replaced (implicit withdraw of the old attributes).
func (s *Speaker) announce(ps []netip.Prefix) {
	if s.srv == nil || len(ps) == 0 {
		return
	}
	origin := bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)
	var comm bgp.PathAttributeInterface
	if len(s.cfg.Communities) > 0 {
		comm = bgp.NewPathAttributeCommunities(s.cfg.Communities)
	}
	paths := make([]*apiutil.Path, 0, min(len(ps), pathBatch))
	for i, p := range ps {
		nlri, err := bgp.NewIPAddrPrefix(p)
		if err != nil {
			s.applyError("announce", p, err)
			continue
		}
		mp, err := bgp.NewPathAttributeMpReachNLRI(bgp.RF_IPv6_UC, []bgp.PathNLRI{{NLRI: nlri}}, s.cfg.NextHop)
		if err != nil {
			s.applyError("announce", p, err)
			continue
		}
		attrs := []bgp.PathAttributeInterface{origin, mp}
		if comm != nil {
			attrs = append(attrs, comm)
		}
		paths = append(paths, &apiutil.Path{Family: bgp.RF_IPv6_UC, Nlri: nlri, Attrs: attrs})
		if len(paths) == pathBatch || i == len(ps)-1 {
			resp, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: paths})
			s.stats.announces.Add(uint64(len(paths)))
			if err != nil {
				s.applyErrors("announce", paths, resp, err)
			}
			paths = paths[:0]
		}
	}
}

// withdraw takes ps out of the local table; GoBGP withdraws them from the
// sessions.
func (s *Speaker) withdraw(ps []netip.Prefix) {
	if s.srv == nil || len(ps) == 0 {
		return
	}
	paths := make([]*apiutil.Path, 0, min(len(ps), pathBatch))
	for i, p := range ps {
		nlri, err := bgp.NewIPAddrPrefix(p)
		if err != nil {
			s.applyError("withdraw", p, err)
			continue
		}
		paths = append(paths, &apiutil.Path{Family: bgp.RF_IPv6_UC, Nlri: nlri, Withdrawal: true})
		if len(paths) == pathBatch || i == len(ps)-1 {
			err := s.srv.DeletePath(apiutil.DeletePathRequest{Paths: paths})
			s.stats.withdraws.Add(uint64(len(paths)))
			if err != nil {
				s.stats.applyErrs.Add(uint64(len(paths)))
				s.log.Error("bgp withdraw failed", "prefixes", len(paths), "first", p, "err", err)
			}
			paths = paths[:0]
		}
	}
}

func (s *Speaker) applyError(op string, p netip.Prefix, err error) {
	s.stats.applyErrs.Add(1)
	s.log.Error("bgp "+op+" failed", "prefix", p, "err", err)
}

// applyErrors logs a failed AddPath: the paths it refused one by one
// (at most a few), or the call's error.
func (s *Speaker) applyErrors(op string, paths []*apiutil.Path, resp []apiutil.AddPathResponse, err error) {
	n := 0
	for i, r := range resp {
		if r.Error == nil || i >= len(paths) {
			continue
		}
		if n++; n <= 3 {
			s.log.Error("bgp "+op+" failed", "prefix", paths[i].Nlri.String(), "err", r.Error)
		}
	}
	if n == 0 {
		n = len(paths)
		s.log.Error("bgp "+op+" failed", "prefixes", n, "err", err)
	}
	s.stats.applyErrs.Add(uint64(n))
}

// gobgpLogger is the logger GoBGP gets: its warnings and errors, and at
// debug its state changes too (its own debug is per message).
func (s *Speaker) gobgpLogger() (*slog.Logger, *slog.LevelVar) {
	lv := new(slog.LevelVar)
	lv.Set(slog.LevelWarn)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		lv.Set(slog.LevelInfo)
	}
	return s.log.With("part", "gobgp"), lv
}

// peerEvent logs session state changes; GoBGP calls it from its watcher
// goroutine.
func (s *Speaker) peerEvent(ev *apiutil.WatchEventMessage_PeerEvent, at time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	st := &ev.Peer.State
	addr := ev.Peer.Conf.NeighborAddress
	old := s.peers.set(addr, st.SessionState, at)
	switch {
	case st.SessionState == bgp.BGP_FSM_ESTABLISHED:
		s.log.Info("bgp session established", "peer", addr, "asn", st.PeerASN, "router_id", st.RouterID,
			"graceful_restart", hasGR(st.RemoteCap))
	case old == bgp.BGP_FSM_ESTABLISHED:
		s.log.Warn("bgp session down", "peer", addr, "asn", st.PeerASN, "state", stateName(st.SessionState),
			"reason", reasonName(st.DisconnectReason), "message", st.DisconnectMessage)
	}
}

func hasGR(caps []bgp.ParameterCapabilityInterface) bool {
	for _, c := range caps {
		if c.Code() == bgp.BGP_CAP_GRACEFUL_RESTART {
			return true
		}
	}
	return false
}

// stateName is the RFC 4271 name of a session state, in lower case.
func stateName(st bgp.FSMState) string {
	switch st {
	case bgp.BGP_FSM_IDLE:
		return "idle"
	case bgp.BGP_FSM_CONNECT:
		return "connect"
	case bgp.BGP_FSM_ACTIVE:
		return "active"
	case bgp.BGP_FSM_OPENSENT:
		return "opensent"
	case bgp.BGP_FSM_OPENCONFIRM:
		return "openconfirm"
	case bgp.BGP_FSM_ESTABLISHED:
		return "established"
	}
	return "unknown"
}

// reasonName is why a session went down, in lower case: "read_failed",
// "hold_timer_expired", "notification_received", ...
func reasonName(r api.PeerState_DisconnectReason) string {
	if _, known := api.PeerState_DisconnectReason_name[int32(r)]; !known {
		return "unknown"
	}
	return strings.ToLower(strings.TrimPrefix(r.String(), "DISCONNECT_REASON_"))
}
