package relay

import (
	"bytes"
	"errors"
	"time"
)

// pendingConfig is how the pending table is bounded (Config.PendingMax,
// PendingBytes, PendingTTL; zero values take the defaults).
type pendingConfig struct {
	max, bytes int
	ttl        time.Duration
}

// ErrRelayIDChanged is returned by Reconfigure for a config whose RelayID
// differs from the running one's: the servers know the relay's bindings
// by it (Bulk Leasequery by relay-id), so it changes only with a restart.
var ErrRelayIDChanged = errors.New("relay: relay_id cannot change at run time")

// Reconfigure replaces the engine's configuration with cfg, between two
// messages: the ports (added, removed, or changed by name), servers,
// trusted servers, trust flags, Interface-IDs, link-addresses and the
// pending table's bounds. It is called on the engine's goroutine, like
// HandleClient; an engine run by a Conn is reconfigured through
// Conn.Reconfigure, which also opens and closes the ports' sockets. A port is the same port across the change when its Name
// is: its recorded requests (pending table, originated messages) and its
// drop counts carry over, under its new index; a removed port's recorded
// requests are forgotten (a Reply for it names no port and is dropped as
// unknown_port), its counts are kept (see Counters). The Counters
// themselves carry over whole.
//
// cfg.RelayID must be nil (keep) or the running one (ErrRelayIDChanged).
// An invalid cfg is refused as NewEngine refuses it, and nothing changes.
//
// A port whose Interface-ID changes no longer matches the Relay-Replies
// to messages relayed before: those are dropped as unknown_port, and the
// client's retransmission is relayed with the new one.
func (e *Engine) Reconfigure(cfg Config) error {
	next, err := e.prepare(cfg)
	if err != nil {
		return err
	}
	e.adopt(next)
	return nil
}

// prepare validates cfg for Reconfigure without changing e; any goroutine
// may call it.
func (e *Engine) prepare(cfg Config) (*Engine, error) {
	if cfg.RelayID != nil && !bytes.Equal(cfg.RelayID, e.relayID) {
		return nil, ErrRelayIDChanged
	}
	cfg.RelayID = e.relayID
	return compile(cfg)
}

// adopt makes next's configuration e's, keeping e's state: the pending
// and originated requests of the ports that stay (re-indexed), the
// counters, the buffer.
func (e *Engine) adopt(next *Engine) {
	idx := func(old int) (int, bool) {
		i, ok := next.byName[e.ports[old].Name]
		return i, ok
	}
	evicted := e.pending.remap(next.pendCfg, len(next.ports), idx)
	if evicted > 0 {
		e.Counters.snoop[SnoopPendingEvicted].Add(uint64(evicted))
	}
	e.origin.remap(e.pending.ttl, idx)

	e.ports, e.byIfID, e.byLink, e.byName = next.ports, next.byIfID, next.byLink, next.byName
	e.servers, e.trusted = next.servers, next.trusted
	e.addrs, e.addrRead, e.addrSrc = next.addrs, next.addrRead, next.addrSrc
	e.rrType, e.pendCfg = next.rrType, next.pendCfg
	e.Counters.setPorts(portNames(e.ports))
	e.countPending()
}

// remap rebuilds the table for nports ports bounded by c, moving over, in
// order of arrival, the requests of the ports idx maps (to their new
// index) and forgetting the others. It returns how many requests the new
// shares evicted.
func (p *pendingTable) remap(c pendingConfig, nports int, idx func(old int) (int, bool)) (evicted int) {
	old := *p
	p.init(c.max, c.bytes, nports, c.ttl)
	p.evicted = old.evicted
	for e := old.all.head; e != nil; e = e.next {
		i, ok := idx(e.key.port)
		if !ok {
			continue
		}
		k, v := e.key, e.v
		k.port, v.port = i, i
		// At the time it was recorded: put ages the table by it, which
		// drops only what the TTL has dropped already.
		evicted += p.put(e.at, k, v)
	}
	return evicted
}

// remap re-indexes the originated messages by idx, forgetting those of
// ports it does not map, and takes ttl as the new TTL.
func (o *originTable) remap(ttl time.Duration, idx func(old int) (int, bool)) {
	o.ttl = ttl
	if len(o.m) == 0 {
		return
	}
	m := make(map[pendingKey]time.Time, len(o.m))
	for k, at := range o.m {
		if i, ok := idx(k.port); ok {
			k.port = i
			m[k] = at
		}
	}
	o.m = m
}
