package bgp

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/pdrelay/pdrelay/control/binding"
)

// ErrStopped is returned by Reconfigure once Run has returned.
var ErrStopped = errors.New("bgp speaker stopped")

// Speaker announces the delegated prefixes over BGP. See the package doc
// for its contract.
type Speaker struct {
	log *slog.Logger

	mu      sync.Mutex
	pending map[netip.Prefix]bool // true: announce, false: withdraw
	wake    chan struct{}         // one token: pending has news

	restored iter.Seq[netip.Prefix] // set by Restore, consumed by Run
	reconf   chan reconfRequest
	done     chan struct{} // closed when Run returns

	// Owned by Run's goroutine.
	cfg       Config
	srv       *server.BgpServer // nil while no server runs
	stopWatch context.CancelFunc
	delegated map[netip.Prefix]struct{} // prefixes of valid bindings
	aggr      map[netip.Prefix]struct{} // the configured aggregates
	spare     map[netip.Prefix]bool     // the pending map not in use

	// Read by Status and Collect from any goroutine.
	cur   atomic.Pointer[server.BgpServer]
	shown atomic.Pointer[Config] // identity and next hop, for Status
	stats counters
	peers peerStates
}

type reconfRequest struct {
	cfg Config
	err chan error
}

// counters are the Speaker's own statistics.
type counters struct {
	announced atomic.Int64  // prefixes in the local table (delegated and aggregates)
	delegated atomic.Int64  // delegated prefixes among them
	pending   atomic.Int64  // changes waiting for Run
	announces atomic.Uint64 // prefixes handed to GoBGP to announce
	withdraws atomic.Uint64 // prefixes handed to GoBGP to withdraw
	applyErrs atomic.Uint64 // GoBGP refused an announcement or withdrawal
	restarts  atomic.Uint64 // BGP server (re)starts
}

// New returns a Speaker for cfg. log may be nil.
func New(cfg Config, log *slog.Logger) (*Speaker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bgp config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Speaker{
		log:     log,
		pending: make(map[netip.Prefix]bool),
		spare:   make(map[netip.Prefix]bool),
		wake:    make(chan struct{}, 1),
		reconf:  make(chan reconfRequest),
		done:    make(chan struct{}),
		cfg:     cfg,
		aggr:    prefixSet(cfg.Aggregates),
	}
	s.peers.m = make(map[netip.Addr]peerState)
	return s, nil
}

// Restore hands the Speaker the prefixes of the bindings restored at
// start. Run announces them with the first announcements, before any
// session comes up; changes that reach Sink meanwhile are newer and win.
// Call it before Run; seq is iterated once, on Run's goroutine.
func (s *Speaker) Restore(seq iter.Seq[netip.Prefix]) { s.restored = seq }

// Sink follows binding changes; binding.Manager calls it on its goroutine.
// It never blocks for longer than a map write per change.
func (s *Speaker) Sink(changes []binding.Change) {
	s.mu.Lock()
	for i := range changes {
		c := &changes[i]
		s.pending[c.Binding.Prefix] = c.Op != binding.Removed
	}
	s.stats.pending.Store(int64(len(s.pending)))
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default: // Run has been woken already and will see these too
	}
}

// Run starts the BGP server, announces the restored bindings and the
// aggregates, brings up the sessions, and then applies binding changes
// until ctx ends. It then ends the sessions so that the peers keep the
// routes (graceful restart) and returns nil; it returns an error only if
// the server cannot start.
func (s *Speaker) Run(ctx context.Context) error {
	defer close(s.done)
	s.delegated = s.takeRestored()
	start := time.Now()
	if err := s.start(true); err != nil {
		return err
	}
	s.log.Info("bgp speaker started", "asn", s.cfg.ASN, "router_id", s.cfg.RouterID,
		"neighbors", len(s.cfg.Neighbors), "prefixes", len(s.delegated), "aggregates", len(s.aggr),
		"next_hop", s.cfg.NextHop, "took", time.Since(start).Round(time.Millisecond))
	for {
		select {
		case <-ctx.Done():
			s.stop()
			s.log.Info("bgp speaker stopped: the peers keep the routes for the restart time (graceful restart)",
				"restart_time", time.Duration(s.cfg.restartSeconds())*time.Second)
			return nil
		case <-s.wake:
			s.flush()
		case r := <-s.reconf:
			r.err <- s.reconfigure(r.cfg)
		}
	}
}

// takeRestored builds the initial set of delegated prefixes: the restored
// ones, then the changes Sink has recorded since (newer, so they win).
func (s *Speaker) takeRestored() map[netip.Prefix]struct{} {
	set := make(map[netip.Prefix]struct{})
	if s.restored != nil {
		for p := range s.restored {
			set[p.Masked()] = struct{}{}
		}
		s.restored = nil
	}
	// A recovery at start may have filled the pending set: Sink must not
	// wait for the merge.
	pend := s.takePending()
	for p, want := range pend {
		if want {
			set[p] = struct{}{}
		} else {
			delete(set, p)
		}
	}
	clear(pend)
	s.spare = pend
	return set
}

// takePending swaps the pending set for the spare one and returns it;
// the caller hands it back cleared as s.spare.
func (s *Speaker) takePending() map[netip.Prefix]bool {
	if s.spare == nil {
		s.spare = make(map[netip.Prefix]bool)
	}
	s.mu.Lock()
	pend := s.pending
	s.pending, s.spare = s.spare, nil
	s.stats.pending.Store(0)
	s.mu.Unlock()
	return pend
}

// flush applies the pending changes: a prefix is announced when its
// binding became valid and withdrawn when it ended, unless it is also an
// aggregate. A change that undoes an earlier one not yet applied (a
// binding moved to another client, removed then added) costs nothing.
func (s *Speaker) flush() {
	start := time.Now()
	pend := s.takePending()

	var add, del []netip.Prefix
	for p, want := range pend {
		_, had := s.delegated[p]
		if want == had {
			continue
		}
		if want {
			s.delegated[p] = struct{}{}
		} else {
			delete(s.delegated, p)
		}
		if _, agg := s.aggr[p]; agg {
			continue
		}
		if want {
			add = append(add, p)
		} else {
			del = append(del, p)
		}
	}
	clear(pend)
	s.spare = pend
	s.withdraw(del)
	s.announce(add)
	s.counted()
	if len(add)+len(del) > 0 {
		s.log.Debug("bgp announcements applied", "announced", len(add), "withdrawn", len(del),
			"took", time.Since(start).Round(time.Microsecond))
	}
}

// counted updates the gauges from the owner's sets.
func (s *Speaker) counted() {
	n := len(s.delegated)
	for p := range s.aggr {
		if _, ok := s.delegated[p]; !ok {
			n++
		}
	}
	s.stats.announced.Store(int64(n))
	s.stats.delegated.Store(int64(len(s.delegated)))
}

// Reconfigure applies cfg to the running Speaker and returns once it is
// applied:
//   - new neighbours are added and removed ones deleted (they get a
//     NOTIFICATION Cease and withdraw the routes); a neighbour whose
//     settings (ASN, passive, password, port) or the restart time changed
//     is deleted and added again, so its session restarts;
//   - a new next hop or new communities are announced again for every
//     prefix, an implicit replacement: no withdrawal;
//   - aggregates added are announced and removed ones withdrawn;
//   - a new ASN, router ID or listen port restarts the BGP server as a
//     pdrelay restart would: the peers keep the routes (graceful restart).
//
// The sessions of neighbours that stay are not touched otherwise.
func (s *Speaker) Reconfigure(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("bgp config: %w", err)
	}
	r := reconfRequest{cfg: cfg, err: make(chan error, 1)}
	select {
	case s.reconf <- r:
	case <-s.done:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.err:
		return err
	case <-ctx.Done(): // it is applied all the same
		return ctx.Err()
	}
}

func (s *Speaker) reconfigure(cfg Config) error {
	old := s.cfg
	oldAggr := s.aggr
	s.cfg = cfg
	s.aggr = prefixSet(cfg.Aggregates)
	defer s.counted()
	s.shown.Store(&Config{ASN: cfg.ASN, RouterID: cfg.RouterID, NextHop: cfg.NextHop})
	if s.srv == nil || !sameGlobal(&old, &cfg) {
		// The identity changed: only a new server can carry it. Stopping
		// the old one like a pdrelay stop keeps the routes at the peers.
		s.log.Info("bgp speaker restarting for the new asn, router_id or listen_port",
			"asn", cfg.ASN, "router_id", cfg.RouterID)
		s.stop()
		return s.start(true)
	}

	oldN := make(map[netip.Addr]Neighbor, len(old.Neighbors))
	for _, n := range old.Neighbors {
		oldN[n.Address] = n
	}
	var added []Neighbor
	for _, n := range cfg.Neighbors {
		o, had := oldN[n.Address]
		delete(oldN, n.Address)
		switch {
		case !had:
			added = append(added, n)
		case !sameSession(&old, &cfg, o, n):
			s.deletePeer(o, "changed")
			added = append(added, n)
		}
	}
	for _, o := range oldN {
		s.deletePeer(o, "removed from the config")
	}

	var withdraw []netip.Prefix
	for p := range oldAggr {
		_, keep := s.aggr[p]
		_, deleg := s.delegated[p]
		if !keep && !deleg {
			withdraw = append(withdraw, p)
		}
	}
	s.withdraw(withdraw)
	if sameAttrs(&old, &cfg) {
		var add []netip.Prefix
		for p := range s.aggr {
			_, had := oldAggr[p]
			_, deleg := s.delegated[p]
			if !had && !deleg {
				add = append(add, p)
			}
		}
		s.announce(add)
	} else {
		s.log.Info("bgp announcing every prefix again with the new attributes",
			"next_hop", cfg.NextHop, "communities", communityStrings(cfg.Communities))
		s.announce(s.all())
	}
	var errs []error
	for _, n := range added {
		if err := s.addPeer(n, false); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// all returns every prefix the local table should hold.
func (s *Speaker) all() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(s.delegated)+len(s.aggr))
	for p := range s.delegated {
		out = append(out, p)
	}
	for p := range s.aggr {
		if _, ok := s.delegated[p]; !ok {
			out = append(out, p)
		}
	}
	return out
}

func prefixSet(ps []netip.Prefix) map[netip.Prefix]struct{} {
	m := make(map[netip.Prefix]struct{}, len(ps))
	for _, p := range ps {
		m[p.Masked()] = struct{}{}
	}
	return m
}
