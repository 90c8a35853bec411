package daemon

import (
	"log/slog"
	"net/netip"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/fib"
)

// fibSink turns binding changes into FIB routes and source filters (R-1,
// ), each exactly the delegated prefix, and publishes one snapshot
// per batch that changed forwarding state.
type fibSink struct {
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

// prefixSet is a set of prefixes kept outside the FIB; *xsk.Routes is one.
type prefixSet interface {
	Add(netip.Prefix) error
	Delete(netip.Prefix) error
}

func (s *fibSink) add(b *binding.Binding, withSource bool) {
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
func (s *fibSink) remove(b *binding.Binding) {
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
func (s *fibSink) Sink(changes []binding.Change) {
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
