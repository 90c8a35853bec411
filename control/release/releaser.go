package release

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/config"
	"github.com/pdrelay/pdrelay/control/dhcp6"
	"github.com/pdrelay/pdrelay/control/relay"
)

// ReasonReleased is the removal reason of a binding the relay released at
// the server.
const ReasonReleased = "relay-released"

// Config configures a Releaser.
type Config struct {
	Mode config.ReleaseMode
	// Timeout and MaxRC are the retransmission's IRT and MRC (REL_TIMEOUT
	// 1 s, REL_MAX_RC 4 by default).
	Timeout time.Duration
	MaxRC   int
	// Operator allows Release (pdrelay clear --release).
	Operator bool
	// Mode release-request: the message types, where to send, the
	// relay's DUID and the ports' Interface-IDs (a port missing here
	// sends its name).
	RequestType, ReplyType dhcp6.MessageType
	Server                 netip.AddrPort
	Uplink                 string // the interface requests leave by; "" for none (tests)
	RelayID                []byte
	InterfaceIDs           map[string][]byte
	// MaxMessage bounds a RELEASE-REQUEST; default DefaultMaxMessage.
	MaxMessage int
	// MaxParallel bounds the exchanges in flight at once; default 32.
	MaxParallel int
}

// ConfigFrom builds a Releaser's Config from the relay's.
func ConfigFrom(c *config.Config, relayID []byte) Config {
	r := c.Release
	rc := Config{
		Mode: r.Mode, Timeout: r.Timeout, MaxRC: r.MaxRC, Operator: r.Triggers.Operator,
		RequestType: r.Types.Request, ReplyType: r.Types.Reply, Server: r.Server,
		Uplink: c.Uplink.Interface, RelayID: relayID, InterfaceIDs: map[string][]byte{},
	}
	for _, d := range c.Downlinks {
		id := d.InterfaceID
		if id == "" {
			id = d.Interface
		}
		rc.InterfaceIDs[d.Interface] = []byte(id)
	}
	return rc
}

// Table is what a Releaser needs of the binding manager: running a
// function on the owner goroutine. *binding.Manager is one.
type Table interface {
	Do(ctx context.Context, f func(*binding.Table)) error
}

// Originator relays a message the relay builds on a client's behalf;
// *relay.Conn is one.
type Originator interface {
	Originate(o relay.Originated) error
}

// Releaser releases bindings at the server, in the configured mode, and
// clears locally those the server released. See the package doc.
type Releaser struct {
	cfg Config
	log *slog.Logger
	tbl Table
	met *Metrics

	udp  *udpTransport // release-request
	orig Originator    // client-release

	mu      sync.Mutex
	waiting map[clientKey]chan dhcp6.Message // client-release exchanges

	sem  chan struct{}
	stop chan struct{} // closed by Close
	once sync.Once

	// rnd returns RAND in [-0.1, 0.1]; xid a fresh transaction id.
	rnd func() float64
	xid func() [3]byte
}

type clientKey struct {
	port string
	xid  [3]byte
	duid string
}

// New returns a Releaser. In mode release-request it opens its socket to
// cfg.Server; Close closes it.
func New(ctx context.Context, cfg Config, tbl Table, met *Metrics, log *slog.Logger) (*Releaser, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if met == nil {
		met = NewMetrics()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = config.DefaultReleaseTimeout
	}
	if cfg.MaxRC <= 0 {
		cfg.MaxRC = config.DefaultReleaseMaxRC
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = DefaultMaxMessage
	}
	if cfg.MaxParallel <= 0 {
		cfg.MaxParallel = 32
	}
	r := &Releaser{
		cfg: cfg, log: log, tbl: tbl, met: met,
		waiting: make(map[clientKey]chan dhcp6.Message),
		sem:     make(chan struct{}, cfg.MaxParallel),
		stop:    make(chan struct{}),
		rnd:     func() float64 { return mrand.Float64()*0.2 - 0.1 },
		xid:     randomXID,
	}
	if cfg.Mode == config.ReleaseRequest {
		conn, err := dialUDP(ctx, cfg.Server, cfg.Uplink)
		if err != nil {
			return nil, fmt.Errorf("release.server %s: open socket: %w", cfg.Server, err)
		}
		r.udp = &udpTransport{
			conn: conn, typ: cfg.ReplyType, waiting: make(map[[3]byte]chan requestReply),
			discard: func(reason string) { met.discarded.WithLabelValues(reason).Inc() },
		}
		go r.udp.run()
	}
	return r, nil
}

func randomXID() (x [3]byte) {
	rand.Read(x[:])
	return x
}

// SetOriginator sets where mode client-release sends its Releases; the
// Originator's Replies must come back through HandleReply.
func (r *Releaser) SetOriginator(o Originator) { r.orig = o }

// Mode returns the release mode.
func (r *Releaser) Mode() config.ReleaseMode { return r.cfg.Mode }

// Close stops the exchanges in flight (their bindings are kept) and
// closes the socket.
func (r *Releaser) Close() error {
	var err error
	r.once.Do(func() {
		close(r.stop)
		if r.udp != nil {
			err = r.udp.conn.Close()
		}
	})
	return err
}

// HandleReply takes the server's Reply to a Release the relay originated
// on port (relay.Conn's OnOriginatedReply). It never blocks; reply is
// copied.
func (r *Releaser) HandleReply(port string, reply []byte) {
	m, err := dhcp6.ParseMessage(reply)
	if err != nil || m.Type != dhcp6.MsgReply {
		return
	}
	duid, _ := m.Options.Get(dhcp6.OptClientID)
	r.mu.Lock()
	c, ok := r.waiting[clientKey{port, m.XID, string(duid)}]
	r.mu.Unlock()
	if !ok {
		return // the exchange ended: an answer to a retransmission
	}
	m.Options = append(dhcp6.Options(nil), m.Options...) // reply is the engine's buffer
	select {
	case c <- m:
	default:
	}
}

// Release releases bs at the server for the operator (pdrelay clear
// --release) and clears those released; see ReleaseFor. It refuses with
// ErrModeOff or ErrOperatorOff when the config says so.
func (r *Releaser) Release(ctx context.Context, bs []binding.Binding) ([]Result, error) {
	if r.cfg.Mode == config.ReleaseOff || r.cfg.Mode == "" {
		return nil, ErrModeOff
	}
	if !r.cfg.Operator {
		return nil, ErrOperatorOff
	}
	return r.ReleaseFor(ctx, TriggerOperator, bs)
}

// ReleaseFor releases bs at the server for trigger, waits for the answers
// (at most the whole retransmission schedule, whatever ctx says: a
// release the server may have done is seen through), clears the bindings
// released (Success or NoBinding) and returns one Result per binding, in
// the order of bs. It logs one line, and counts each binding under
// pdrelay_release_total{trigger,result}.
func (r *Releaser) ReleaseFor(ctx context.Context, trigger string, bs []binding.Binding) ([]Result, error) {
	if r.cfg.Mode == config.ReleaseOff || r.cfg.Mode == "" {
		return nil, ErrModeOff
	}
	if len(bs) == 0 {
		return nil, nil
	}
	start := time.Now()
	var msgs []message
	var ports []string // client-release: each message's port and DUID
	var duids []string
	var results []Result
	switch r.cfg.Mode {
	case config.ReleaseRequest:
		msgs, results = buildRequests(bs, r.cfg.RequestType, r.cfg.RelayID, r.ifid, r.cfg.MaxMessage, r.xid)
	case config.ReleaseClient:
		crs, unsendable := buildClientReleases(bs, r.xid)
		results = unsendable
		for _, c := range crs {
			msgs = append(msgs, c.message)
			ports = append(ports, c.port)
			duids = append(duids, c.duid)
		}
	default:
		return nil, fmt.Errorf("release mode %q unknown", r.cfg.Mode)
	}
	out := make(chan []Result, len(msgs))
	for i := range msgs {
		var port, duid string
		if ports != nil {
			port, duid = ports[i], duids[i]
		}
		go func() {
			select {
			case r.sem <- struct{}{}:
				defer func() { <-r.sem }()
			case <-r.stop:
				out <- failAll(msgs[i].bindings, ErrNoAnswer)
				return
			}
			out <- r.exchange(&msgs[i], port, duid)
		}()
	}
	for range msgs {
		results = append(results, <-out...)
	}
	results = inOrder(bs, results)
	released := r.clear(ctx, results)
	r.account(trigger, results, released, time.Since(start))
	return results, nil
}

func (r *Releaser) ifid(port string) []byte {
	if id, ok := r.cfg.InterfaceIDs[port]; ok {
		return id
	}
	return []byte(port)
}

func failAll(bs []binding.Binding, err error) []Result {
	out := make([]Result, len(bs))
	for i, b := range bs {
		out[i] = Result{Binding: b, Err: err}
	}
	return out
}

// inOrder orders results as bs.
func inOrder(bs []binding.Binding, results []Result) []Result {
	by := make(map[binding.Key]Result, len(results))
	for _, res := range results {
		by[res.Binding.Key] = res
	}
	out := make([]Result, 0, len(bs))
	for _, b := range bs {
		if res, ok := by[b.Key]; ok {
			out = append(out, res)
			delete(by, b.Key) // a key given twice is released once
		}
	}
	return out
}

// exchange sends one message with retransmissions and reads its answer.
func (r *Releaser) exchange(m *message, port, duid string) []Result {
	sched := schedule(r.cfg.Timeout, r.cfg.MaxRC, r.rnd)
	switch r.cfg.Mode {
	case config.ReleaseRequest:
		c, ok := r.udp.register(m.xid)
		for !ok { // another exchange holds the id: draw again
			m.xid = r.xid()
			msg := m.build(0)
			copy(msg[1:4], m.xid[:])
			c, ok = r.udp.register(m.xid)
		}
		defer r.udp.unregister(m.xid)
		send := func([]byte) error {
			r.met.sent.WithLabelValues(string(config.ReleaseRequest)).Inc()
			_, err := r.udp.conn.Write(m.build(0))
			return err
		}
		rep, err := retransmit(sched, r.stop, send, m.build, c)
		if err != nil {
			return failAll(m.bindings, err)
		}
		return requestResults(m.bindings, rep)
	default:
		if r.orig == nil {
			return failAll(m.bindings, errors.New("no relay to send the release through"))
		}
		k := clientKey{port, m.xid, duid}
		c := make(chan dhcp6.Message, 1)
		r.mu.Lock()
		r.waiting[k] = c
		r.mu.Unlock()
		defer func() {
			r.mu.Lock()
			delete(r.waiting, k)
			r.mu.Unlock()
		}()
		b := m.bindings[0]
		send := func(msg []byte) error {
			r.met.sent.WithLabelValues(string(config.ReleaseClient)).Inc()
			return r.orig.Originate(relay.Originated{Port: port, Peer: b.NextHop, MAC: b.MAC, Payload: msg})
		}
		rep, err := retransmit(sched, r.stop, send, m.build, c)
		if err != nil {
			return failAll(m.bindings, err)
		}
		return clientResults(m.bindings, rep)
	}
}

// retransmit sends build(elapsed) and again after each timeout of sched
// (RFC 8415 section 15, the same transaction id throughout) until an
// answer arrives, the schedule ends (ErrNoAnswer) or stop closes. A send
// error is retried at the next timeout; the last one is returned.
func retransmit[T any](sched []time.Duration, stop <-chan struct{}, send func([]byte) error, build func(uint16) []byte, answer <-chan T) (T, error) {
	var zero T
	first := time.Now()
	var lastErr error
	for _, rt := range sched {
		elapsed := min(time.Since(first)/(10*time.Millisecond), 0xffff)
		if err := send(build(uint16(elapsed))); err != nil {
			lastErr = err
		}
		t := time.NewTimer(rt)
		select {
		case a := <-answer:
			t.Stop()
			return a, nil
		case <-stop:
			t.Stop()
			return zero, ErrNoAnswer
		case <-t.C:
		}
	}
	if lastErr != nil {
		return zero, fmt.Errorf("%w (send: %w)", ErrNoAnswer, lastErr)
	}
	return zero, ErrNoAnswer
}

// clear removes the released bindings from the table and reports how
// many were released.
func (r *Releaser) clear(ctx context.Context, results []Result) int {
	var keys []binding.Key
	for i := range results {
		if results[i].Released() {
			keys = append(keys, results[i].Binding.Key)
		}
	}
	if len(keys) == 0 {
		return 0
	}
	// The server has released them: clear them even if the caller has
	// gone, or the relay would route what the server may hand out again.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := r.tbl.Do(ctx, func(t *binding.Table) {
		for _, k := range keys {
			t.Remove(k, ReasonReleased)
		}
	}); err != nil {
		r.log.Warn("clear released bindings", "count", len(keys), "err", err)
	}
	return len(keys)
}

// account logs one line for the release and counts its results.
func (r *Releaser) account(trigger string, results []Result, released int, took time.Duration) {
	attrs := []any{"trigger", trigger, "mode", r.cfg.Mode, "bindings", len(results),
		"released", released, "kept", len(results) - released, "took", took.Round(time.Millisecond)}
	var kept []string
	for i := range results {
		res := &results[i]
		r.met.released.WithLabelValues(trigger, res.metricResult()).Inc()
		if !res.Released() && len(kept) < 8 {
			kept = append(kept, fmt.Sprintf("%s %s client %s: %s", res.Binding.Port, res.Binding.Prefix, res.Binding.DUIDHex(), res.Reason()))
		}
	}
	if len(kept) > 0 {
		r.log.Warn("relay-initiated release: some bindings kept until expiry", append(attrs, "kept_first", kept)...)
		return
	}
	r.log.Info("relay-initiated release", attrs...)
}
