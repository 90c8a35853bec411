package relay

import (
	"sync"
	"time"
)

// tokenBucket allows rate events a second on average and burst back to
// back. A zero rate allows everything. It is owned by one goroutine.
type tokenBucket struct {
	rate   float64 // tokens a second; 0: no limit
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate, burst int) tokenBucket {
	if burst < 1 {
		burst = 1
	}
	return tokenBucket{rate: float64(rate), burst: float64(burst), tokens: float64(burst)}
}

// retune sets a new rate and burst, keeping the tokens saved (at most the
// new burst).
func (b *tokenBucket) retune(rate, burst int) {
	nb := newTokenBucket(rate, burst)
	nb.tokens = min(nb.burst, b.tokens)
	nb.last = b.last
	*b = nb
}

// allow takes a token at now if there is one.
func (b *tokenBucket) allow(now time.Time) bool {
	if b.rate == 0 {
		return true
	}
	if !b.last.IsZero() {
		if d := now.Sub(b.last).Seconds(); d > 0 {
			b.tokens = min(b.burst, b.tokens+d*b.rate)
		}
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// fairQueue carries messages from the readers (one per downlink, one for
// the servers' side) to the engine's goroutine. Each source has its own
// bounded queue, and the engine takes one message from each non-empty
// queue in turn: a source that floods fills only its own queue (what does
// not fit is dropped and counted by its reader) and delays each other
// source's message by at most one of its own. The sources with messages
// wait in a FIFO of their own, so a turn costs the same with 4 ports or
// 4,000.
type fairQueue struct {
	mu     sync.Mutex
	qs     []ring[inbound]
	active ring[int] // sources with messages, in turn order
	wake   chan struct{}
}

// ring is a FIFO of at most max items. Its buffer starts small and
// doubles as it fills, up to max: a port's queue takes memory for a
// burst only while one waits.
type ring[T any] struct {
	buf        []T
	head, size int
	max        int
}

// ringStart is the buffer a ring starts with (fewer when max is less).
const ringStart = 32

func newRing[T any](limit int) ring[T] {
	n := max(limit, 1)
	return ring[T]{buf: make([]T, min(n, ringStart)), max: n}
}

func (r *ring[T]) full() bool { return r.size >= r.max }

// push adds v; the caller checks full first.
func (r *ring[T]) push(v T) {
	if r.size == len(r.buf) {
		r.grow()
	}
	r.buf[(r.head+r.size)%len(r.buf)] = v
	r.size++
}

// grow doubles the buffer (up to max), keeping the order.
func (r *ring[T]) grow() {
	buf := make([]T, max(min(2*len(r.buf), r.max), r.size+1))
	for i := range r.size {
		buf[i] = r.buf[(r.head+i)%len(r.buf)]
	}
	r.buf, r.head = buf, 0
}

func (r *ring[T]) pop() T {
	var zero T
	v := r.buf[r.head]
	r.buf[r.head] = zero
	r.head = (r.head + 1) % len(r.buf)
	r.size--
	return v
}

// newFairQueue returns a queue for sources, source i holding at most
// depth(i) messages.
func newFairQueue(sources int, depth func(i int) int) *fairQueue {
	q := &fairQueue{
		qs:     make([]ring[inbound], sources),
		active: ring[int]{buf: make([]int, sources), max: sources},
		wake:   make(chan struct{}, 1),
	}
	for i := range q.qs {
		q.qs[i] = newRing[inbound](depth(i))
	}
	return q
}

// push queues m from source i; false if i's queue is full.
func (q *fairQueue) push(i int, m inbound) bool {
	q.mu.Lock()
	r := &q.qs[i]
	if r.full() {
		q.mu.Unlock()
		return false
	}
	if r.size == 0 {
		q.active.push(i)
	}
	r.push(m)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return true
}

// addSource adds a source holding at most depth messages and returns its
// index. Sources are never renumbered.
func (q *fairQueue) addSource(depth int) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.qs = append(q.qs, newRing[inbound](depth))
	// The turn order keeps its order in a ring with room for every source.
	active := ring[int]{buf: make([]int, len(q.qs)), max: len(q.qs)}
	for q.active.size > 0 {
		active.push(q.active.pop())
	}
	q.active = active
	return len(q.qs) - 1
}

// setDepth makes source i hold at most depth messages from now on
// (those already queued stay).
func (q *fairQueue) setDepth(i, depth int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if r := &q.qs[i]; r.buf != nil {
		r.max = max(depth, 1)
	}
}

// removeSource empties source i and returns what it held; from then on
// the source holds nothing (push returns false).
func (q *fairQueue) removeSource(i int) []inbound {
	q.mu.Lock()
	defer q.mu.Unlock()
	r := &q.qs[i]
	var out []inbound
	for r.size > 0 {
		out = append(out, r.pop())
	}
	r.buf, r.max = nil, 0 // full() from now on: nothing more is queued
	for n := q.active.size; n > 0; n-- {
		if j := q.active.pop(); j != i {
			q.active.push(j)
		}
	}
	return out
}

// pop takes the next message in round-robin order over the sources with
// messages; false when there is none (wait on q.wake, then pop again).
func (q *fairQueue) pop() (inbound, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.active.size == 0 {
		return inbound{}, false
	}
	i := q.active.pop()
	r := &q.qs[i]
	m := r.pop()
	if r.size > 0 {
		q.active.push(i) // its next message waits for every other source's turn
	}
	return m, true
}

// Rate is a token bucket's rate (a second) and burst.
type Rate struct{ Rate, Burst int }

// Bounds of a downlink's queue: it holds the port's burst
// (max_client_burst), so that a burst the rate limit admits (CPEs
// soliciting at once after an outage) waits for the engine instead of
// being dropped; with no rate limit, unlimitedQueueDepth.
const (
	minClientQueueDepth = 32
	maxClientQueueDepth = 4096
	unlimitedQueueDepth = 1024
)

// clientQueueDepth is the queue depth for a port limited to r.
func clientQueueDepth(r *Rate) int {
	if r == nil || r.Rate <= 0 {
		return unlimitedQueueDepth
	}
	return min(max(r.Burst, minClientQueueDepth), maxClientQueueDepth)
}
