package leasequery

import (
	"sync/atomic"
	"time"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// Results of a query and of a server's run, as reports, logs and metrics
// name them.
const (
	ResultComplete   = "complete"   // every query ended with the server's full answer
	ResultPartial    = "partial"    // some queries complete, some not
	ResultFailed     = "failed"     // no query complete
	ResultIncomplete = "incomplete" // a query: the connection ended before its answer did
	ResultStatus     = "status"     // a query: the server answered an error status
)

// Results lists a server run's results, for metrics.
var Results = []string{ResultComplete, ResultPartial, ResultFailed}

// Counts are what a query (or a server's run, or a recovery) did to the
// binding table. Received counts prefixes in the server's client data;
// each ended up added, updated, refused (by the table's policy or
// limits) or expired (lifetime run out CLT_TIME ago). Discarded counts
// client data that yielded nothing (see the Drop reasons). Removed counts
// bindings a complete answer did not return.
type Counts struct {
	Received  int `json:"received"`
	Added     int `json:"added"`
	Updated   int `json:"updated"`
	Refused   int `json:"refused"`
	Expired   int `json:"expired"`
	Discarded int `json:"discarded"`
	Removed   int `json:"removed"`
}

func (c *Counts) add(o Counts) {
	c.Received += o.Received
	c.Added += o.Added
	c.Updated += o.Updated
	c.Refused += o.Refused
	c.Expired += o.Expired
	c.Discarded += o.Discarded
	c.Removed += o.Removed
}

// QueryReport is the outcome of one query to one server.
type QueryReport struct {
	Query  string `json:"query"`
	Result string `json:"result"`           // complete, status or incomplete
	Status string `json:"status,omitempty"` // the server's error status, by name
	Error  string `json:"error,omitempty"`  // why it is not complete
	Counts
}

// ServerReport is the outcome of one run against one server, over all
// its attempts.
type ServerReport struct {
	Server          string        `json:"server"`
	ServerDUID      string        `json:"server_duid,omitempty"` // hex, from its replies
	Result          string        `json:"result"`                // complete, partial, failed
	Attempts        int           `json:"attempts"`              // connections tried
	Error           string        `json:"error,omitempty"`       // the last connection error
	Started         time.Time     `json:"started"`
	DurationSeconds float64       `json:"duration_seconds"`
	Queries         []QueryReport `json:"queries"`
	Counts
}

// Report is the outcome of one recovery: every server queried.
type Report struct {
	Started         time.Time      `json:"started"`
	DurationSeconds float64        `json:"duration_seconds"`
	Servers         []ServerReport `json:"servers"`
	Counts
}

// ServerStatus is a server's last run, for `pdrelay stats` and the
// metrics. Last is nil before the first run ends.
type ServerStatus struct {
	Server  string        `json:"server"`
	Running bool          `json:"running"`
	Last    *ServerReport `json:"last,omitempty"`
}

// queryRun is one query's state through a server's run. The reader
// goroutine owns the plain fields; the binding manager's goroutine
// counts into the atomics.
type queryRun struct {
	q        *Query
	done     bool // ended: complete, or a status not worth retrying
	complete bool
	status   uint16
	hasStat  bool
	err      error
	serverID string

	received, expired, discarded int
	added, updated, refused      atomic.Int64
	removed                      atomic.Int64
}

func (qr *queryRun) report() QueryReport {
	r := QueryReport{Query: qr.q.String(), Counts: Counts{
		Received: qr.received, Expired: qr.expired, Discarded: qr.discarded,
		Added: int(qr.added.Load()), Updated: int(qr.updated.Load()),
		Refused: int(qr.refused.Load()), Removed: int(qr.removed.Load()),
	}}
	switch {
	case qr.complete:
		r.Result = ResultComplete
	case qr.hasStat:
		r.Result = ResultStatus
	default:
		r.Result = ResultIncomplete
	}
	if qr.hasStat {
		r.Status = dhcp6.StatusName(qr.status)
	}
	if !qr.complete && qr.err != nil {
		r.Error = qr.err.Error()
	}
	return r
}
