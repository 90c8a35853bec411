package release

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
)

// TriggerConfig says which events release bindings (release.triggers;
// the operator's is Config.Operator).
type TriggerConfig struct {
	// Replaced releases the bindings a client held on a point-to-point
	// port when another DUID obtains a prefix there.
	Replaced bool
	// PointToPoint are the ports where Replaced applies.
	PointToPoint map[string]bool
	// Moved releases a client's bindings on its old port when
	// unique_client refuses it on a new one.
	Moved bool
	// Unavailable releases the bindings of a next hop the neighbour
	// table has not confirmed for this long; 0 is off. Prober is then
	// required.
	Unavailable time.Duration
	Prober      Prober
	// QueueDepth bounds the triggers waiting (default 256), Workers the
	// releases run at once (default 4), Cooldown how long a binding whose
	// release failed is left alone by the triggers (default 1 min).
	QueueDepth int
	Workers    int
	Cooldown   time.Duration
}

// ReleaseFunc is what the triggers need of a Releaser.
type ReleaseFunc func(ctx context.Context, trigger string, bs []binding.Binding) ([]Result, error)

// Triggers turns binding events into releases: see the package doc. Sink,
// Refused and Seed run on the binding manager's goroutine and never
// block; Run runs the releases on its own goroutines.
type Triggers struct {
	cfg     TriggerConfig
	release ReleaseFunc
	tbl     Table
	met     *Metrics
	log     *slog.Logger
	now     func() time.Time
	queue   chan job

	// clients are the DUIDs bound on each point-to-point port, with their
	// binding counts: owner goroutine only.
	clients map[string]map[string]int
	unavail *unavailable // nil when off

	mu       sync.Mutex
	queued   map[string]bool // jobs waiting or running, by id
	inflight map[binding.Key]bool
	cooldown map[binding.Key]time.Time
}

type job struct {
	trigger string
	id      string // one job per id waits or runs at a time
	find    func(*binding.Table) []binding.Binding
}

// maxCooldown bounds the bindings remembered in cooldown.
const maxCooldown = 16384

// NewTriggers returns the triggers cfg enables, releasing through
// release and reading the table through tbl.
func NewTriggers(cfg TriggerConfig, release ReleaseFunc, tbl Table, met *Metrics, log *slog.Logger) *Triggers {
	if cfg.QueueDepth <= 0 {
		cfg.QueueDepth = 256
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Cooldown <= 0 {
		cfg.Cooldown = time.Minute
	}
	if met == nil {
		met = NewMetrics()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Triggers{
		cfg: cfg, release: release, tbl: tbl, met: met, log: log, now: time.Now,
		queue:    make(chan job, cfg.QueueDepth),
		clients:  make(map[string]map[string]int),
		queued:   make(map[string]bool),
		inflight: make(map[binding.Key]bool),
		cooldown: make(map[binding.Key]time.Time),
	}
	if cfg.Unavailable > 0 && cfg.Prober != nil {
		t.unavail = newUnavailable(cfg.Unavailable)
	}
	return t
}

// Seed takes the bindings restored before the manager runs (they are not
// changes): the clients of point-to-point ports, the next hops to watch.
func (t *Triggers) Seed(tb *binding.Table) {
	now := t.now()
	for b := range tb.All() {
		t.added(b, now)
	}
}

// Sink follows binding changes (a binding.Sink).
func (t *Triggers) Sink(changes []binding.Change) {
	now := t.now()
	for i := range changes {
		c := &changes[i]
		b := &c.Binding
		switch c.Op {
		case binding.Added:
			if t.cfg.Replaced && t.cfg.PointToPoint[b.Port] {
				t.replaced(b)
			}
			t.added(b, now)
		case binding.Updated:
			if t.unavail != nil && c.RouteChanged {
				t.unavail.track(b, now)
			}
		case binding.Removed:
			if m := t.clients[b.Port]; m != nil {
				if m[b.DUID]--; m[b.DUID] <= 0 {
					delete(m, b.DUID)
				}
				if len(m) == 0 {
					delete(t.clients, b.Port)
				}
			}
			if t.unavail != nil {
				t.unavail.untrack(b.Key)
			}
		}
	}
}

func (t *Triggers) added(b *binding.Binding, now time.Time) {
	if t.cfg.Replaced && t.cfg.PointToPoint[b.Port] {
		m := t.clients[b.Port]
		if m == nil {
			m = make(map[string]int)
			t.clients[b.Port] = m
		}
		m[b.DUID]++
	}
	if t.unavail != nil {
		t.unavail.track(b, now)
	}
}

// replaced starts the release of the other clients' bindings when b is
// the first binding of a new client on a point-to-point port.
func (t *Triggers) replaced(b *binding.Binding) {
	m := t.clients[b.Port]
	if m[b.DUID] > 0 || len(m) == 0 {
		return
	}
	port := b.Port
	var old []string
	for d := range m {
		old = append(old, d)
	}
	t.log.Info("release trigger", "trigger", TriggerClientReplaced, "port", port,
		"client", b.DUIDHex(), "old_clients", len(old))
	t.enqueue(job{trigger: TriggerClientReplaced, id: "replaced " + port + " " + b.DUID,
		find: func(tb *binding.Table) []binding.Binding {
			var out []binding.Binding
			for _, d := range old {
				out = append(out, tb.ClientBindings(d, port)...)
			}
			return out
		}})
}

// Refused follows the manager's refusals (binding.Manager.OnRefusedKey):
// unique_client refusing a client's Reply on a new port releases its
// bindings on the other ports, so that its next exchange succeeds.
func (t *Triggers) Refused(k binding.Key, source string, err error) {
	if !t.cfg.Moved || source != "reply" || !errors.Is(err, binding.ErrDuplicateDUID) {
		return
	}
	id := "moved " + k.DUID
	t.mu.Lock()
	dup := t.queued[id]
	t.mu.Unlock()
	if dup {
		return // each prefix of the Reply, and each retransmission, is refused again
	}
	t.log.Info("release trigger", "trigger", TriggerClientMoved, "port", k.Port, "client", k.DUIDHex())
	port, duid := k.Port, k.DUID
	t.enqueue(job{trigger: TriggerClientMoved, id: id, find: func(tb *binding.Table) []binding.Binding {
		var out []binding.Binding
		for _, b := range tb.ClientBindings(duid, "") {
			if b.Port != port {
				out = append(out, b)
			}
		}
		return out
	}})
}

// enqueue queues j unless a job with its id waits or runs; a full queue
// drops it, counted.
func (t *Triggers) enqueue(j job) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.queued[j.id] {
		return
	}
	select {
	case t.queue <- j:
		t.queued[j.id] = true
	default:
		t.met.dropped.WithLabelValues(j.trigger).Inc()
		t.log.Debug("release trigger dropped: queue full", "trigger", j.trigger)
	}
}

// Run runs the releases the triggers queue, and the unavailability
// prober, until ctx ends.
func (t *Triggers) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range t.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-t.queue:
					t.run(ctx, j)
				}
			}
		}()
	}
	if t.unavail != nil {
		wg.Add(1)
		go func() { defer wg.Done(); t.probe(ctx) }()
	}
	wg.Wait()
	return nil
}

// run finds a job's bindings, leaves out those being released or cooling
// down after a failure, and releases the rest.
func (t *Triggers) run(ctx context.Context, j job) {
	defer func() {
		t.mu.Lock()
		delete(t.queued, j.id)
		t.mu.Unlock()
	}()
	var found []binding.Binding
	if err := t.tbl.Do(ctx, func(tb *binding.Table) { found = j.find(tb) }); err != nil {
		return // stopping
	}
	now := t.now()
	var bs []binding.Binding
	t.mu.Lock()
	for _, b := range found {
		if t.inflight[b.Key] || now.Before(t.cooldown[b.Key]) {
			continue
		}
		t.inflight[b.Key] = true
		bs = append(bs, b)
	}
	t.mu.Unlock()
	if len(bs) == 0 {
		return
	}
	results, err := t.release(ctx, j.trigger, bs)
	now = t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, b := range bs {
		delete(t.inflight, b.Key)
	}
	if err != nil {
		t.log.Warn("release trigger", "trigger", j.trigger, "bindings", len(bs), "err", err)
		return
	}
	if len(t.cooldown) >= maxCooldown {
		for k, until := range t.cooldown {
			if !now.Before(until) {
				delete(t.cooldown, k)
			}
		}
	}
	for i := range results {
		if !results[i].Released() && len(t.cooldown) < maxCooldown {
			t.cooldown[results[i].Binding.Key] = now.Add(t.cfg.Cooldown)
		}
	}
}

// probe runs rounds of the unavailability watch.
func (t *Triggers) probe(ctx context.Context) {
	every := t.unavail.interval()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		t.probeRound(t.now())
	}
}

// probeRound runs one round of the unavailability watch and queues the
// release of the next hops found unavailable.
func (t *Triggers) probeRound(now time.Time) {
	gone, watched := t.unavail.round(now, t.cfg.Prober, t.log)
	t.met.unavailable.Set(float64(watched))
	for _, h := range gone {
		t.log.Info("release trigger", "trigger", TriggerClientUnavailable, "port", h.hop.port,
			"next_hop", h.hop.addr, "unconfirmed_for", t.cfg.Unavailable, "bindings", len(h.keys))
		keys, addr := h.keys, h.hop.addr
		t.enqueue(job{trigger: TriggerClientUnavailable, id: "unavailable " + h.hop.String(),
			find: func(tb *binding.Table) []binding.Binding {
				var out []binding.Binding
				for _, k := range keys {
					if b, ok := tb.Get(k); ok && b.NextHop == addr {
						out = append(out, b)
					}
				}
				return out
			}})
	}
}
