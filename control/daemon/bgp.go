package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pdrelay/pdrelay/control/api"
	"github.com/pdrelay/pdrelay/control/bgp"
	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/config"
	"github.com/pdrelay/pdrelay/fib"
)

// advertiser announces the delegated prefixes over BGP (RFC 8987 R-4,
// control/bgp). It follows the bindings as a sink, and announces the
// restored ones (the FIB's routes at start, as the kernel guard takes
// them) before its sessions come up. A nil *advertiser (no bgp key) does
// nothing.
type advertiser struct {
	sp  *bgp.Speaker
	log *slog.Logger
}

// newAdvertiser returns the advertiser of cfg's bgp section; nil without
// one. Without bgp.next_hop the uplink's global address at start is the
// next hop; none is an error.
func newAdvertiser(cfg *config.Config, log *slog.Logger) (*advertiser, error) {
	if cfg.BGP == nil {
		return nil, nil
	}
	bc, err := speakerConfig(cfg, globalAddr)
	if err != nil {
		return nil, err
	}
	sp, err := bgp.New(bc, log)
	if err != nil {
		return nil, err
	}
	if cfg.Dataplane.Mode == config.DataplaneOff {
		log.Warn("bgp announces the delegated prefixes, but dataplane.mode is off: pdrelay routes none of them; "+
			"whatever routes them must be set up beside it", "next_hop", bc.NextHop)
	}
	return &advertiser{sp: sp, log: log}, nil
}

// speakerConfig is the Speaker's config from cfg's bgp section; uplinkAddr
// finds the uplink's global address when next_hop is not set.
func speakerConfig(cfg *config.Config, uplinkAddr func(ifname string) netip.Addr) (bgp.Config, error) {
	b := cfg.BGP
	c := bgp.Config{
		ASN: b.ASN, RouterID: b.RouterID, NextHop: b.NextHop,
		Communities: b.Communities, Aggregates: b.Aggregates,
		RestartTime: b.RestartTime, ListenPort: b.ListenPort,
	}
	if c.ListenPort == 0 {
		c.ListenPort = -1 // bgp.listen_port 0: accept none
	}
	if !c.NextHop.IsValid() {
		c.NextHop = uplinkAddr(cfg.Uplink.Interface)
		if !c.NextHop.IsValid() {
			return c, fmt.Errorf("bgp.next_hop: not set, and the uplink %s has no global IPv6 address to announce as the next hop", cfg.Uplink.Interface)
		}
	}
	for _, n := range b.Neighbors {
		c.Neighbors = append(c.Neighbors, bgp.Neighbor{
			Address: n.Address, ASN: n.ASN, Passive: n.Passive, Password: n.Password, Port: uint16(n.Port),
		})
	}
	return c, nil
}

// sinks adds the Speaker's sink to s; no bgp, no sink.
func (a *advertiser) sinks(s []binding.Sink) []binding.Sink {
	if a == nil {
		return s
	}
	return append(s, a.sp.Sink)
}

// start hands the Speaker the restored bindings, registers its metrics,
// serves GET /v1/bgp with it and runs it as the part "bgp".
func (a *advertiser) start(spawn func(string, func() error), ctx context.Context, restored *fib.Snapshot,
	reg *prometheus.Registry, apiSrv *api.Server) {
	if a == nil {
		return
	}
	a.sp.Restore(func(yield func(netip.Prefix) bool) {
		for r := range restored.Routes() {
			if !yield(r.Prefix) {
				return
			}
		}
	})
	reg.MustRegister(a.sp)
	apiSrv.BGP = a.status
	spawn("bgp", func() error { return a.sp.Run(ctx) })
}

// reconfigure applies a reloaded config's bgp section to the running
// Speaker (see bgp.Speaker.Reconfigure); adding or removing the whole
// section needs a restart.
func (a *advertiser) reconfigure(ctx context.Context, cfg *config.Config) error {
	switch {
	case a == nil && cfg.BGP == nil:
		return nil
	case a == nil:
		return errors.New("bgp: the section was added; a restart starts the BGP speaker")
	case cfg.BGP == nil:
		return errors.New("bgp: the section was removed; a restart stops the BGP speaker (the peers then withdraw after the restart time)")
	}
	bc, err := speakerConfig(cfg, globalAddr)
	if err != nil {
		return err
	}
	return a.sp.Reconfigure(ctx, bc)
}

// status serves GET /v1/bgp.
func (a *advertiser) status(ctx context.Context) (api.BGPStatusJSON, error) {
	st, err := a.sp.Status(ctx)
	if err != nil {
		return api.BGPStatusJSON{}, err
	}
	return bgpStatusJSON(st, time.Now()), nil
}

func bgpStatusJSON(st bgp.Status, now time.Time) api.BGPStatusJSON {
	out := api.BGPStatusJSON{
		ASN: st.ASN, Prefixes: st.Prefixes, Delegated: st.Delegated,
		Sessions: make([]api.BGPSessionJSON, 0, len(st.Sessions)),
	}
	if st.RouterID.IsValid() {
		out.RouterID = st.RouterID.String()
	}
	if st.NextHop.IsValid() {
		out.NextHop = st.NextHop.String()
	}
	for _, s := range st.Sessions {
		j := api.BGPSessionJSON{
			Peer: s.Peer.String(), PeerASN: s.PeerASN, State: s.State,
			PrefixesSent: s.PrefixesSent, PrefixesReceived: s.PrefixesReceived,
			UpdatesSent: s.UpdatesSent, UpdatesReceived: s.UpdatesReceived,
			Flaps: s.Flaps, GracefulRestart: s.GracefulRestart, LastError: s.LastError,
		}
		if !s.Since.IsZero() {
			since := s.Since.UTC()
			j.Since = &since
			if s.Established() {
				j.UptimeSeconds = int64(max(now.Sub(since), 0) / time.Second)
			}
		}
		out.Sessions = append(out.Sessions, j)
	}
	return out
}
