package binding

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/internal/logw"
	"github.com/pdrelay/pdrelay/internal/testutil"
)

// fakeClock is a settable clock safe to read from the owner goroutine.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.set(t)
	return c
}
func (c *fakeClock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *fakeClock) now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) add(d time.Duration) { c.ns.Add(int64(d)) }

// recorder is a Sink that keeps every batch.
type recorder struct {
	mu      sync.Mutex
	batches [][]Change
	at      []time.Time // real time each batch arrived
}

func (r *recorder) sink(c []Change) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, slices.Clone(c))
	r.at = append(r.at, time.Now())
}

// firstRemoved returns the first Removed change and when its batch arrived.
func (r *recorder) firstRemoved() (Change, time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, b := range r.batches {
		for _, c := range b {
			if c.Op == Removed {
				return c, r.at[i], true
			}
		}
	}
	return Change{}, time.Time{}, false
}

func (r *recorder) all() []Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Change
	for _, b := range r.batches {
		out = append(out, b...)
	}
	return out
}

// startManager runs m until the test ends and waits for Run to return.
func startManager(t *testing.T, m *Manager) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Run returned %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func TestManagerApplyListClear(t *testing.T) {
	clk := newFakeClock(t0)
	rec := &recorder{}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := NewManager(NewTable(PortLimits{MaxPerClient: 8}, nil), clk.now, log, rec.sink)
	var limitMu sync.Mutex
	var limits []error
	m.OnRefused = func(port string, err error) {
		limitMu.Lock()
		defer limitMu.Unlock()
		limits = append(limits, err)
	}
	stop := startManager(t, m)
	ctx := context.Background()

	a1 := learned("eth1", duidA, 1, "2001:db8:1::/56", time.Hour, 2*time.Hour)
	a2 := learned("eth1", duidA, 1, "2001:db8:2::/56", time.Hour, 2*time.Hour)
	b1 := learned("eth2", duidB, 7, "2001:db8:3::/56", time.Hour, 2*time.Hour)
	m.Apply(Update{Learn: []Learned{a1, a2}})
	m.Apply(Update{Learn: []Learned{b1}})
	list, err := m.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || list[0].Key != a1.Key || list[1].Key != a2.Key || list[2].Key != b1.Key {
		t.Fatalf("List = %+v", list)
	}
	if list[0].Expires != t0.Add(2*time.Hour) {
		t.Errorf("lifetimes not counted from the Manager's clock: %v", list[0].Expires)
	}

	// Removals apply before learning, in one Update.
	clk.add(time.Minute)
	m.Apply(Update{
		RemoveIAs: []RemoveIA{{Port: "eth1", DUID: duidA, IAID: 1, Reason: ReasonReleased}},
		Learn:     []Learned{learned("eth1", duidA, 1, "2001:db8:2::/56", time.Hour, 2*time.Hour)},
	})
	m.Apply(Update{Remove: []RemoveKey{{Key: b1.Key, Reason: ReasonZeroValid}}})
	list, _ = m.List(ctx)
	if len(list) != 1 || list[0].Key != a2.Key || list[0].Updated != t0.Add(time.Minute) {
		t.Fatalf("List after removals = %+v", list)
	}

	// Over the client limit: refused, counted, logged.
	var many []Learned
	for i := range 9 {
		many = append(many, learned("eth3", duidB, 1, "2001:db8:10"+string(rune('0'+i))+"::/56", time.Hour, time.Hour))
	}
	m.Apply(Update{Learn: many})
	list, _ = m.List(ctx)
	if len(list) != 9 { // a2 + 8 of 9
		t.Errorf("%d bindings, want 9", len(list))
	}

	cleared, err := m.Clear(ctx, Filter{Port: "eth3"})
	if err != nil || len(cleared) != 8 {
		t.Fatalf("Clear = %d, %v", len(cleared), err)
	}
	if cleared, _ := m.Clear(ctx, Filter{}); len(cleared) != 0 {
		t.Errorf("an empty filter cleared %d", len(cleared))
	}
	cleared, _ = m.Clear(ctx, Filter{All: true})
	if len(cleared) != 1 || cleared[0].Key != a2.Key {
		t.Errorf("Clear(All) = %+v", cleared)
	}
	if list, _ := m.List(ctx); len(list) != 0 {
		t.Errorf("List after Clear(All) = %+v", list)
	}
	stop()

	limitMu.Lock()
	if len(limits) != 1 || !errors.Is(limits[0], ErrClientLimit) {
		t.Errorf("OnRefused got %v, want [ErrClientLimit]", limits)
	}
	limitMu.Unlock()

	// The sinks saw every change, in order.
	type ev struct {
		op     Op
		prefix string
		reason string
	}
	var got []ev
	for _, c := range rec.all() {
		got = append(got, ev{c.Op, c.Binding.Prefix.String(), c.Reason})
	}
	want := []ev{
		{Added, "2001:db8:1::/56", ""}, {Added, "2001:db8:2::/56", ""}, {Added, "2001:db8:3::/56", ""},
		{Removed, "2001:db8:1::/56", ReasonReleased}, {Removed, "2001:db8:2::/56", ReasonReleased},
		{Added, "2001:db8:2::/56", ""}, {Removed, "2001:db8:3::/56", ReasonZeroValid},
	}
	for i := range 8 {
		want = append(want, ev{Added, "2001:db8:10" + string(rune('0'+i)) + "::/56", ""})
	}
	if len(got) < len(want) {
		t.Fatalf("sinks got %d changes, want at least %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		// RemoveIA walks a map: the order inside one RemoveIA is free.
		if i == 3 || i == 4 {
			if got[i].op != Removed || got[i].reason != ReasonReleased {
				t.Errorf("change %d = %+v", i, got[i])
			}
			continue
		}
		if got[i] != want[i] {
			t.Errorf("change %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	rest := got[len(want):]
	if len(rest) != 9 {
		t.Fatalf("%d changes after the limit test, want 9 operator removals", len(rest))
	}
	for _, e := range rest {
		if e.op != Removed || e.reason != ReasonOperator {
			t.Errorf("change %+v, want an operator removal", e)
		}
	}

	out := logs.String()
	for _, s := range []string{
		`msg="binding added" port=eth1 client=0003000102000000000a iaid=1 prefix=2001:db8:1::/56 next_hop=fe80::a mac=02:00:00:00:00:0a`,
		`level=INFO msg="binding removed" port=eth1 client=0003000102000000000a iaid=1 prefix=2001:db8:1::/56 reason=released`,
		`level=WARN msg="binding refused" port=eth3`,
		`reason="max_per_client reached"`,
		`reason=operator`,
	} {
		if !strings.Contains(out, s) {
			t.Errorf("log lacks %q:\n%s", s, out)
		}
	}
}

// A renewal logs at debug level, a route change at info.
func TestManagerLogLevels(t *testing.T) {
	clk := newFakeClock(t0)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := NewManager(NewTable(PortLimits{}, nil), clk.now, log)
	stop := startManager(t, m)
	l := learned("eth1", duidA, 1, "2001:db8:1::/56", time.Hour, 2*time.Hour)
	m.Apply(Update{Learn: []Learned{l}})
	m.Apply(Update{Learn: []Learned{l}})
	l.MAC = macB
	m.Apply(Update{Learn: []Learned{l}})
	if _, err := m.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	stop()
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("log:\n%s", logs.String())
	}
	for i, want := range []string{`level=INFO msg="binding added"`, `level=DEBUG msg="binding updated"`, `level=INFO msg="binding updated"`} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d = %q, want %q", i, lines[i], want)
		}
	}
}

// writeCounter counts the Writes it is given.
type writeCounter struct {
	mu    sync.Mutex
	calls int
	buf   bytes.Buffer
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls++
	return w.buf.Write(p)
}

// With LogBatch, a batch's lines go out in one write: three bindings
// learned in one Update are one write of three lines.
func TestManagerLogBatch(t *testing.T) {
	var out writeCounter
	lw := logw.New(&out)
	m := NewManager(NewTable(PortLimits{}, nil), newFakeClock(t0).now, slog.New(slog.NewTextHandler(lw, nil)))
	m.LogBatch = lw
	stop := startManager(t, m)
	var ls []Learned
	for i, p := range []string{"2001:db8:1::/56", "2001:db8:2::/56", "2001:db8:3::/56"} {
		ls = append(ls, learned("eth1", duidA, uint32(i+1), p, time.Hour, 2*time.Hour))
	}
	m.Apply(Update{Learn: ls})
	if _, err := m.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	stop()
	out.mu.Lock()
	defer out.mu.Unlock()
	if n := strings.Count(out.buf.String(), `msg="binding added"`); n != 3 || out.calls != 1 {
		t.Errorf("%d lines in %d writes, want 3 in 1:\n%s", n, out.calls, out.buf.String())
	}
}

// With a fake clock, expiry happens on the first event after the valid
// lifetime, never before.
func TestManagerExpiryFakeClock(t *testing.T) {
	clk := newFakeClock(t0)
	rec := &recorder{}
	m := NewManager(NewTable(PortLimits{}, nil), clk.now, nil, rec.sink)
	startManager(t, m)
	ctx := context.Background()
	m.Apply(Update{Learn: []Learned{learned("eth1", duidA, 1, "2001:db8:1::/56", 100*time.Second, 100*time.Second)}})
	length := func() int {
		var n int
		if err := m.Do(ctx, func(t *Table) { n = t.Len() }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := length(); n != 1 { // Apply is asynchronous: let it run at t0
		t.Fatalf("%d bindings", n)
	}
	clk.set(t0.Add(100*time.Second - time.Millisecond))
	for range 3 { // each call is an event, and expiry runs after each
		if n := length(); n != 1 {
			t.Fatalf("expired at +99.999s (%d left)", n)
		}
	}
	clk.set(t0.Add(100 * time.Second))
	// Expiry runs between batches of events: an event sent right after
	// another may share its batch and run before it, so poll.
	deadline := time.Now().Add(10 * time.Second)
	for length() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("not expired at +100s")
		}
		time.Sleep(time.Millisecond)
	}
	ch := rec.all()
	if last := ch[len(ch)-1]; last.Op != Removed || last.Reason != ReasonExpired {
		t.Errorf("last change %+v", last)
	}
}

// The expiry timer fires by itself, with the real clock.
func TestManagerExpiryTimer(t *testing.T) {
	rec := &recorder{}
	m := NewManager(NewTable(PortLimits{}, nil), nil, nil, rec.sink)
	startManager(t, m)
	ctx := context.Background()
	learnedAt := time.Now()
	m.Apply(Update{Learn: []Learned{
		learned("eth1", duidA, 1, "2001:db8:1::/56", 50*time.Millisecond, 50*time.Millisecond),
		learned("eth1", duidA, 1, "2001:db8:2::/56", time.Hour, time.Hour),
	}})
	deadline := time.Now().Add(10 * time.Second)
	for {
		removed, at, ok := rec.firstRemoved()
		if ok {
			if removed.Reason != ReasonExpired || removed.Binding.Prefix != pfx("2001:db8:1::/56") {
				t.Errorf("removed %+v", removed)
			}
			if at.Before(removed.Binding.Expires) || at.Sub(learnedAt) < 50*time.Millisecond {
				t.Errorf("expired at %v, before its end %v", at, removed.Binding.Expires)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("binding with a 50ms lifetime still there after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	list, err := m.List(ctx)
	if err != nil || len(list) != 1 || list[0].Prefix != pfx("2001:db8:2::/56") {
		t.Errorf("List = %+v, %v", list, err)
	}
}

func TestManagerStopped(t *testing.T) {
	m := NewManager(NewTable(PortLimits{}, nil), nil, nil)
	stop := startManager(t, m)
	stop()
	ctx := context.Background()
	if _, err := m.List(ctx); !errors.Is(err, ErrStopped) {
		t.Errorf("List after stop: %v", err)
	}
	if _, err := m.Clear(ctx, Filter{All: true}); !errors.Is(err, ErrStopped) {
		t.Errorf("Clear after stop: %v", err)
	}
	// Apply and Post after stop return without blocking, even with the
	// queue full.
	done := make(chan struct{})
	go func() {
		for range 5000 {
			m.Apply(Update{})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Apply blocked after stop")
	}
}

func TestManagerDoContext(t *testing.T) {
	m := NewManager(NewTable(PortLimits{}, nil), nil, nil)
	startManager(t, m)
	// Block the owner so the next call has to wait.
	gate := make(chan struct{})
	m.Post(func(*Table) { <-gate })
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := m.List(ctx)
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("List with a canceled context: %v", err)
	}
	close(gate)
	if _, err := m.List(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Many goroutines apply at once (run with -race).
func TestManagerConcurrent(t *testing.T) {
	m := NewManager(NewTable(PortLimits{}, nil), nil, nil)
	startManager(t, m)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				l := learned("eth1", duidA, uint32(g), "2001:db8::/56", time.Hour, time.Hour)
				l.Prefix = netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 4: byte(g), 5: byte(i)}), 48)
				m.Apply(Update{Learn: []Learned{l}})
			}
		}()
	}
	wg.Wait()
	list, err := m.List(context.Background())
	if err != nil || len(list) != 800 {
		t.Fatalf("List = %d, %v", len(list), err)
	}
}

// A List or Clear whose context ends while the owner runs it must not
// read its result concurrently with the owner writing it (run with -race).
func TestManagerCanceledCallNoRace(t *testing.T) {
	m := NewManager(NewTable(PortLimits{}, nil), nil, nil)
	startManager(t, m)
	m.Apply(Update{Learn: []Learned{learned("eth1", duidA, 1, "2001:db8:1::/56", time.Hour, time.Hour)}})
	for i := range 200 {
		gate := make(chan struct{})
		m.Post(func(*Table) { <-gate })
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 2)
		go func() {
			_, err := m.List(ctx)
			errc <- err
		}()
		go func() {
			_, err := m.Clear(ctx, Filter{Port: "none"})
			errc <- err
		}()
		if i%2 == 0 {
			time.Sleep(100 * time.Microsecond)
		}
		cancel()
		close(gate)
		for range 2 {
			if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
				t.Fatal(err)
			}
		}
	}
}

// TestManagerRecoveryLogs: bindings a Bulk Leasequery recovery installs,
// and those it removes as not at the server, are logged one by one only
// at debug (the recovery logs its own summary); a snooped one at info.
func TestManagerRecoveryLogs(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		var logs testutil.SyncBuffer
		log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: level}))
		m := NewManager(NewTable(PortLimits{}, nil), newFakeClock(t0).now, log)
		startManager(t, m)
		rec := learned("eth1", duidA, 1, "2001:db8:1::/56", time.Hour, 2*time.Hour)
		rec.Source = SourceLeasequery
		snooped := learned("eth2", duidB, 1, "2001:db8:2::/56", time.Hour, 2*time.Hour)
		m.Apply(Update{Learn: []Learned{rec, snooped}})
		m.Apply(Update{Remove: []RemoveKey{{Key: rec.Key, Reason: ReasonNotAtServer}}})
		// The sinks and logs see a batch after its events ran: wait for
		// the snooped binding's line, logged in the same batch.
		for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), "prefix=2001:db8:2::/56"); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				break
			}
		}
		if _, err := m.List(context.Background()); err != nil {
			t.Fatal(err)
		}
		out := logs.String()
		debug := level == slog.LevelDebug
		if got := strings.Contains(out, "prefix=2001:db8:1::/56"); got != debug {
			t.Errorf("level %v: recovered binding logged %v, want %v:\n%s", level, got, debug, out)
		}
		if !strings.Contains(out, "prefix=2001:db8:2::/56") {
			t.Errorf("level %v: snooped binding not logged:\n%s", level, out)
		}
	}
}

// TestManagerApplyBatch: one Apply of several Updates applies them in
// order, each one's removals before its learning, and hands the sinks one
// batch; OnInstalled then gets one time for each binding added from an
// Update with Received set (not for a renewal, nor without Received), at
// least as long as the time since Received.
func TestManagerApplyBatch(t *testing.T) {
	rec := &recorder{}
	m := NewManager(NewTable(PortLimits{}, nil), nil, nil, rec.sink)
	var mu sync.Mutex
	var installed []time.Duration
	m.OnInstalled = func(d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		installed = append(installed, d)
	}
	stop := startManager(t, m)
	defer stop()

	a := learned("eth1", duidA, 1, "2001:db8:1::/56", time.Hour, time.Hour)
	b := learned("eth1", duidB, 2, "2001:db8:2::/56", time.Hour, time.Hour)
	recv := time.Now().Add(-3 * time.Millisecond)
	us := []Update{
		{Learn: []Learned{a}, Received: recv},
		// Released, then learned again by the next Update of the batch:
		// in order, the binding is there at the end.
		{RemoveIAs: []RemoveIA{{Port: "eth1", DUID: duidA, IAID: 1, Reason: ReasonReleased}}, Received: recv},
		{Learn: []Learned{a, b}, Received: recv},
		{Learn: []Learned{b}, Received: recv}, // a renewal: not an install
	}
	m.Apply(us...)
	us[0].Learn = nil // Apply must not keep the caller's slice
	list, err := m.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Key != a.Key || list[1].Key != b.Key {
		t.Fatalf("List = %+v, want a and b", list)
	}
	// List ran with the batch, maybe before the sinks had it.
	waitUntil(t, func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return len(rec.batches) > 0 })
	rec.mu.Lock()
	batches := len(rec.batches)
	var ops []Op
	for _, c := range rec.batches[0] {
		ops = append(ops, c.Op)
	}
	rec.mu.Unlock()
	if want := []Op{Added, Removed, Added, Added, Updated}; batches != 1 || !slices.Equal(ops, want) {
		t.Errorf("sinks got %d batches, the first %v; want 1 batch %v", batches, ops, want)
	}
	// OnInstalled runs after the sinks.
	waitUntil(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(installed) >= 3 })
	mu.Lock()
	got := slices.Clone(installed)
	mu.Unlock()
	if len(got) != 3 {
		t.Fatalf("OnInstalled called %d times, want 3 (a, a again, b)", len(got))
	}
	for _, d := range got {
		if d < 3*time.Millisecond {
			t.Errorf("install time %v, less than the 3ms since Received", d)
		}
	}

	// Without Received, nothing is timed.
	m.Apply(Update{Learn: []Learned{learned("eth1", duidB, 3, "2001:db8:3::/56", time.Hour, time.Hour)}})
	waitUntil(t, func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return len(rec.batches) > 1 })
	if _, err := m.List(context.Background()); err != nil { // after the second batch's OnInstalled
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(installed) != 3 {
		t.Errorf("OnInstalled called for an Update without Received: %d calls", len(installed))
	}
}

// waitUntil polls cond for up to 5 s.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("condition not met in 5 s")
		}
	}
}

// TestManagerInstalledAfterDataplaneSinks: OnInstalled runs after the
// first DataplaneSinks sinks have taken the batch and before the others.
func TestManagerInstalledAfterDataplaneSinks(t *testing.T) {
	var mu sync.Mutex
	var order []string
	note := func(what string) {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, what)
	}
	dp := func([]Change) { note("dataplane") }
	other := func([]Change) { note("store") }
	m := NewManager(NewTable(PortLimits{}, nil), nil, nil, dp, other)
	m.OnInstalled = func(time.Duration) { note("installed") }
	m.DataplaneSinks = 1
	stop := startManager(t, m)
	defer stop()
	m.Apply(Update{Learn: []Learned{learned("eth1", duidA, 1, "2001:db8:1::/56", time.Hour, time.Hour)}, Received: time.Now()})
	waitUntil(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == 3 })
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"dataplane", "installed", "store"}; !slices.Equal(order, want) {
		t.Errorf("order %v, want %v", order, want)
	}
}

// TestLogChangeLines pins the text of the per-binding log lines, which
// operators grep and tests match, and what one costs: a line for every
// binding that comes or goes is formatted into one buffer, so it makes
// one string however many values it carries (the handler's own record
// aside).
func TestLogChangeLines(t *testing.T) {
	var logs bytes.Buffer
	m := NewManager(NewTable(PortLimits{}, nil), nil, slog.New(slog.NewTextHandler(&logs, nil)))
	l := learned("eth2", duidB, 7, "2001:db8:100:100::/56", time.Hour, time.Hour)
	b := Binding{Key: l.Key, NextHop: l.NextHop, MAC: l.MAC, Expires: t0.Add(time.Hour), ServerDUID: srvID}
	from := Key{Port: "eth1", DUID: duidA, IAID: 1, Prefix: b.Prefix}
	for _, tc := range []struct {
		c    Change
		want string
	}{
		{Change{Op: Added, Binding: b, RouteChanged: true},
			`level=INFO msg="binding added" port=eth2 client=0003000102000000000b iaid=7 prefix=2001:db8:100:100::/56 next_hop=fe80::b mac=02:00:00:00:00:0b valid_until=2025-06-01T13:00:00Z`},
		{Change{Op: Added, Binding: b, RouteChanged: true, MovedFrom: &from},
			`level=INFO msg="binding moved" port=eth2 client=0003000102000000000b iaid=7 prefix=2001:db8:100:100::/56 next_hop=fe80::b mac=02:00:00:00:00:0b valid_until=2025-06-01T13:00:00Z from_port=eth1 from_client=0003000102000000000a from_iaid=1`},
		{Change{Op: Updated, Binding: b, RouteChanged: true},
			`level=INFO msg="binding updated" port=eth2 client=0003000102000000000b iaid=7 prefix=2001:db8:100:100::/56 next_hop=fe80::b mac=02:00:00:00:00:0b valid_until=2025-06-01T13:00:00Z`},
		{Change{Op: Removed, Binding: b, Reason: ReasonReleased, RouteChanged: true},
			`level=INFO msg="binding removed" port=eth2 client=0003000102000000000b iaid=7 prefix=2001:db8:100:100::/56 reason=released`},
	} {
		logs.Reset()
		m.logChange(&tc.c)
		line := strings.TrimSpace(logs.String())
		if _, rest, ok := strings.Cut(line, " level="); !ok || "level="+rest != tc.want {
			t.Errorf("logged\n%s\nwant (after the time)\n%s", line, tc.want)
		}
	}
	m = NewManager(NewTable(PortLimits{}, nil), nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	c := Change{Op: Added, Binding: b, RouteChanged: true}
	// The string, and the record's room for attributes past its first five.
	if n := testing.AllocsPerRun(200, func() { m.logChange(&c) }); n > 2 {
		t.Errorf("a binding's log line makes %v allocations, want at most 2", n)
	}
}

// TestRecycleChanges checks that the Manager's batches reuse one slice,
// and that a batch too large to keep is let go.
func TestRecycleChanges(t *testing.T) {
	tb := NewTable(PortLimits{}, nil)
	mustLearn(t, tb, t0, learned("eth1", duidA, 1, "2001:db8:1::/56", time.Hour, time.Hour))
	first := tb.TakeChanges()
	tb.RecycleChanges(first)
	if c := tb.TakeChanges(); c != nil {
		t.Fatalf("changes %+v with nothing recorded", c)
	}
	mustLearn(t, tb, t0, learned("eth1", duidA, 1, "2001:db8:2::/56", time.Hour, time.Hour))
	second := tb.TakeChanges()
	if len(second) != 1 || &second[0] != &first[0] || second[0].Binding.Prefix != pfx("2001:db8:2::/56") {
		t.Fatalf("the second batch %+v does not reuse the first's slice", second)
	}
	// Changes recorded before the hand-back are kept, not overwritten.
	mustLearn(t, tb, t0, learned("eth1", duidA, 1, "2001:db8:3::/56", time.Hour, time.Hour))
	tb.RecycleChanges(second)
	if got := tb.TakeChanges(); len(got) != 1 || got[0].Binding.Prefix != pfx("2001:db8:3::/56") {
		t.Fatalf("pending changes lost to a recycled slice: %+v", got)
	}
	tb.RecycleChanges(make([]Change, 0, maxRecycledChanges+1))
	if tb.changes != nil {
		t.Error("a batch over maxRecycledChanges is kept")
	}
}

// TestManagerReusesBatches checks that the Manager's batches share one
// slice, across the turns of its loop that find nothing to hand on (as
// the Reply to a Release whose bindings went when the Release was
// relayed).
func TestManagerReusesBatches(t *testing.T) {
	var got []*Change
	m := NewManager(NewTable(PortLimits{}, nil), nil, nil, func(c []Change) { got = append(got, &c[0]) })
	for _, p := range []string{"2001:db8:1::/56", "2001:db8:2::/56", "2001:db8:3::/56"} {
		mustLearn(t, m.t, t0, learned("eth1", duidA, 1, p, time.Hour, time.Hour))
		m.flush()
		m.flush() // a turn with no changes
	}
	if len(got) != 3 || got[1] != got[0] || got[2] != got[0] {
		t.Errorf("batches at %p, want one slice reused", got)
	}
}
