package release

import (
	"errors"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/dhcp6"
)

// Result is what became of one binding's release.
type Result struct {
	Binding binding.Binding
	// Answered says the server answered for the binding; Status is then
	// its word: the most specific status code the reply holds for it
	// (IAPREFIX, IA, client, message), Success when none names it.
	Answered bool
	Status   uint16
	// Err says why there is no answer: ErrNoAnswer, ErrNoServerID, a send
	// failure.
	Err error
}

// Released reports whether the server released the binding (Success) or
// holds nothing for it (NoBinding, the draft's section 4.1.1: a lost
// reply's retransmission gets it): either way it is gone at the server and
// is cleared here. Anything else keeps the binding until it expires.
func (r *Result) Released() bool {
	return r.Answered && (r.Status == dhcp6.StatusSuccess || r.Status == dhcp6.StatusNoBinding)
}

// Reason is a short word for the operator: the status name, or why there
// was no answer.
func (r *Result) Reason() string {
	switch {
	case r.Answered:
		return dhcp6.StatusName(r.Status)
	case errors.Is(r.Err, ErrNoAnswer):
		return "no answer"
	case errors.Is(r.Err, ErrNoServerID):
		return "server DUID unknown"
	case r.Err != nil:
		return r.Err.Error()
	}
	return "not sent"
}

// metricResult is the result label of pdrelay_release_total: a bounded set.
func (r *Result) metricResult() string {
	switch {
	case r.Answered && r.Status == dhcp6.StatusSuccess:
		return "success"
	case r.Answered && r.Status == dhcp6.StatusNoBinding:
		return "no_binding"
	case r.Answered:
		return "refused"
	case errors.Is(r.Err, ErrNoAnswer):
		return "no_answer"
	}
	return "error"
}

// Errors of a release.
var (
	// ErrModeOff refuses a release while release.mode is off.
	ErrModeOff = errors.New("release.mode is off: the relay does not release bindings at the server")
	// ErrOperatorOff refuses clear --release while release.triggers.operator is false.
	ErrOperatorOff = errors.New("release.triggers.operator is false: operator releases are disabled")
	ErrNoAnswer    = errors.New("no answer from the server")
	ErrNoServerID  = errors.New("binding has no server DUID to name the server")
)
