package release

import (
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
)

// Reach is what the neighbour table says of a next hop.
type Reach uint8

// Reach values.
const (
	// ReachUnknown: an entry with a MAC not confirmed lately (STALE,
	// DELAY, PROBE): the kernel is asked to confirm it.
	ReachUnknown Reach = iota
	// ReachConfirmed: REACHABLE, or PERMANENT / NOARP.
	ReachConfirmed
	// ReachFailed: FAILED, INCOMPLETE, or no entry: the kernel is asked
	// to resolve it.
	ReachFailed
)

// Prober reads the kernel's neighbour table and asks for confirmation.
type Prober interface {
	// Snapshot reads the table once and returns a lookup into it.
	Snapshot() (func(port string, addr netip.Addr) Reach, error)
	// Solicit asks the kernel to confirm (STALE) or resolve (missing,
	// FAILED) addr on port: neighbour solicitations, whose answer the
	// next Snapshot sees.
	Solicit(port string, addr netip.Addr) error
}

// hopKey is a next hop on a port, without zone.
type hopKey struct {
	port string
	addr netip.Addr
}

func (h hopKey) String() string { return h.port + " " + h.addr.String() }

type hopState struct {
	keys   map[binding.Key]struct{}
	lastOK time.Time // learned, seen confirmed, or last reported
}

// unavailable watches the next hops of the bindings (client unavailable,
// the draft's section 1.3): each round reads the neighbour table once,
// asks the kernel to confirm at most maxSolicit unconfirmed next hops (the
// longest unconfirmed first is not needed: every one is asked within a
// few rounds), and reports a next hop whose entry has failed and that has
// not been confirmed for the configured time. A report starts the time
// again, so a release that fails is retried only after as long. Its
// methods are safe for concurrent use: the manager's goroutine tracks,
// the prober's goroutine runs rounds.
type unavailable struct {
	after time.Duration

	mu    sync.Mutex
	hops  map[hopKey]*hopState
	byKey map[binding.Key]hopKey
}

// maxSolicit bounds the neighbour solicitations asked of the kernel in
// one round.
const maxSolicit = 256

func newUnavailable(after time.Duration) *unavailable {
	return &unavailable{after: after, hops: make(map[hopKey]*hopState), byKey: make(map[binding.Key]hopKey)}
}

// interval is the time between rounds: an eighth of the configured time,
// between 1 s and 10 s, so a REACHABLE entry (15 to 45 s) is seen.
func (u *unavailable) interval() time.Duration {
	return min(max(u.after/8, time.Second), 10*time.Second)
}

// track watches b's next hop (again, if it changed).
func (u *unavailable) track(b *binding.Binding, now time.Time) {
	if !b.NextHop.IsValid() {
		return
	}
	h := hopKey{b.Port, b.NextHop.WithZone("")}
	u.mu.Lock()
	defer u.mu.Unlock()
	if old, ok := u.byKey[b.Key]; ok {
		if old == h {
			return
		}
		u.untrackLocked(b.Key)
	}
	s := u.hops[h]
	if s == nil {
		s = &hopState{keys: make(map[binding.Key]struct{}), lastOK: now}
		u.hops[h] = s
	}
	s.keys[b.Key] = struct{}{}
	u.byKey[b.Key] = h
}

func (u *unavailable) untrack(k binding.Key) {
	u.mu.Lock()
	u.untrackLocked(k)
	u.mu.Unlock()
}

func (u *unavailable) untrackLocked(k binding.Key) {
	h, ok := u.byKey[k]
	if !ok {
		return
	}
	delete(u.byKey, k)
	if s := u.hops[h]; s != nil {
		delete(s.keys, k)
		if len(s.keys) == 0 {
			delete(u.hops, h)
		}
	}
}

// gone is a next hop reported unavailable, with its bindings' keys.
type gone struct {
	hop  hopKey
	keys []binding.Key
}

// round reads the neighbour table once, notes the next hops confirmed,
// asks the kernel about unconfirmed ones, and returns those unavailable,
// and how many are watched.
func (u *unavailable) round(now time.Time, p Prober, log *slog.Logger) ([]gone, int) {
	look, err := p.Snapshot()
	if err != nil {
		log.Warn("client unavailability: read the neighbour table", "err", err)
		return nil, 0
	}
	var out []gone
	var ask []hopKey
	u.mu.Lock()
	watched := len(u.hops)
	for h, s := range u.hops {
		switch look(h.port, h.addr) {
		case ReachConfirmed:
			s.lastOK = now
			continue
		case ReachFailed:
			if now.Sub(s.lastOK) >= u.after {
				s.lastOK = now
				g := gone{hop: h}
				for k := range s.keys {
					g.keys = append(g.keys, k)
				}
				out = append(out, g)
				continue
			}
		}
		if len(ask) < maxSolicit {
			ask = append(ask, h)
		}
	}
	u.mu.Unlock()
	for _, h := range ask {
		if err := p.Solicit(h.port, h.addr); err != nil {
			log.Debug("client unavailability: solicit", "port", h.port, "next_hop", h.addr, "err", err)
		}
	}
	return out, watched
}
