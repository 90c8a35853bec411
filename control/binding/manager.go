package binding

import (
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"time"
)

// ErrStopped is returned by Manager calls made after Run has returned.
var ErrStopped = errors.New("binding manager stopped")

// Sink receives each batch of changes, in order, on the Manager's
// goroutine. It must not block for long (the store queues, the FIB builder
// publishes one snapshot per batch), nor keep the slice once it returns:
// the Manager reuses it for the next batch.
type Sink func(changes []Change)

// Manager owns a Table on one goroutine. Its methods are safe for
// concurrent use: they send the owner events and, where they return a
// result, wait for it.
type Manager struct {
	t      *Table
	now    func() time.Time
	log    *slog.Logger
	sinks  []Sink
	events chan func(*Table)
	done   chan struct{}
	// OnRefused is called (on the owner goroutine) when a limit or the
	// policy refuses a binding, for metrics: err is one of the limit
	// errors or a *RefusedError.
	OnRefused func(port string, err error)
	// OnRefusedKey, when set, is called (on the owner goroutine, after
	// OnRefused) with the refused binding's key and source: the release
	// triggers act on unique_client's ErrDuplicateDUID. It must not block.
	OnRefusedKey func(k Key, source string, err error)
	// OnInstalled, when set, is called (on the owner goroutine) once the
	// first DataplaneSinks sinks (all when zero) have taken a batch, with
	// the time since its Update was received for each binding the batch
	// added from an Update with Received set: the relay's
	// Reply-to-dataplane latency.
	OnInstalled    func(time.Duration)
	DataplaneSinks int
	// LogBatch, when set, holds the log output while a batch's lines are
	// logged (logw.Writer), so that they go out in one write.
	LogBatch interface {
		Hold()
		Release()
	}
	quiet refusalLog
	// received holds, for each binding the pending batch adds, when the
	// Update that added it was received.
	received []time.Time
	logBuf   []byte      // logChange's scratch
	logAttrs []slog.Attr // logChange's scratch
}

// NewManager returns a Manager for t. now may be nil for time.Now.
func NewManager(t *Table, now func() time.Time, log *slog.Logger, sinks ...Sink) *Manager {
	if now == nil {
		now = time.Now
	}
	return &Manager{
		t: t, now: now, log: log, sinks: sinks,
		events: make(chan func(*Table), 1024),
		done:   make(chan struct{}),
	}
}

// Run processes events until ctx is done. Changes of all events that are
// waiting are handed to the sinks as one batch.
func (m *Manager) Run(ctx context.Context) error {
	defer close(m.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		m.expire()
		m.flush()
		m.arm(timer)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case f := <-m.events:
			f(m.t)
			// Apply whatever else is queued, so one FIB publish and one
			// store batch cover them all.
		drain:
			for range 4096 {
				select {
				case f = <-m.events:
					f(m.t)
				default:
					break drain
				}
			}
		case <-timer.C:
		}
	}
}

func (m *Manager) arm(timer *time.Timer) {
	next, ok := m.t.NextExpiry()
	d := time.Hour
	if ok {
		d = min(max(next.Sub(m.now()), 0), time.Hour)
	}
	timer.Reset(d)
}

func (m *Manager) expire() { m.t.Expire(m.now()) }

func (m *Manager) flush() {
	changes := m.t.TakeChanges()
	if len(changes) == 0 {
		return
	}
	dp := m.DataplaneSinks
	if dp <= 0 || dp > len(m.sinks) {
		dp = len(m.sinks)
	}
	for i, s := range m.sinks {
		if i == dp {
			m.installed()
		}
		s(changes)
	}
	if dp == len(m.sinks) {
		m.installed()
	}
	// The log lines come last: they are not on the way to the dataplane.
	if m.LogBatch != nil {
		m.LogBatch.Hold()
		defer m.LogBatch.Release()
	}
	for i := range changes {
		m.logChange(&changes[i])
	}
	// No sink keeps the slice (Sink's contract): the next batch reuses it.
	m.t.RecycleChanges(changes)
}

// installed reports the pending batch's new bindings to OnInstalled.
func (m *Manager) installed() {
	if m.OnInstalled != nil && len(m.received) > 0 {
		now := time.Now()
		for _, at := range m.received {
			m.OnInstalled(now.Sub(at))
		}
	}
	clear(m.received)
	m.received = m.received[:0]
}

func (m *Manager) logChange(c *Change) {
	if m.log == nil {
		return
	}
	b := &c.Binding
	// A recovery (Bulk Leasequery) logs one summary line of its own: its
	// bindings, up to millions, are logged one by one only at debug.
	level := slog.LevelInfo
	switch {
	case c.Op == Updated && !c.RouteChanged:
		level = slog.LevelDebug // a renewal: lifetimes only
	case c.Op != Removed && b.Source == SourceLeasequery && c.MovedFrom == nil:
		level = slog.LevelDebug
	case c.Op == Removed && c.Reason == ReasonNotAtServer:
		level = slog.LevelDebug
	}
	if !m.log.Enabled(context.Background(), level) {
		return
	}
	// A line for every binding that comes or goes, thousands a second:
	// the values are formatted into one buffer and the attributes are
	// slices of one string made from it, not a string and a boxed value
	// each.
	var ends [5]int
	buf := hex.AppendEncode(m.logBuf[:0], []byte(b.DUID))
	ends[0] = len(buf)
	buf = b.Prefix.AppendTo(buf)
	ends[1] = len(buf)
	if c.Op != Removed {
		buf = b.NextHop.AppendTo(buf)
		ends[2] = len(buf)
		buf = appendMAC(buf, b.MAC)
		ends[3] = len(buf)
		buf = b.Expires.AppendFormat(buf, time.RFC3339)
		ends[4] = len(buf)
		if c.MovedFrom != nil {
			buf = hex.AppendEncode(buf, []byte(c.MovedFrom.DUID))
		}
	}
	m.logBuf = buf
	str := string(buf)
	attrs := append(m.logAttrs[:0],
		slog.String("port", b.Port), slog.String("client", str[:ends[0]]),
		slog.Uint64("iaid", uint64(b.IAID)), slog.String("prefix", str[ends[0]:ends[1]]))
	msg := "binding removed"
	if c.Op == Removed {
		attrs = append(attrs, slog.String("reason", c.Reason))
	} else {
		msg = "binding added"
		if c.Op == Updated {
			msg = "binding updated"
		}
		attrs = append(attrs, slog.String("next_hop", str[ends[1]:ends[2]]),
			slog.String("mac", str[ends[2]:ends[3]]), slog.String("valid_until", str[ends[3]:ends[4]]))
		if f := c.MovedFrom; f != nil {
			// The server's newer word wins: the prefix moves, as to a
			// replaced CPE.
			msg = "binding moved"
			attrs = append(attrs, slog.String("from_port", f.Port), slog.String("from_client", str[ends[4]:]),
				slog.Uint64("from_iaid", uint64(f.IAID)))
		}
	}
	m.logAttrs = attrs
	m.log.LogAttrs(context.Background(), level, msg, attrs...)
}

const hexDigits = "0123456789abcdef"

func appendMAC(b []byte, mac [6]byte) []byte {
	for i, x := range mac {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, hexDigits[x>>4], hexDigits[x&0xf])
	}
	return b
}

// MACString formats an Ethernet address.
func MACString(mac [6]byte) string { return string(appendMAC(make([]byte, 0, 17), mac)) }

// Do runs f on the owner goroutine and waits for it.
func (m *Manager) Do(ctx context.Context, f func(*Table)) error {
	ran := make(chan struct{})
	select {
	case m.events <- func(t *Table) { f(t); close(ran) }:
	case <-m.done:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ran:
		return nil
	case <-m.done:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Post sends f to the owner goroutine without waiting for it to run. It
// blocks only while the event queue is full.
func (m *Manager) Post(f func(*Table)) {
	select {
	case m.events <- f:
	case <-m.done:
	}
}

// Apply applies snooped facts (from the relay), update by update in
// order, each one's removals first, then the prefixes it learned; their
// changes reach the sinks as one batch. Limit refusals are logged and
// counted. Apply does not keep us.
func (m *Manager) Apply(us ...Update) {
	us = slices.Clone(us)
	m.Post(func(t *Table) {
		for _, u := range us {
			m.apply(t, u)
		}
	})
}

func (m *Manager) apply(t *Table, u Update) {
	now := m.now()
	for _, r := range u.RemoveIAs {
		t.RemoveIA(r.Port, r.DUID, r.IAID, r.Reason)
	}
	for _, r := range u.Remove {
		t.Remove(r.Key, r.Reason)
	}
	for _, l := range u.Learn {
		op, err := t.Learn(now, l)
		switch {
		case err != nil:
			m.Refused(now, l.Key, "reply", err)
		case op == Added && !u.Received.IsZero():
			m.received = append(m.received, u.Received)
		}
	}
}

// Refused counts a refusal and logs it, at most once a minute for each
// client and reason: a server (or whoever speaks as one) repeating a bad
// delegation must not flood the log. source says what offered the
// binding ("reply", "store", ...). Call it on the owner goroutine.
func (m *Manager) Refused(now time.Time, k Key, source string, err error) {
	if m.OnRefused != nil {
		m.OnRefused(k.Port, err)
	}
	if m.OnRefusedKey != nil {
		m.OnRefusedKey(k, source, err)
	}
	if m.log == nil {
		return
	}
	reason := err.Error()
	var re *RefusedError
	if errors.As(err, &re) {
		reason = re.Reason
	}
	suppressed, ok := m.quiet.allow(now, refusalKey{k.Port, k.DUID, reason})
	if !ok {
		return
	}
	attrs := []any{"port", k.Port, "client", k.DUIDHex(), "iaid", k.IAID, "prefix", k.Prefix,
		"source", source, "reason", err}
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed)
	}
	m.log.Warn("binding refused", attrs...)
}

// refusalLog rate-limits refusal logs to one a minute per client and
// reason. It is bounded: past maxKeys clients it forgets the ones logged
// over a minute ago, and while still full it logs nothing new (the
// metrics count every refusal).
type refusalLog struct {
	last map[refusalKey]*refusalSeen
}

type refusalKey struct{ port, duid, reason string }

type refusalSeen struct {
	at         time.Time
	suppressed int
}

const (
	refusalEvery   = time.Minute
	refusalMaxKeys = 4096
)

// allow reports whether a refusal for k may be logged at now, and how
// many were held back since the last one logged.
func (r *refusalLog) allow(now time.Time, k refusalKey) (suppressed int, ok bool) {
	if r.last == nil {
		r.last = make(map[refusalKey]*refusalSeen)
	}
	if s, seen := r.last[k]; seen {
		if now.Sub(s.at) < refusalEvery {
			s.suppressed++
			return 0, false
		}
		n := s.suppressed
		s.at, s.suppressed = now, 0
		return n, true
	}
	if len(r.last) >= refusalMaxKeys {
		for key, s := range r.last {
			if now.Sub(s.at) >= refusalEvery {
				delete(r.last, key)
			}
		}
		if len(r.last) >= refusalMaxKeys {
			return 0, false
		}
	}
	r.last[k] = &refusalSeen{at: now}
	return 0, true
}

// Update is what the relay learned from one message.
type Update struct {
	RemoveIAs []RemoveIA
	Remove    []RemoveKey
	Learn     []Learned
	// Received is when the message reached the relay (zero: not known),
	// for the Manager's OnInstalled.
	Received time.Time
}

// Empty reports whether u carries nothing.
func (u *Update) Empty() bool { return len(u.RemoveIAs)+len(u.Remove)+len(u.Learn) == 0 }

// RemoveIA removes all prefixes of one IA_PD.
type RemoveIA struct {
	Port   string
	DUID   string
	IAID   uint32
	Reason string
}

// RemoveKey removes one binding.
type RemoveKey struct {
	Key
	Reason string
}

// List returns a copy of all bindings.
func (m *Manager) List(ctx context.Context) ([]Binding, error) {
	var out []Binding
	if err := m.Do(ctx, func(t *Table) { out = t.List() }); err != nil {
		return nil, err // f may still run: out is not ours to read
	}
	return out, nil
}

// Filter selects bindings for Clear. Zero fields match everything; All
// must be set to match with no other field.
type Filter struct {
	All    bool
	Prefix netip.Prefix
	DUID   string // raw
	Port   string
}

// Empty reports whether f selects nothing by itself.
func (f Filter) Empty() bool {
	return !f.All && !f.Prefix.IsValid() && f.DUID == "" && f.Port == ""
}

// Match reports whether b is selected by f.
func (f Filter) Match(b *Binding) bool {
	if f.Empty() {
		return false
	}
	if f.Prefix.IsValid() && b.Prefix != f.Prefix.Masked() {
		return false
	}
	if f.DUID != "" && b.DUID != f.DUID {
		return false
	}
	if f.Port != "" && b.Port != f.Port {
		return false
	}
	return true
}

// Clear removes the bindings f selects (O-2) and returns them.
func (m *Manager) Clear(ctx context.Context, f Filter) ([]Binding, error) {
	var out []Binding
	err := m.Do(ctx, func(t *Table) {
		t.RemoveWhere(func(b *Binding) bool {
			if f.Match(b) {
				out = append(out, *b)
				return true
			}
			return false
		}, ReasonOperator)
	})
	if err != nil {
		return nil, err // f may still run: out is not ours to read
	}
	return out, nil
}
