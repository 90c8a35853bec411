package leasequery

import (
	"time"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// retryable reports whether a query the server ended with status code is
// asked again after a backoff (RFC 5460 section 5.5, RFC 5007 section
// 4.3.3):
//
//   - QueryTerminated: the server could not finish (shutting down, short
//     of resources) and the requestor "may retry the query at a later
//     time": retried.
//   - UnspecFail: a failure of the server's own: retried.
//   - NotConfigured for a query whose link-address is :: (relay-id,
//     remote-id): no link was named, so the server is not configured
//     for queries at all yet, as a server still loading is: retried.
//     For a named link (link-address query) it means the server knows no
//     such link, which asking again does not change: not retried.
//   - NotAllowed, UnknownQueryType, MalformedQuery: the server refuses
//     this requestor or this query; asking again gets the same answer:
//     not retried.
func retryable(code uint16, q *Query) bool {
	switch code {
	case dhcp6.StatusQueryTerminated, dhcp6.StatusUnspecFail:
		return true
	case dhcp6.StatusNotConfigured:
		return !q.Link.IsValid() || q.Link.IsUnspecified()
	}
	return false
}

// statusHint says what an operator can do about a status.
func statusHint(code uint16) string {
	switch code {
	case dhcp6.StatusQueryTerminated:
		return "the server ended the query (shutting down or short of resources)"
	case dhcp6.StatusUnspecFail:
		return "the server failed"
	case dhcp6.StatusNotConfigured:
		return "the server knows no link for the query's link-address (downlinks' link_address), or is not configured yet"
	case dhcp6.StatusNotAllowed:
		return "the server does not allow this relay to query: add it to the server's allowed requestors"
	case dhcp6.StatusUnknownQueryType:
		return "the server does not support this query type: choose another leasequery.query"
	case dhcp6.StatusMalformedQuery:
		return "the server could not read the query"
	}
	return "unexpected status for a leasequery"
}

// backoff returns the wait before retry number n (0 for the first retry):
// base doubled n times, capped at max (BULK_LQ_MAX_RETRY, RFC 5460
// section 6.1), then scaled by a jitter factor in [0.8, 1.2) drawn from
// rnd (in [0, 1)) and capped again.
func backoff(n int, base, max time.Duration, rnd float64) time.Duration {
	d := base
	for i := 0; i < n && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	d = time.Duration(float64(d) * (0.8 + 0.4*rnd))
	return min(d, max)
}
