package binding

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

const (
	duidA = "\x00\x03\x00\x01\x02\x00\x00\x00\x00\x0a" // DUID-LL 02:00:00:00:00:0a
	duidB = "\x00\x03\x00\x01\x02\x00\x00\x00\x00\x0b"
	srvID = "\x00\x03\x00\x01\x02\x00\x00\x00\x00\xfe"
)

var (
	macA = [6]byte{2, 0, 0, 0, 0, 0x0a}
	macB = [6]byte{2, 0, 0, 0, 0, 0x0b}
	llA  = netip.MustParseAddr("fe80::a")
	llB  = netip.MustParseAddr("fe80::b")
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// learned is a Learned with seconds for lifetimes, MAC known.
func learned(port, duid string, iaid uint32, prefix string, pref, valid time.Duration) Learned {
	mac, nh := macA, llA
	if duid == duidB {
		mac, nh = macB, llB
	}
	return Learned{
		Key:     Key{Port: port, DUID: duid, IAID: iaid, Prefix: pfx(prefix)},
		NextHop: nh, MAC: mac, MACKnown: true,
		Preferred: pref, Valid: valid, ServerDUID: srvID,
	}
}

func mustLearn(t *testing.T, tb *Table, now time.Time, l Learned) Op {
	t.Helper()
	op, err := tb.Learn(now, l)
	if err != nil {
		t.Fatalf("Learn %v: %v", l.Prefix, err)
	}
	return op
}

func TestLearnAddAndRenew(t *testing.T) {
	tb := NewTable(PortLimits{MaxPerClient: 8}, nil)
	l := learned("eth1", duidA, 1, "2001:db8:1::/56", 3600*time.Second, 7200*time.Second)
	if op := mustLearn(t, tb, t0, l); op != Added {
		t.Fatalf("op %v, want added", op)
	}
	want := Binding{
		Key:        l.Key,
		NextHop:    llA,
		MAC:        macA,
		Preferred:  t0.Add(time.Hour),
		Expires:    t0.Add(2 * time.Hour),
		ServerDUID: srvID,
		Updated:    t0,
	}
	if got, ok := tb.Get(l.Key); !ok || got != want {
		t.Fatalf("Get = %+v, %v\nwant %+v", got, ok, want)
	}
	ch := tb.TakeChanges()
	if len(ch) != 1 || ch[0] != (Change{Op: Added, Binding: want, RouteChanged: true}) {
		t.Fatalf("changes %+v", ch)
	}
	if tb.TakeChanges() != nil {
		t.Fatal("TakeChanges twice returned changes")
	}

	// Renewal: lifetimes only.
	t1 := t0.Add(30 * time.Minute)
	l.Preferred, l.Valid = 2*time.Hour, 4*time.Hour
	if op := mustLearn(t, tb, t1, l); op != Updated {
		t.Fatalf("op %v, want updated", op)
	}
	want.Preferred, want.Expires, want.Updated = t1.Add(2*time.Hour), t1.Add(4*time.Hour), t1
	ch = tb.TakeChanges()
	if len(ch) != 1 || ch[0] != (Change{Op: Updated, Binding: want, RouteChanged: false}) {
		t.Fatalf("renewal changes %+v", ch)
	}

	// MAC unknown (a Reply with no recorded request): the MAC stays.
	l2 := l
	l2.MAC, l2.MACKnown = [6]byte{}, false
	l2.ServerDUID = "" // and an empty server DUID keeps the old one
	mustLearn(t, tb, t1, l2)
	if got, _ := tb.Get(l.Key); got.MAC != macA || got.ServerDUID != srvID {
		t.Errorf("MAC unknown: binding %+v", got)
	}
	if ch := tb.TakeChanges(); len(ch) != 1 || ch[0].RouteChanged {
		t.Errorf("MAC unknown: changes %+v", ch)
	}

	// A new MAC (the CPE was replaced by one with the same DUID) moves the route.
	l3 := l
	l3.MAC = [6]byte{2, 0, 0, 0, 0, 0x0c}
	mustLearn(t, tb, t1, l3)
	if ch := tb.TakeChanges(); len(ch) != 1 || !ch[0].RouteChanged || ch[0].Binding.MAC != l3.MAC {
		t.Errorf("new MAC: changes %+v", ch)
	}
	// So does a new next hop.
	l4 := l3
	l4.NextHop = netip.MustParseAddr("fe80::c")
	mustLearn(t, tb, t1, l4)
	if ch := tb.TakeChanges(); len(ch) != 1 || !ch[0].RouteChanged || ch[0].Binding.NextHop != l4.NextHop {
		t.Errorf("new next hop: changes %+v", ch)
	}
	if tb.Len() != 1 || tb.PortCount("eth1") != 1 {
		t.Errorf("Len %d PortCount %d", tb.Len(), tb.PortCount("eth1"))
	}
}

func TestLearnNormalizes(t *testing.T) {
	tb := NewTable(PortLimits{}, nil)
	l := learned("eth1", duidA, 1, "2001:db8:1::/56", 10*time.Second, 10*time.Second)
	l.Prefix = netip.PrefixFrom(netip.MustParseAddr("2001:db8:1:ff::1"), 56) // host bits set
	l.NextHop = netip.MustParseAddr("fe80::a%eth1")                          // zone
	l.Preferred = 50 * time.Second                                           // longer than valid
	mustLearn(t, tb, t0, l)
	b, ok := tb.Get(Key{Port: "eth1", DUID: duidA, IAID: 1, Prefix: pfx("2001:db8:1::/56")})
	if !ok {
		t.Fatal("binding not stored under its masked prefix")
	}
	if b.NextHop != llA || b.Preferred != t0.Add(10*time.Second) || b.Expires != t0.Add(10*time.Second) {
		t.Errorf("binding %+v: want zone dropped, preferred clamped to valid", b)
	}
	if !tb.Remove(Key{Port: "eth1", DUID: duidA, IAID: 1, Prefix: netip.PrefixFrom(netip.MustParseAddr("2001:db8:1::5"), 56)}, ReasonOperator) {
		t.Error("Remove with host bits set did not find the binding")
	}
}

func TestLearnInvalid(t *testing.T) {
	tb := NewTable(PortLimits{}, nil)
	for _, p := range []netip.Prefix{{}, pfx("192.0.2.0/24"), pfx("::ffff:192.0.2.0/120")} {
		l := learned("eth1", duidA, 1, "2001:db8::/56", time.Second, time.Second)
		l.Prefix = p
		if _, err := tb.Learn(t0, l); !errors.Is(err, ErrInvalidBinding) {
			t.Errorf("Learn(%v) err = %v, want ErrInvalidBinding", p, err)
		}
	}
	if tb.Len() != 0 || len(tb.TakeChanges()) != 0 {
		t.Error("invalid bindings changed the table")
	}
}

func TestLearnZeroValidRemoves(t *testing.T) {
	tb := NewTable(PortLimits{}, nil)
	l := learned("eth1", duidA, 1, "2001:db8::/56", time.Minute, time.Hour)
	mustLearn(t, tb, t0, l)
	tb.TakeChanges()
	l.Valid = 0
	if op := mustLearn(t, tb, t0, l); op != Removed {
		t.Errorf("op %v", op)
	}
	ch := tb.TakeChanges()
	if tb.Len() != 0 || len(ch) != 1 || ch[0].Op != Removed || ch[0].Reason != ReasonZeroValid || !ch[0].RouteChanged {
		t.Errorf("changes %+v", ch)
	}
	// Removing what is not there records nothing.
	if op := mustLearn(t, tb, t0, l); op != Removed || len(tb.TakeChanges()) != 0 {
		t.Error("removing a missing binding recorded a change")
	}
}

func TestMaxPerClient(t *testing.T) {
	// The RFC 8987 G-7 default: 8 per client.
	tb := NewTable(PortLimits{MaxPerClient: 8}, nil)
	for i := range 8 {
		mustLearn(t, tb, t0, learned("eth1", duidA, uint32(i/2), fmt.Sprintf("2001:db8:%x::/56", i), time.Hour, time.Hour))
	}
	ninth := learned("eth1", duidA, 9, "2001:db8:99::/56", time.Hour, time.Hour)
	if _, err := tb.Learn(t0, ninth); !errors.Is(err, ErrClientLimit) {
		t.Fatalf("9th prefix: err = %v, want ErrClientLimit", err)
	}
	if _, ok := tb.Get(ninth.Key); ok || tb.Len() != 8 {
		t.Fatal("9th prefix installed")
	}
	// Renewing one of the 8 is fine at the limit.
	if op := mustLearn(t, tb, t0.Add(time.Minute), learned("eth1", duidA, 0, "2001:db8:0::/56", time.Hour, time.Hour)); op != Updated {
		t.Errorf("renewal at limit: %v", op)
	}
	// So is moving one of the client's own prefixes to another IA_PD.
	if op := mustLearn(t, tb, t0, learned("eth1", duidA, 7, "2001:db8:1::/56", time.Hour, time.Hour)); op != Added || tb.Len() != 8 {
		t.Errorf("re-delegation within the client at limit: %v, len %d", op, tb.Len())
	}
	// Other clients, and the same DUID on another port, have their own count.
	mustLearn(t, tb, t0, learned("eth1", duidB, 1, "2001:db8:b0::/56", time.Hour, time.Hour))
	mustLearn(t, tb, t0, learned("eth2", duidA, 1, "2001:db8:a0::/56", time.Hour, time.Hour))
	// Once one is gone, there is room again.
	tb.Remove(Key{Port: "eth1", DUID: duidA, IAID: 0, Prefix: pfx("2001:db8:0::/56")}, ReasonReleased)
	mustLearn(t, tb, t0, ninth)
}

func TestMaxPerClientZeroIsUnlimited(t *testing.T) {
	// PortLimits{} has no limit: the default of 8 is the config's job.
	tb := NewTable(PortLimits{}, nil)
	for i := range 20 {
		mustLearn(t, tb, t0, learned("eth1", duidA, 1, fmt.Sprintf("2001:db8:%x::/56", i), time.Hour, time.Hour))
	}
}

func TestMaxDelegations(t *testing.T) {
	tb := NewTable(PortLimits{MaxPerClient: 8}, map[string]PortLimits{"eth1": {MaxPerClient: 8, MaxDelegations: 3}})
	mustLearn(t, tb, t0, learned("eth1", duidA, 1, "2001:db8:1::/56", time.Hour, time.Hour))
	mustLearn(t, tb, t0, learned("eth1", duidA, 1, "2001:db8:2::/56", time.Hour, time.Hour))
	mustLearn(t, tb, t0, learned("eth1", duidB, 1, "2001:db8:3::/56", time.Hour, time.Hour))
	for _, l := range []Learned{
		learned("eth1", duidB, 1, "2001:db8:4::/56", time.Hour, time.Hour),
		learned("eth1", duidA, 2, "2001:db8:5::/56", time.Hour, time.Hour),
	} {
		if _, err := tb.Learn(t0, l); !errors.Is(err, ErrPortLimit) {
			t.Errorf("4th on eth1: err = %v, want ErrPortLimit", err)
		}
	}
	if tb.PortCount("eth1") != 3 {
		t.Errorf("PortCount = %d", tb.PortCount("eth1"))
	}
	// eth2 has the default limits: no port limit.
	for i := range 5 {
		mustLearn(t, tb, t0, learned("eth2", fmt.Sprint("duid", i), 1, fmt.Sprintf("2001:db8:2%x::/56", i), time.Hour, time.Hour))
	}
	// A prefix re-delegated on the same port to another client frees its
	// old slot.
	if op := mustLearn(t, tb, t0, learned("eth1", duidB, 2, "2001:db8:1::/56", time.Hour, time.Hour)); op != Added {
		t.Errorf("re-delegation on a full port: %v", op)
	}
	// A prefix moved from another port does not.
	if _, err := tb.Learn(t0, learned("eth1", duidB, 3, "2001:db8:20::/56", time.Hour, time.Hour)); !errors.Is(err, ErrPortLimit) {
		t.Errorf("prefix from eth2 onto full eth1: %v", err)
	}
}

func TestUniqueClient(t *testing.T) {
	tb := NewTable(PortLimits{}, map[string]PortLimits{"eth2": {UniqueClient: true}})
	mustLearn(t, tb, t0, learned("eth1", duidA, 1, "2001:db8:1::/56", time.Hour, time.Hour))
	// G-4: the same DUID on another port is allowed by default...
	mustLearn(t, tb, t0, learned("eth3", duidA, 1, "2001:db8:3::/56", time.Hour, time.Hour))
	// ...but not where unique_client is set.
	if _, err := tb.Learn(t0, learned("eth2", duidA, 1, "2001:db8:2::/56", time.Hour, time.Hour)); !errors.Is(err, ErrDuplicateDUID) {
		t.Fatalf("err = %v, want ErrDuplicateDUID", err)
	}
	// More prefixes for a DUID bound only on eth2 are fine.
	mustLearn(t, tb, t0, learned("eth2", duidB, 1, "2001:db8:20::/56", time.Hour, time.Hour))
	mustLearn(t, tb, t0, learned("eth2", duidB, 2, "2001:db8:21::/56", time.Hour, time.Hour))
	// Once the DUID is gone from the other ports, eth2 accepts it.
	tb.RemoveWhere(func(b *Binding) bool { return b.DUID == duidA }, ReasonOperator)
	mustLearn(t, tb, t0, learned("eth2", duidA, 1, "2001:db8:2::/56", time.Hour, time.Hour))
}

func TestExpiry(t *testing.T) {
	tb := NewTable(PortLimits{}, nil)
	if _, ok := tb.NextExpiry(); ok {
		t.Error("NextExpiry on an empty table")
	}
	l := learned("eth1", duidA, 1, "2001:db8:1::/56", 50*time.Second, 100*time.Second)
	mustLearn(t, tb, t0, l)
	mustLearn(t, tb, t0, learned("eth1", duidA, 1, "2001:db8:2::/56", 100*time.Second, 200*time.Second))
	tb.TakeChanges()
	if next, ok := tb.NextExpiry(); !ok || next != t0.Add(100*time.Second) {
		t.Errorf("NextExpiry = %v, %v", next, ok)
	}
	// Never earlier than the valid lifetime...
	if n := tb.Expire(t0.Add(100*time.Second - time.Millisecond)); n != 0 {
		t.Fatalf("expired %d at +99.999s", n)
	}
	if n := tb.Expire(t0.Add(100*time.Second - time.Nanosecond)); n != 0 {
		t.Fatalf("expired %d at +100s-1ns", n)
	}
	if _, ok := tb.Get(l.Key); !ok {
		t.Fatal("binding gone before its valid lifetime")
	}
	// ...and gone at exactly +100s.
	if n := tb.Expire(t0.Add(100 * time.Second)); n != 1 {
		t.Fatalf("expired %d at +100s, want 1", n)
	}
	if _, ok := tb.Get(l.Key); ok {
		t.Fatal("binding present at its valid lifetime")
	}
	ch := tb.TakeChanges()
	if len(ch) != 1 || ch[0].Op != Removed || ch[0].Reason != ReasonExpired || ch[0].Binding.Prefix != l.Prefix {
		t.Errorf("changes %+v", ch)
	}
	if next, _ := tb.NextExpiry(); next != t0.Add(200*time.Second) {
		t.Errorf("NextExpiry = %v", next)
	}
	// A renewal moves the expiry.
	mustLearn(t, tb, t0.Add(150*time.Second), learned("eth1", duidA, 1, "2001:db8:2::/56", 100*time.Second, 200*time.Second))
	if next, _ := tb.NextExpiry(); next != t0.Add(350*time.Second) {
		t.Errorf("NextExpiry after renewal = %v", next)
	}
	if n := tb.Expire(t0.Add(349 * time.Second)); n != 0 {
		t.Errorf("renewed binding expired at its old time")
	}
}

func TestInfinityNeverExpires(t *testing.T) {
	tb := NewTable(PortLimits{}, nil)
	l := learned("eth1", duidA, 1, "2001:db8:1::/56", Infinity, Infinity)
	mustLearn(t, tb, t0, l)
	b, _ := tb.Get(l.Key)
	if b.Expires != Forever || b.Preferred != Forever {
		t.Errorf("binding %+v, want Forever", b)
	}
	if n := tb.Expire(time.Date(9000, 1, 1, 0, 0, 0, 0, time.UTC)); n != 0 {
		t.Errorf("infinite binding expired")
	}
	// Just under infinity is a real lifetime.
	l2 := learned("eth1", duidA, 1, "2001:db8:2::/56", Infinity-time.Second, Infinity-time.Second)
	mustLearn(t, tb, t0, l2)
	if b, _ := tb.Get(l2.Key); b.Expires != t0.Add(Infinity-time.Second) {
		t.Errorf("expires %v", b.Expires)
	}
}

func TestSuperseded(t *testing.T) {
	tb := NewTable(PortLimits{MaxPerClient: 1}, nil)
	a := learned("eth1", duidA, 1, "2001:db8:1::/56", time.Hour, time.Hour)
	mustLearn(t, tb, t0, a)
	tb.TakeChanges()
	b := learned("eth2", duidB, 5, "2001:db8:1::/56", time.Hour, 2*time.Hour)
	if op := mustLearn(t, tb, t0, b); op != Added {
		t.Fatalf("op %v", op)
	}
	ch := tb.TakeChanges()
	if len(ch) != 2 || ch[0].Op != Removed || ch[0].Reason != ReasonSuperseded || ch[0].Binding.Key != a.Key ||
		ch[1].Op != Added || ch[1].Binding.Key != b.Key {
		t.Fatalf("changes %+v", ch)
	}
	if _, ok := tb.Get(a.Key); ok || tb.Len() != 1 || tb.PortCount("eth1") != 0 {
		t.Error("old binding still counted")
	}
	// A's count went with it: A may learn another prefix.
	mustLearn(t, tb, t0, learned("eth1", duidA, 1, "2001:db8:2::/56", time.Hour, time.Hour))
	// Expiry follows the new binding's lifetime.
	if n := tb.Expire(t0.Add(time.Hour)); n != 1 {
		t.Errorf("expired %d at +1h, want 1 (A's new prefix)", n)
	}
	if _, ok := tb.Get(b.Key); !ok {
		t.Error("B's binding expired with A's old lifetime")
	}
}

func TestRemoveIAAndWhere(t *testing.T) {
	tb := NewTable(PortLimits{}, nil)
	mustLearn(t, tb, t0, learned("eth1", duidA, 1, "2001:db8:1::/56", time.Hour, time.Hour))
	mustLearn(t, tb, t0, learned("eth1", duidA, 1, "2001:db8:2::/56", time.Hour, time.Hour))
	mustLearn(t, tb, t0, learned("eth1", duidA, 2, "2001:db8:3::/56", time.Hour, time.Hour))
	mustLearn(t, tb, t0, learned("eth2", duidA, 1, "2001:db8:4::/56", time.Hour, time.Hour))
	mustLearn(t, tb, t0, learned("eth1", duidB, 1, "2001:db8:5::/56", time.Hour, time.Hour))
	tb.TakeChanges()
	if n := tb.RemoveIA("eth1", duidA, 1, ReasonReleased); n != 2 {
		t.Fatalf("RemoveIA removed %d, want 2", n)
	}
	ch := tb.TakeChanges()
	if len(ch) != 2 || ch[0].Reason != ReasonReleased || ch[1].Reason != ReasonReleased {
		t.Errorf("changes %+v", ch)
	}
	var left []string
	for _, b := range tb.List() {
		left = append(left, b.Prefix.String())
	}
	if want := []string{"2001:db8:3::/56", "2001:db8:5::/56", "2001:db8:4::/56"}; !slices.Equal(left, want) {
		t.Errorf("left %v, want %v (sorted by port, prefix)", left, want)
	}
	if n := tb.RemoveIA("eth1", duidA, 1, ReasonReleased); n != 0 {
		t.Errorf("second RemoveIA removed %d", n)
	}
	if n := tb.RemoveWhere(func(b *Binding) bool { return b.Port == "eth1" }, ReasonOperator); n != 2 {
		t.Errorf("RemoveWhere removed %d", n)
	}
	if tb.Len() != 1 || tb.PortCount("eth1") != 0 || tb.PortCount("eth2") != 1 {
		t.Errorf("Len %d", tb.Len())
	}
}

func TestRestore(t *testing.T) {
	tb := NewTable(PortLimits{MaxPerClient: 1, MaxDelegations: 1}, nil)
	now := t0.Add(time.Hour)
	b := Binding{
		Key:     Key{Port: "eth1", DUID: duidA, IAID: 1, Prefix: pfx("2001:db8:1::/56")},
		NextHop: llA, MAC: macA,
		Preferred: t0.Add(90 * time.Minute), Expires: t0.Add(2 * time.Hour),
		ServerDUID: srvID, Updated: t0,
	}
	if !tb.Restore(now, b) {
		t.Fatal("valid binding not restored")
	}
	if got, ok := tb.Get(b.Key); !ok || got != b {
		t.Fatalf("Get = %+v", got)
	}
	if ch := tb.TakeChanges(); len(ch) != 0 {
		t.Errorf("a restore recorded changes %+v", ch)
	}
	n := 0
	for got := range tb.All() {
		if *got != b {
			t.Errorf("All yields %+v", got)
		}
		n++
	}
	if n != 1 {
		t.Errorf("All yields %d bindings", n)
	}

	expired := b
	expired.Key.Prefix = pfx("2001:db8:2::/56")
	expired.Expires = now
	if tb.Restore(now, expired) {
		t.Error("expired binding restored")
	}
	// Limits are not applied: this one was accepted under other limits.
	second := b
	second.Key.Prefix = pfx("2001:db8:3::/56")
	if !tb.Restore(now, second) {
		t.Error("restore refused by limits")
	}

	// The same prefix for another key: the newer one wins.
	older := b
	older.Key = Key{Port: "eth2", DUID: duidB, IAID: 1, Prefix: b.Prefix}
	older.Updated = t0.Add(-time.Minute)
	if tb.Restore(now, older) {
		t.Error("older binding replaced a newer one for the same prefix")
	}
	newer := older
	newer.Updated = t0.Add(time.Minute)
	if !tb.Restore(now, newer) {
		t.Error("newer binding did not replace an older one")
	}
	if _, ok := tb.Get(b.Key); ok {
		t.Error("older binding still there")
	}
	tb.TakeChanges()

	// The same key: an older record does not replace a newer one either.
	stale := newer
	stale.Updated = t0
	stale.MAC = [6]byte{9, 9, 9, 9, 9, 9}
	stale.Expires = t0.Add(3 * time.Hour)
	if tb.Restore(now, stale) {
		t.Error("older record of the same key replaced the newer one")
	}
	if got, _ := tb.Get(newer.Key); got != newer {
		t.Errorf("binding %+v, want %+v", got, newer)
	}
	if ch := tb.TakeChanges(); len(ch) != 0 {
		t.Errorf("stale restore recorded %+v", ch)
	}
	fresh := newer
	fresh.Updated = t0.Add(2 * time.Minute)
	fresh.Expires = t0.Add(3 * time.Hour)
	if !tb.Restore(now, fresh) {
		t.Error("newer record of the same key not restored")
	}
	if got, _ := tb.Get(newer.Key); got != fresh || tb.Len() != 2 {
		t.Errorf("binding %+v, len %d", got, tb.Len())
	}
	if n := tb.Expire(t0.Add(2*time.Hour + time.Minute)); n != 1 { // only `second`
		t.Errorf("expired %d", n)
	}
}

func TestFilterMatch(t *testing.T) {
	b := &Binding{Key: Key{Port: "eth1", DUID: duidA, IAID: 1, Prefix: pfx("2001:db8:1::/56")}}
	tests := []struct {
		name string
		f    Filter
		want bool
	}{
		{"zero filter matches nothing", Filter{}, false},
		{"all", Filter{All: true}, true},
		{"prefix", Filter{Prefix: pfx("2001:db8:1::/56")}, true},
		{"prefix with host bits", Filter{Prefix: netip.PrefixFrom(netip.MustParseAddr("2001:db8:1::1"), 56)}, true},
		{"other prefix", Filter{Prefix: pfx("2001:db8:2::/56")}, false},
		{"covering prefix is not the prefix", Filter{Prefix: pfx("2001:db8::/48")}, false},
		{"duid", Filter{DUID: duidA}, true},
		{"other duid", Filter{DUID: duidB}, false},
		{"port", Filter{Port: "eth1"}, true},
		{"other port", Filter{Port: "eth2"}, false},
		{"duid and port", Filter{DUID: duidA, Port: "eth1"}, true},
		{"duid and other port", Filter{DUID: duidA, Port: "eth2"}, false},
		{"all with a port", Filter{All: true, Port: "eth2"}, false},
	}
	for _, tt := range tests {
		if got := tt.f.Match(b); got != tt.want {
			t.Errorf("%s: Match = %v, want %v", tt.name, got, tt.want)
		}
	}
	if !(Filter{}).Empty() || (Filter{Port: "x"}).Empty() || (Filter{All: true}).Empty() {
		t.Error("Empty")
	}
}

func TestOpString(t *testing.T) {
	for op, want := range map[Op]string{Added: "added", Updated: "updated", Removed: "removed", 0: "unknown", 9: "unknown"} {
		if got := op.String(); got != want {
			t.Errorf("Op(%d) = %q, want %q", op, got, want)
		}
	}
	if got := (Key{DUID: duidA}).DUIDHex(); got != "0003000102000000000a" {
		t.Errorf("DUIDHex = %q", got)
	}
	if got := MACString([6]byte{0x02, 0xab, 0, 0x10, 0xff, 9}); got != "02:ab:00:10:ff:09" {
		t.Errorf("MACString = %q", got)
	}
}

// model is the slow, obvious binding table the Table is checked against.
type model struct {
	m      map[Key]Binding
	limits map[string]PortLimits
	def    PortLimits
}

func (md *model) learn(now time.Time, l Learned) error {
	l.Prefix = l.Prefix.Masked()
	if l.Valid <= 0 {
		delete(md.m, l.Key)
		return nil
	}
	l.Preferred = min(l.Preferred, l.Valid)
	if b, ok := md.m[l.Key]; ok {
		if l.MACKnown {
			b.MAC = l.MAC
		}
		b.NextHop, b.Preferred, b.Expires, b.Updated = l.NextHop, lifetimeEnd(now, l.Preferred), lifetimeEnd(now, l.Valid), now
		md.m[l.Key] = b
		return nil
	}
	lim, ok := md.limits[l.Port]
	if !ok {
		lim = md.def
	}
	var old *Key
	perClient, perPort := 0, 0
	for k := range md.m {
		if k.Prefix == l.Prefix {
			k := k
			old = &k
		}
		if lim.UniqueClient && k.DUID == l.DUID && k.Port != l.Port {
			return ErrDuplicateDUID
		}
		if k.Port == l.Port && k.DUID == l.DUID {
			perClient++
		}
		if k.Port == l.Port {
			perPort++
		}
	}
	if old != nil && old.Port == l.Port && old.DUID == l.DUID {
		perClient--
	}
	if old != nil && old.Port == l.Port {
		perPort--
	}
	if lim.MaxPerClient > 0 && perClient >= lim.MaxPerClient {
		return ErrClientLimit
	}
	if lim.MaxDelegations > 0 && perPort >= lim.MaxDelegations {
		return ErrPortLimit
	}
	if old != nil {
		delete(md.m, *old)
	}
	md.m[l.Key] = Binding{Key: l.Key, NextHop: l.NextHop, MAC: l.MAC,
		Preferred: lifetimeEnd(now, l.Preferred), Expires: lifetimeEnd(now, l.Valid), ServerDUID: l.ServerDUID, Updated: now}
	return nil
}

// TestTableAgainstModel runs random operations on a Table and on the model
// and compares them after each step.
func TestTableAgainstModel(t *testing.T) {
	steps := 20000
	if testing.Short() {
		steps = 3000
	}
	rng := rand.New(rand.NewPCG(1, 2))
	ports := []string{"eth1", "eth2", "eth3"}
	limits := map[string]PortLimits{
		"eth1": {MaxPerClient: 3, MaxDelegations: 10},
		"eth2": {MaxPerClient: 2, UniqueClient: true},
	}
	def := PortLimits{MaxPerClient: 4}
	tb := NewTable(def, limits)
	md := &model{m: map[Key]Binding{}, limits: limits, def: def}
	now := t0
	for i := range steps {
		now = now.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
		l := Learned{
			Key: Key{
				Port:   ports[rng.IntN(len(ports))],
				DUID:   fmt.Sprint("d", rng.IntN(6)),
				IAID:   uint32(rng.IntN(2)),
				Prefix: netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 5: byte(rng.IntN(24))}), 48),
			},
			NextHop:  netip.AddrFrom16([16]byte{0xfe, 0x80, 15: byte(rng.IntN(3))}),
			MAC:      [6]byte{2, 0, 0, 0, 0, byte(rng.IntN(3))},
			MACKnown: rng.IntN(4) != 0,
			Valid:    time.Duration(rng.IntN(40)) * time.Second,
		}
		l.Preferred = time.Duration(rng.IntN(50)) * time.Second
		switch op := rng.IntN(10); {
		case op < 6:
			_, err := tb.Learn(now, l)
			if merr := md.learn(now, l); !errors.Is(err, merr) && err != merr {
				t.Fatalf("step %d: Learn %+v: table %v, model %v", i, l.Key, err, merr)
			}
		case op < 7:
			tb.Remove(l.Key, ReasonOperator)
			delete(md.m, l.Key)
		case op < 8:
			tb.RemoveIA(l.Port, l.DUID, l.IAID, ReasonReleased)
			for k := range md.m {
				if k.Port == l.Port && k.DUID == l.DUID && k.IAID == l.IAID {
					delete(md.m, k)
				}
			}
		default:
			tb.Expire(now)
			for k, b := range md.m {
				if !now.Before(b.Expires) {
					delete(md.m, k)
				}
			}
		}
		tb.TakeChanges()
		if tb.Len() != len(md.m) {
			t.Fatalf("step %d: Len %d, model %d", i, tb.Len(), len(md.m))
		}
		for k, want := range md.m {
			got, ok := tb.Get(k)
			want.ServerDUID = got.ServerDUID
			if !ok || got != want {
				t.Fatalf("step %d: %+v\n got %+v\nwant %+v", i, k, got, want)
			}
		}
		counts := map[string]int{}
		var next time.Time
		for _, b := range md.m {
			counts[b.Port]++
			if next.IsZero() || b.Expires.Before(next) {
				next = b.Expires
			}
		}
		for _, p := range ports {
			if tb.PortCount(p) != counts[p] {
				t.Fatalf("step %d: PortCount(%s) %d, model %d", i, p, tb.PortCount(p), counts[p])
			}
		}
		if got, ok := tb.NextExpiry(); ok != (len(md.m) > 0) || ok && got != next {
			t.Fatalf("step %d: NextExpiry %v, model %v", i, got, next)
		}
	}
}

// A bulk restore (BeginRestore .. EndRestore) with superseded and expired
// records must leave the same table, and the same expiry order, as
// restoring one by one.
func TestBulkRestoreMatchesSingle(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var bs []Binding
	for i := range 500 {
		p := netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(i % 300)}), 56)
		bs = append(bs, Binding{
			Key:     Key{Port: "dl" + strconv.Itoa(i%3), DUID: "d" + strconv.Itoa(i%50), IAID: uint32(i), Prefix: p},
			Expires: now.Add(time.Duration(i%97-5) * time.Second), // some already expired
			Updated: now.Add(time.Duration(i) * time.Millisecond), // later records supersede earlier
		})
	}
	single := NewTable(PortLimits{}, nil)
	for _, b := range bs {
		single.Restore(now, b)
	}
	bulk := NewTable(PortLimits{}, nil)
	bulk.BeginRestore(len(bs))
	for _, b := range bs {
		bulk.Restore(now, b)
	}
	bulk.EndRestore()
	if !slices.Equal(single.List(), bulk.List()) {
		t.Fatal("bulk restore differs from single restores")
	}
	for at := now; single.Len() > 0; at = at.Add(time.Second) {
		if a, b := single.Expire(at), bulk.Expire(at); a != b {
			t.Fatalf("at %v single expired %d, bulk %d", at, a, b)
		}
	}
	if bulk.Len() != 0 {
		t.Fatalf("bulk kept %d", bulk.Len())
	}
}

// TestExpiryOracle drives the table through random learns, renewals
// (lifetimes up and down), releases and expiries, and checks Expire and
// NextExpiry against a plain map of each binding's end after every step.
// Renewals and removals leave stale items in the expiry heap; they must
// never expire a binding early or late, and compaction must keep the heap
// within twice the bindings (and its floor).
func TestExpiryOracle(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tb := NewTable(PortLimits{}, nil)
	want := map[Key]time.Time{}
	now := t0
	key := func(i int) Learned {
		return learned("eth1", fmt.Sprintf("duid-%d", i), 1, fmt.Sprintf("2001:db8:%x::/48", i), time.Hour, time.Hour)
	}
	for step := range 60_000 {
		i := rng.IntN(3000)
		l := key(i)
		switch r := rng.IntN(10); {
		case r < 6: // learn or renew, with a lifetime that may be shorter than before
			l.Valid = time.Duration(1+rng.IntN(600)) * time.Second
			l.Preferred = l.Valid
			mustLearn(t, tb, now, l)
			want[l.Key] = now.Add(l.Valid)
		case r < 8:
			tb.RemoveIA(l.Port, l.DUID, l.IAID, ReasonReleased)
			delete(want, l.Key)
		default:
			now = now.Add(time.Duration(rng.IntN(20_000)) * time.Millisecond)
			n := tb.Expire(now)
			gone := 0
			for k, end := range want {
				if !now.Before(end) {
					delete(want, k)
					gone++
				}
			}
			if n != gone {
				t.Fatalf("step %d: Expire removed %d, want %d", step, n, gone)
			}
		}
		tb.TakeChanges()
		if tb.Len() != len(want) {
			t.Fatalf("step %d: %d bindings, want %d", step, tb.Len(), len(want))
		}
		var first time.Time
		for _, end := range want {
			if first.IsZero() || end.Before(first) {
				first = end
			}
		}
		if next, ok := tb.NextExpiry(); ok != !first.IsZero() || ok && !next.Equal(first) {
			t.Fatalf("step %d: NextExpiry %v %v, want %v", step, next, ok, first)
		}
		if len(tb.exp) > 2*len(want)+1024+1 {
			t.Fatalf("step %d: %d items in the expiry heap for %d bindings", step, len(tb.exp), len(want))
		}
	}
}

// TestExpiryCompaction: renewals at one instant leave a stale item in the
// expiry heap each, and releases leave every item stale; the heap stays
// within twice the bindings and its floor, and the next expiry is right.
func TestExpiryCompaction(t *testing.T) {
	tb := NewTable(PortLimits{}, nil)
	const n = 5000
	for round := range 20 {
		for i := range n {
			l := learned("eth1", fmt.Sprintf("duid-%d", i), 1, fmt.Sprintf("2001:db8:%x::/48", i), time.Hour, time.Hour)
			l.Valid = time.Hour + time.Duration(round*n+i)*time.Second
			mustLearn(t, tb, t0, l)
			if len(tb.exp) > 2*tb.Len()+1024+1 {
				t.Fatalf("round %d: %d items in the expiry heap for %d bindings", round, len(tb.exp), tb.Len())
			}
		}
		tb.TakeChanges()
	}
	if next, _ := tb.NextExpiry(); !next.Equal(t0.Add(time.Hour + 19*n*time.Second)) {
		t.Errorf("NextExpiry %v after the renewals", next)
	}
	for i := range n {
		tb.RemoveIA("eth1", fmt.Sprintf("duid-%d", i), 1, ReasonReleased)
	}
	if len(tb.exp) > 1024+1 {
		t.Errorf("%d items left in the expiry heap of an empty table", len(tb.exp))
	}
	if _, ok := tb.NextExpiry(); ok || tb.Expire(t0.Add(1000*time.Hour)) != 0 {
		t.Error("an empty table has an expiry")
	}
}
