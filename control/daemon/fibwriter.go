package daemon

import (
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/fib"
)

// fibWriter is the FIB's single writer. fib.Table takes one writer at a
// time; every change goes through a method of fibWriter, which holds its
// lock: the binding manager's batches (Sink), the uplink gateway
// (SetDefault), the dense blocks after a restore (Publish) and a reload's
// new ports and sources (reconfigure). Readers (the forwarding plane)
// never wait for it: they load published snapshots.
//
// It turns binding changes into FIB routes and source filters (R-1, R-2,
// R-3), each exactly the delegated prefix, and publishes one snapshot per
// batch that changed forwarding state.
type fibWriter struct {
	mu    sync.Mutex
	t     *fib.Table
	ports map[string]fib.PortID
	log   *slog.Logger
	// loop gives a client's own loop policy (per-client override, R-5),
	// LoopDefault for none; nil: none configured.
	loop func(port, duid string) fib.LoopPolicy
	// mirror, when set, follows the routed prefixes: the uplink's XDP
	// program passes destinations outside them to the kernel
	// (uplink.no_route: pass).
	mirror prefixSet
}

// Lock discipline: add and remove assume the caller holds mu, or is the
// restore, which runs before anything else can write.

// prefixSet is a set of prefixes kept outside the FIB; *xsk.Routes is one.
type prefixSet interface {
	Add(netip.Prefix) error
	Delete(netip.Prefix) error
}

func (s *fibWriter) add(b *binding.Binding, withSource bool) {
	port, ok := s.ports[b.Port]
	if !ok {
		return // a port no longer configured: the binding stays, unrouted
	}
	r := fib.Route{Prefix: b.Prefix, Port: port, NextHop: b.NextHop, MAC: b.MAC}
	if s.loop != nil {
		r.Loop = s.loop(b.Port, b.DUID)
	}
	if err := s.t.AddRoute(r); err != nil {
		s.log.Error("fib add route", "prefix", b.Prefix, "err", err)
		return
	}
	if s.mirror != nil {
		if err := s.mirror.Add(b.Prefix); err != nil {
			s.log.Error("xdp route map add", "prefix", b.Prefix, "err", err)
		}
	}
	if !withSource {
		return // a new next hop or MAC: the source entry stands
	}
	if err := s.t.AddSource(port, b.Prefix); err != nil {
		s.log.Error("fib add source", "prefix", b.Prefix, "err", err)
	}
}

// remove drops a binding's route (unless a newer binding's route for the
// prefix leaves by another port) and its source filter reference.
func (s *fibWriter) remove(b *binding.Binding) {
	if port, ok := s.ports[b.Port]; ok {
		if s.t.DeleteRouteIf(b.Prefix, port) && s.mirror != nil {
			if err := s.mirror.Delete(b.Prefix); err != nil {
				s.log.Error("xdp route map delete", "prefix", b.Prefix, "err", err)
			}
		}
		s.t.DeleteSource(port, b.Prefix)
	}
}

// Sink applies a batch of changes and publishes once if forwarding changed.
func (s *fibWriter) Sink(changes []binding.Change) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dirty := false
	for _, c := range changes {
		if !c.RouteChanged {
			continue
		}
		b := &c.Binding
		if _, ok := s.ports[b.Port]; !ok {
			continue // a port no longer configured: the binding stays, unrouted
		}
		dirty = true
		if c.Op == binding.Removed {
			s.remove(b)
			continue
		}
		s.add(b, c.Op == binding.Added)
	}
	if dirty {
		s.t.Publish()
	}
}

// SetDefault sets the FIB's default route (nil: none) and publishes.
func (s *fibWriter) SetDefault(r *fib.Route) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.t.SetDefault(r); err != nil {
		return err
	}
	s.t.Publish()
	return nil
}

// Publish publishes the FIB again; after a restore (PublishDeferred) this
// makes its dense blocks.
func (s *fibWriter) Publish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.t.Publish()
}

// reconfigure applies a reload: ports are the port numbers (a port keeps
// its number for the life of the process, so existing routes stay
// valid; new downlinks get new ones), sources each configured downlink's
// allowed_sources, and loop the per-client loop policies. A binding on a
// port that left the config keeps its route until it goes.
func (s *fibWriter) reconfigure(ports map[string]fib.PortID, sources map[string][]netip.Prefix,
	loop func(port, duid string) fib.LoopPolicy) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, src := range sources {
		if err := s.t.SetAllowedSources(ports[name], src); err != nil {
			return fmt.Errorf("downlinks %s allowed_sources: %w", name, err)
		}
	}
	s.ports = ports
	s.loop = loop
	s.t.Publish()
	return nil
}
