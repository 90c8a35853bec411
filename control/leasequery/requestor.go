package leasequery

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// Errors of Recover.
var (
	ErrBusy          = errors.New("a leasequery recovery is already running")
	ErrUnknownServer = errors.New("not a server in leasequery.servers")
	ErrNoServers     = errors.New("no leasequery servers configured")
)

// Defaults (RFC 5460 section 5.6, and pdrelay's own).
const (
	DefaultConnTimeout = 30 * time.Second
	DefaultDataTimeout = 30 * time.Second
	DefaultMaxRetry    = 60 * time.Second
	DefaultRetryBase   = time.Second
	DefaultAttempts    = 8
	DefaultBatch       = 512
	maxInflight        = 4
)

// Config configures a Requestor. Zero durations and counts take the
// defaults; nil hooks the real network, clock and randomness.
type Config struct {
	Servers   []netip.AddrPort
	Queries   []Query
	ClientID  []byte // the relay's DUID, sent as OPTION_CLIENTID
	Converter Converter

	ConnTimeout time.Duration // BULK_LQ_CONN_TIMEOUT
	DataTimeout time.Duration // BULK_LQ_DATA_TIMEOUT, on every read and write
	MaxRetry    time.Duration // BULK_LQ_MAX_RETRY: the backoff's cap
	RetryBase   time.Duration // the first backoff
	// Attempts bounds the connections per server and run, so a recovery
	// ends (and says so) when a server stays away.
	Attempts int
	// Batch is how many bindings go to the binding manager at once.
	Batch int

	Dial  func(ctx context.Context, addr netip.AddrPort) (net.Conn, error)
	Sleep func(ctx context.Context, d time.Duration) error
	Rand  func() float64 // in [0, 1), for the jitter
	Now   func() time.Time
}

// Requestor recovers bindings from Bulk Leasequery servers into a
// binding manager. Its methods are safe for concurrent use; one recovery
// runs at a time.
type Requestor struct {
	cfg Config
	mgr *binding.Manager
	log *slog.Logger

	running sync.Mutex // held by the recovery in progress
	// inflight bounds the batches handed to the manager and not yet
	// learned, so the manager's queue never fills with recovery work and
	// the relay's own events wait behind at most a few batches.
	inflight chan struct{}
	mu       sync.Mutex
	status   map[netip.AddrPort]*serverState
	order    []netip.AddrPort
}

// serverState is a server's status and counters, guarded by mu.
type serverState struct {
	running   bool
	last      *ServerReport
	runs      map[string]uint64 // by result
	totals    Counts
	dropped   map[string]uint64 // by drop reason
	statuses  map[string]uint64 // error statuses received, by name
	connFails uint64
}

// New returns a Requestor for cfg applying what it learns through mgr.
// log may be nil.
func New(cfg Config, mgr *binding.Manager, log *slog.Logger) *Requestor {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.ConnTimeout, DefaultConnTimeout)
	def(&cfg.DataTimeout, DefaultDataTimeout)
	def(&cfg.MaxRetry, DefaultMaxRetry)
	def(&cfg.RetryBase, DefaultRetryBase)
	if cfg.Attempts <= 0 {
		cfg.Attempts = DefaultAttempts
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Dial == nil {
		timeout := cfg.ConnTimeout
		cfg.Dial = func(ctx context.Context, a netip.AddrPort) (net.Conn, error) {
			d := net.Dialer{Timeout: timeout}
			return d.DialContext(ctx, "tcp", a.String())
		}
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Requestor{cfg: cfg, mgr: mgr, log: log, status: make(map[netip.AddrPort]*serverState),
		inflight: make(chan struct{}, maxInflight)}
	for _, s := range cfg.Servers {
		r.order = append(r.order, s)
		r.status[s] = &serverState{runs: map[string]uint64{}, dropped: map[string]uint64{}, statuses: map[string]uint64{}}
	}
	return r
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Recover queries the servers in parallel (RFC 5460 section 6.4) and
// merges their answers into the binding table: only the server named by
// only when it is not "" (an address, or address and port). It returns
// ErrBusy while another recovery runs.
func (r *Requestor) Recover(ctx context.Context, only string) (Report, error) {
	servers, err := r.pick(only)
	if err != nil {
		return Report{}, err
	}
	if !r.running.TryLock() {
		return Report{}, ErrBusy
	}
	defer r.running.Unlock()
	start := r.cfg.Now()
	rep := Report{Started: start, Servers: make([]ServerReport, len(servers))}
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Go(func() { rep.Servers[i] = r.recoverServer(ctx, s) })
	}
	wg.Wait()
	complete := 0
	for i := range rep.Servers {
		rep.Counts.add(rep.Servers[i].Counts)
		if rep.Servers[i].Result == ResultComplete {
			complete++
		}
	}
	rep.DurationSeconds = r.cfg.Now().Sub(start).Seconds()
	r.log.Info("leasequery recovery done", "servers", len(servers), "complete", complete,
		"received", rep.Received, "added", rep.Added, "updated", rep.Updated, "removed", rep.Removed,
		"refused", rep.Refused, "discarded", rep.Discarded, "expired", rep.Expired,
		"took", time.Duration(rep.DurationSeconds*float64(time.Second)).Round(time.Millisecond))
	return rep, nil
}

// pick returns the servers a recovery queries.
func (r *Requestor) pick(only string) ([]netip.AddrPort, error) {
	if len(r.order) == 0 {
		return nil, ErrNoServers
	}
	if only == "" {
		return r.order, nil
	}
	for _, s := range r.order {
		if s.String() == only || s.Addr().String() == only || s.Addr().WithZone("").String() == only {
			return []netip.AddrPort{s}, nil
		}
	}
	return nil, fmt.Errorf("server %q: %w", only, ErrUnknownServer)
}

// Status returns every server's status, in config order.
func (r *Requestor) Status() []ServerStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]ServerStatus, 0, len(r.order))
	for _, s := range r.order {
		st := r.status[s]
		ss := ServerStatus{Server: s.String(), Running: st.running}
		if st.last != nil {
			last := *st.last
			ss.Last = &last
		}
		out = append(out, ss)
	}
	return out
}

// recoverServer runs the queries against one server, connecting again
// with exponential backoff (RFC 5460 section 6.1) while queries are left
// that are worth asking again, up to Attempts connections.
func (r *Requestor) recoverServer(ctx context.Context, srv netip.AddrPort) ServerReport {
	st := r.status[srv]
	r.mu.Lock()
	st.running = true
	r.mu.Unlock()
	start := r.cfg.Now()
	log := r.log.With("server", srv.String())
	runs := make([]*queryRun, len(r.cfg.Queries))
	for i := range r.cfg.Queries {
		runs[i] = &queryRun{q: &r.cfg.Queries[i]}
	}
	rep := ServerReport{Server: srv.String(), Started: start}
	var lastErr error
	for attempt := 0; attempt < r.cfg.Attempts; attempt++ {
		if attempt > 0 {
			d := backoff(attempt-1, r.cfg.RetryBase, r.cfg.MaxRetry, r.cfg.Rand())
			log.Warn("leasequery retrying", "attempt", attempt+1, "of", r.cfg.Attempts, "after", d.Round(time.Millisecond),
				"queries_left", left(runs), "err", lastErr)
			if err := r.cfg.Sleep(ctx, d); err != nil {
				lastErr = err
				break
			}
		}
		rep.Attempts++
		err := r.session(ctx, srv, runs, log)
		if err != nil {
			lastErr = err
			r.mu.Lock()
			st.connFails++
			r.mu.Unlock()
			log.Warn("leasequery connection failed", "attempt", attempt+1, "err", err)
			for _, qr := range runs {
				if !qr.done {
					qr.err = err
				}
			}
		}
		if left(runs) == 0 || ctx.Err() != nil {
			if ctx.Err() != nil && lastErr == nil {
				lastErr = ctx.Err()
			}
			break
		}
	}
	// Every batch posted has run once this returns: the counts are final.
	_ = r.mgr.Do(context.WithoutCancel(ctx), func(*binding.Table) {})

	complete := 0
	for _, qr := range runs {
		q := qr.report()
		if qr.complete {
			complete++
		} else if q.Error == "" && lastErr != nil && !qr.hasStat {
			q.Error = lastErr.Error()
		}
		rep.Queries = append(rep.Queries, q)
		rep.Counts.add(q.Counts)
		if rep.ServerDUID == "" && qr.serverID != "" {
			rep.ServerDUID = hex.EncodeToString([]byte(qr.serverID))
		}
	}
	switch {
	case complete == len(runs):
		rep.Result = ResultComplete
	case complete > 0:
		rep.Result = ResultPartial
	default:
		rep.Result = ResultFailed
	}
	if lastErr != nil && rep.Result != ResultComplete {
		rep.Error = lastErr.Error()
	}
	rep.DurationSeconds = r.cfg.Now().Sub(start).Seconds()
	level := slog.LevelInfo
	if rep.Result != ResultComplete {
		level = slog.LevelWarn
	}
	log.Log(ctx, level, "leasequery server done", "result", rep.Result, "attempts", rep.Attempts,
		"server_duid", rep.ServerDUID, "received", rep.Received, "added", rep.Added, "updated", rep.Updated,
		"removed", rep.Removed, "refused", rep.Refused, "discarded", rep.Discarded, "expired", rep.Expired,
		"took", time.Duration(rep.DurationSeconds*float64(time.Second)).Round(time.Millisecond), "err", rep.Error)

	r.mu.Lock()
	st.running = false
	last := rep
	st.last = &last
	st.runs[rep.Result]++
	st.totals.add(rep.Counts)
	r.mu.Unlock()
	return rep
}

func left(runs []*queryRun) int {
	n := 0
	for _, qr := range runs {
		if !qr.done {
			n++
		}
	}
	return n
}

// learnItem is one binding on its way to the table, with the query it
// counts for.
type learnItem struct {
	c  Candidate
	qr *queryRun
}

// session runs one connection: it sends every query not yet done, reads
// the interleaved replies until each has ended, and feeds the bindings
// to the manager in batches as they come. An error means the connection
// failed; the queries it did not end stay to be retried.
func (r *Requestor) session(ctx context.Context, srv netip.AddrPort, runs []*queryRun, log *slog.Logger) error {
	dctx, cancel := context.WithTimeout(ctx, r.cfg.ConnTimeout)
	conn, err := r.cfg.Dial(dctx, srv)
	cancel()
	if err != nil {
		return fmt.Errorf("connect to %s: %w", srv, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	attemptStart := r.cfg.Now()
	stream := NewStream()
	var out []byte
	for i, qr := range runs {
		if qr.done {
			continue
		}
		xid, err := r.addQuery(stream, i)
		if err != nil {
			return err
		}
		msg := AppendLeasequery(nil, xid, r.cfg.ClientID, *qr.q)
		if out, err = dhcp6.AppendFramed(out, msg); err != nil {
			return fmt.Errorf("build %s query: %w", qr.q, err)
		}
	}
	if err := conn.SetWriteDeadline(time.Now().Add(r.cfg.DataTimeout)); err != nil {
		return fmt.Errorf("send queries: %w", err)
	}
	if _, err := conn.Write(out); err != nil {
		if isTimeout(err) {
			return fmt.Errorf("send queries: blocked for %s (data timeout): %w", r.cfg.DataTimeout, err)
		}
		return fmt.Errorf("send queries: %w", ctxErr(ctx, err))
	}

	fr := dhcp6.NewFrameReader(bufio.NewReaderSize(conn, 64<<10))
	batch := make([]learnItem, 0, r.cfg.Batch)
	var cands []Candidate
	flush := func() {
		if len(batch) > 0 {
			r.post(ctx, batch)
			batch = make([]learnItem, 0, r.cfg.Batch)
		}
	}
	defer flush()
	for stream.Outstanding() > 0 {
		if err := conn.SetReadDeadline(time.Now().Add(r.cfg.DataTimeout)); err != nil {
			return fmt.Errorf("read replies: %w", err)
		}
		msg, err := fr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("server closed the connection with %d queries unanswered", stream.Outstanding())
			}
			if isTimeout(err) {
				return fmt.Errorf("read replies: no data for %s (data timeout): %w", r.cfg.DataTimeout, err)
			}
			return fmt.Errorf("read replies: %w", ctxErr(ctx, err))
		}
		ev, err := stream.Handle(msg)
		if err != nil {
			return err
		}
		qr := runs[ev.Query]
		if qr.serverID == "" {
			if sid := stream.ServerID(ev.Query); sid != nil {
				qr.serverID = string(sid)
			}
		}
		switch ev.Kind {
		case EvReply, EvData:
			for cd := range ev.Options.Each(dhcp6.OptClientData) {
				var expired int
				cands, expired, err = r.cfg.Converter.Convert(cd, qr.serverID, qr.q, cands[:0])
				qr.expired += expired
				qr.received += len(cands) + expired
				if err != nil {
					qr.discarded++
					r.dropped(srv, dropReason(err))
					log.Debug("leasequery client data discarded", "query", qr.q.String(), "err", err)
					continue
				}
				for _, c := range cands {
					if batch = append(batch, learnItem{c, qr}); len(batch) == cap(batch) {
						flush()
					}
				}
			}
		case EvDiscarded:
			qr.discarded++
			r.dropped(srv, DropNoData)
		case EvEnd:
			flush()
			r.ended(srv, qr, &ev, attemptStart, log)
		}
	}
	return nil
}

// ended records the end of a query: complete, or an error status.
func (r *Requestor) ended(srv netip.AddrPort, qr *queryRun, ev *Event, attemptStart time.Time, log *slog.Logger) {
	if ev.Complete() {
		qr.done, qr.complete, qr.err = true, true, nil
		if qr.q.removesStale() && qr.serverID != "" {
			r.removeStale(qr, attemptStart, log)
		}
		return
	}
	qr.status, qr.hasStat = ev.Status, true
	again := retryable(ev.Status, qr.q)
	qr.done = !again
	msg := ev.StatusMsg
	if len(msg) > 200 {
		msg = msg[:200]
	}
	qr.err = fmt.Errorf("server answered %s: %q", dhcp6.StatusName(ev.Status), msg)
	label := "other" // a server must not grow the metric's label set at will
	if ev.Status <= dhcp6.StatusQueryTerminated {
		label = dhcp6.StatusName(ev.Status)
	}
	r.mu.Lock()
	r.status[srv].statuses[label]++
	r.mu.Unlock()
	log.Warn("leasequery status", "query", qr.q.String(), "status", dhcp6.StatusName(ev.Status), "message", msg,
		"retry", again, "hint", statusHint(ev.Status))
}

// post hands a batch to the binding manager, which learns it on its own
// goroutine. It waits while maxInflight batches are queued: the stream is
// read no faster than the table takes it.
func (r *Requestor) post(ctx context.Context, batch []learnItem) {
	select {
	case r.inflight <- struct{}{}:
	case <-ctx.Done():
		return // stopping: the rest of the stream is not learned
	}
	r.mgr.Post(func(t *binding.Table) {
		defer func() { <-r.inflight }()
		now := r.cfg.Now()
		for i := range batch {
			it := &batch[i]
			l := it.c.Learned
			// RFC 5007 client data has no IAID: keep the one the table
			// has for this prefix, port and client, so the binding is
			// updated rather than replaced.
			if b, ok := t.ByPrefix(l.Prefix); ok && b.Port == l.Port && b.DUID == l.DUID {
				l.IAID = b.IAID
			}
			op, err := t.Learn(now, l)
			switch {
			case err != nil:
				it.qr.refused.Add(1)
				r.mgr.Refused(now, l.Key, "leasequery", err)
			case op == binding.Added:
				it.qr.added.Add(1)
			case op == binding.Updated:
				it.qr.updated.Add(1)
			}
		}
	})
}

// removeStale removes, after a complete answer, the bindings in the
// query's scope that the answer did not return: those of the server
// (their Server-ID) on the query's port (all ports for a relay-id
// query) that nothing has confirmed since the attempt began. A binding
// the answer returned, or a Reply relayed meanwhile, was confirmed; it
// stays.
func (r *Requestor) removeStale(qr *queryRun, since time.Time, log *slog.Logger) {
	sid, port := qr.serverID, qr.q.Port
	name := qr.q.String()
	r.mgr.Post(func(t *binding.Table) {
		n := t.RemoveWhere(func(b *binding.Binding) bool {
			return b.ServerDUID == sid && (port == "" || b.Port == port) && b.Updated.Before(since)
		}, binding.ReasonNotAtServer)
		qr.removed.Add(int64(n))
		if n > 0 {
			log.Info("bindings not at the server removed", "query", name, "removed", n,
				"server_duid", hex.EncodeToString([]byte(sid)))
		}
	})
}

func (r *Requestor) dropped(srv netip.AddrPort, reason string) {
	r.mu.Lock()
	r.status[srv].dropped[reason]++
	r.mu.Unlock()
}

// addQuery gives query index a random transaction id distinct from the
// stream's other outstanding ones.
func (r *Requestor) addQuery(s *Stream, index int) ([3]byte, error) {
	for {
		v := rand.Uint32()
		xid := [3]byte{byte(v >> 16), byte(v >> 8), byte(v)}
		err := s.Add(xid, index)
		if err == nil || errors.Is(err, ErrStreamTooLong) {
			return xid, err
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ctxErr returns the context's error when it ended (the connection was
// closed because of it), else err.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Queries names the queries a recovery sends each server, comma-separated.
func (r *Requestor) Queries() string {
	names := make([]string, len(r.cfg.Queries))
	for i := range r.cfg.Queries {
		names[i] = r.cfg.Queries[i].String()
	}
	return strings.Join(names, ",")
}
