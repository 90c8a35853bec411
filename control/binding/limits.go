package binding

import (
	"maps"
	"slices"
	"strings"
)

// Limit names, as in the config keys, the metrics' limit label and
// LimitExcess.Limit.
const (
	LimitMaxPerClient   = "max_per_client"
	LimitMaxDelegations = "max_delegations"
	LimitUniqueClient   = "unique_client"
)

// LimitExcess says where the bindings in place exceed a port's limits,
// after SetLimits lowered them.
type LimitExcess struct {
	Port  string
	Limit string // LimitMaxDelegations, LimitMaxPerClient or LimitUniqueClient
	// Max is the limit (0 for unique_client); Have is, for
	// max_delegations, the port's bindings; for max_per_client, the most
	// any one client holds on the port; for unique_client, how many
	// clients of the port are bound on another port too.
	Max, Have int
	// Clients is how many clients are over max_per_client (or, for
	// unique_client, Have again); 0 for max_delegations.
	Clients int
}

// SetLimits replaces the per-port limits (RFC 8987 G-4 to G-7): def for
// the ports perPort does not name, perPort by port name, a port added
// since NewTable included. The table keeps its own copy of perPort.
//
// New limits apply to what is learned from then on. The bindings in
// place all stay, even where they now exceed a lowered limit: a reload
// must not lose a binding. A port or client over its new limit keeps
// having its bindings renewed (a renewal is not a new binding) and gets no
// new one until it is back under, as its bindings are released or expire;
// a prefix the server moves to another client of the same port still
// frees its slot. SetLimits returns where the bindings in place exceed
// the new limits, sorted by port and limit, for the caller to log; it
// walks the table's per-client index once.
func (t *Table) SetLimits(def PortLimits, perPort map[string]PortLimits) []LimitExcess {
	t.deflimits = def
	t.limits = maps.Clone(perPort)
	return t.Excess()
}

// Limits returns the limits in force on port.
func (t *Table) Limits(port string) PortLimits { return t.limitsFor(port) }

// Excess returns where the bindings in place exceed the limits in force
// (see SetLimits), sorted by port and limit.
func (t *Table) Excess() []LimitExcess {
	byKey := map[[2]string]*LimitExcess{}
	get := func(port, limit string, max int) *LimitExcess {
		k := [2]string{port, limit}
		e := byKey[k]
		if e == nil {
			e = &LimitExcess{Port: port, Limit: limit, Max: max}
			byKey[k] = e
		}
		return e
	}
	for port, n := range t.perPort {
		if l := t.limitsFor(port); l.MaxDelegations > 0 && n > l.MaxDelegations {
			get(port, LimitMaxDelegations, l.MaxDelegations).Have = n
		}
	}
	for ck, es := range t.perClient {
		l := t.limitsFor(ck.port)
		if l.MaxPerClient > 0 && len(es) > l.MaxPerClient {
			e := get(ck.port, LimitMaxPerClient, l.MaxPerClient)
			e.Have = max(e.Have, len(es))
			e.Clients++
		}
		if l.UniqueClient && len(t.duidPorts[ck.duid]) > 1 {
			e := get(ck.port, LimitUniqueClient, 0)
			e.Have++
			e.Clients++
		}
	}
	out := make([]LimitExcess, 0, len(byKey))
	for _, e := range byKey {
		out = append(out, *e)
	}
	slices.SortFunc(out, func(a, b LimitExcess) int {
		if c := strings.Compare(a.Port, b.Port); c != 0 {
			return c
		}
		return strings.Compare(a.Limit, b.Limit)
	})
	return out
}
