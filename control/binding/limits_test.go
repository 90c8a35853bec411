package binding

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestSetLimitsLowered: lowering max_delegations and max_per_client on a
// running table keeps every binding, renewals go on, new bindings are
// refused until the port or client is back under, and the excess is
// reported.
func TestSetLimitsLowered(t *testing.T) {
	tb := NewTable(PortLimits{}, map[string]PortLimits{"eth1": {MaxPerClient: 8, MaxDelegations: 8}})
	for i := range 3 {
		mustLearn(t, tb, t0, learned("eth1", duidA, 1, fmt.Sprintf("2001:db8:%x::/56", i), time.Hour, time.Hour))
	}
	mustLearn(t, tb, t0, learned("eth1", duidB, 1, "2001:db8:b0::/56", time.Hour, time.Hour))
	tb.TakeChanges()

	excess := tb.SetLimits(PortLimits{}, map[string]PortLimits{"eth1": {MaxPerClient: 2, MaxDelegations: 3}})
	want := []LimitExcess{
		{Port: "eth1", Limit: LimitMaxDelegations, Max: 3, Have: 4},
		{Port: "eth1", Limit: LimitMaxPerClient, Max: 2, Have: 3, Clients: 1},
	}
	if !slices.Equal(excess, want) {
		t.Errorf("excess\n got %+v\nwant %+v", excess, want)
	}
	if tb.Len() != 4 || len(tb.TakeChanges()) != 0 {
		t.Fatalf("SetLimits changed the table: %d bindings", tb.Len())
	}
	if l := tb.Limits("eth1"); l != (PortLimits{MaxPerClient: 2, MaxDelegations: 3}) {
		t.Errorf("Limits(eth1) = %+v", l)
	}
	// A renewal of a binding over the limit is not a new binding.
	if op := mustLearn(t, tb, t0.Add(time.Minute), learned("eth1", duidA, 1, "2001:db8:2::/56", time.Hour, 2*time.Hour)); op != Updated {
		t.Errorf("renewal over the limit: %v", op)
	}
	// New ones are refused: A is over max_per_client, the port over
	// max_delegations.
	if _, err := tb.Learn(t0, learned("eth1", duidA, 2, "2001:db8:10::/56", time.Hour, time.Hour)); !errors.Is(err, ErrClientLimit) {
		t.Errorf("new binding for a client over max_per_client: %v", err)
	}
	if _, err := tb.Learn(t0, learned("eth1", duidB, 2, "2001:db8:b1::/56", time.Hour, time.Hour)); !errors.Is(err, ErrPortLimit) {
		t.Errorf("new binding on a port over max_delegations: %v", err)
	}
	// The server moving one of A's prefixes to B on the same port frees
	// its slot: still allowed.
	if op := mustLearn(t, tb, t0, learned("eth1", duidB, 3, "2001:db8:0::/56", time.Hour, time.Hour)); op != Added {
		t.Errorf("prefix moved within the port: %v", op)
	}
	// Now A holds 2 (at max_per_client), B 2, the port 4. With one of A's
	// released the port is at its limit of 3: a third client still gets
	// nothing, until one more goes.
	tb.Remove(Key{Port: "eth1", DUID: duidA, IAID: 1, Prefix: pfx("2001:db8:1::/56")}, ReasonReleased)
	const duidC = "c"
	if _, err := tb.Learn(t0, learned("eth1", duidC, 1, "2001:db8:c0::/56", time.Hour, time.Hour)); !errors.Is(err, ErrPortLimit) {
		t.Errorf("port at its limit of 3: %v", err)
	}
	if got := tb.Excess(); len(got) != 0 {
		t.Errorf("excess once back at the limits: %+v", got)
	}
	tb.Remove(Key{Port: "eth1", DUID: duidB, IAID: 1, Prefix: pfx("2001:db8:b0::/56")}, ReasonReleased)
	mustLearn(t, tb, t0, learned("eth1", duidC, 1, "2001:db8:c0::/56", time.Hour, time.Hour))
}

// TestSetLimitsNewPortAndRaised: a port named for the first time gets its
// limits; ports not named get the new default; a raised limit lets in what
// was refused; the caller's map is copied.
func TestSetLimitsNewPortAndRaised(t *testing.T) {
	tb := NewTable(PortLimits{MaxDelegations: 1}, map[string]PortLimits{"eth1": {MaxDelegations: 1}})
	mustLearn(t, tb, t0, learned("eth1", duidA, 1, "2001:db8:1::/56", time.Hour, time.Hour))
	if _, err := tb.Learn(t0, learned("eth1", duidA, 2, "2001:db8:2::/56", time.Hour, time.Hour)); !errors.Is(err, ErrPortLimit) {
		t.Fatalf("before: %v", err)
	}
	perPort := map[string]PortLimits{"eth1": {MaxDelegations: 2}, "eth9": {MaxPerClient: 1}}
	if ex := tb.SetLimits(PortLimits{MaxDelegations: 2}, perPort); len(ex) != 0 {
		t.Errorf("excess after raising: %+v", ex)
	}
	perPort["eth1"] = PortLimits{MaxDelegations: 1} // the table's copy stays
	mustLearn(t, tb, t0, learned("eth1", duidA, 2, "2001:db8:2::/56", time.Hour, time.Hour))
	mustLearn(t, tb, t0, learned("eth9", duidA, 1, "2001:db8:90::/56", time.Hour, time.Hour))
	if _, err := tb.Learn(t0, learned("eth9", duidA, 2, "2001:db8:91::/56", time.Hour, time.Hour)); !errors.Is(err, ErrClientLimit) {
		t.Errorf("new port eth9's max_per_client 1: %v", err)
	}
	// eth5, not named, has the new default.
	mustLearn(t, tb, t0, learned("eth5", duidA, 1, "2001:db8:50::/56", time.Hour, time.Hour))
	mustLearn(t, tb, t0, learned("eth5", duidB, 1, "2001:db8:51::/56", time.Hour, time.Hour))
	if _, err := tb.Learn(t0, learned("eth5", duidB, 2, "2001:db8:52::/56", time.Hour, time.Hour)); !errors.Is(err, ErrPortLimit) {
		t.Errorf("eth5 over the new default of 2: %v", err)
	}
}

// TestSetLimitsUniqueClient: turning unique_client on keeps a DUID's
// bindings on several ports, reports them, and refuses that DUID a new
// binding on the port; a DUID bound only there is not affected.
func TestSetLimitsUniqueClient(t *testing.T) {
	tb := NewTable(PortLimits{}, nil)
	mustLearn(t, tb, t0, learned("eth1", duidA, 1, "2001:db8:1::/56", time.Hour, time.Hour))
	mustLearn(t, tb, t0, learned("eth2", duidA, 1, "2001:db8:2::/56", time.Hour, time.Hour))
	mustLearn(t, tb, t0, learned("eth2", duidB, 1, "2001:db8:20::/56", time.Hour, time.Hour))
	ex := tb.SetLimits(PortLimits{}, map[string]PortLimits{"eth2": {UniqueClient: true}})
	if want := []LimitExcess{{Port: "eth2", Limit: LimitUniqueClient, Have: 1, Clients: 1}}; !slices.Equal(ex, want) {
		t.Errorf("excess %+v, want %+v", ex, want)
	}
	if tb.Len() != 3 {
		t.Fatalf("%d bindings", tb.Len())
	}
	if _, err := tb.Learn(t0, learned("eth2", duidA, 2, "2001:db8:3::/56", time.Hour, time.Hour)); !errors.Is(err, ErrDuplicateDUID) {
		t.Errorf("new binding for a DUID also on eth1: %v", err)
	}
	mustLearn(t, tb, t0, learned("eth2", duidB, 2, "2001:db8:21::/56", time.Hour, time.Hour))
	if op := mustLearn(t, tb, t0, learned("eth2", duidA, 1, "2001:db8:2::/56", time.Hour, time.Hour)); op != Updated {
		t.Errorf("renewal: %v", op)
	}
}

// TestExcessPerClient: the max_per_client excess counts every client over
// the limit and reports the most any holds.
func TestExcessPerClient(t *testing.T) {
	tb := NewTable(PortLimits{}, nil)
	for c := range 10 {
		n := 3
		if c == 4 {
			n = 5
		}
		for i := range n {
			mustLearn(t, tb, t0, learned("eth1", fmt.Sprint("duid", c), uint32(i), fmt.Sprintf("2001:db8:%x%x::/56", c, i), time.Hour, time.Hour))
		}
	}
	mustLearn(t, tb, t0, learned("eth1", "duid-ok", 1, "2001:db8:ff::/56", time.Hour, time.Hour))
	ex := tb.SetLimits(PortLimits{MaxPerClient: 2}, nil)
	if want := []LimitExcess{{Port: "eth1", Limit: LimitMaxPerClient, Max: 2, Have: 5, Clients: 10}}; !slices.Equal(ex, want) {
		t.Errorf("excess %+v, want %+v", ex, want)
	}
}
