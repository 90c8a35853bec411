package binding

import (
	"bytes"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// labPolicy is a policy like a lab's: /48-/64 from two pools, a port with
// its own pool, the uplink's subnet and address, an allowed_sources entry.
func labPolicy() Policy {
	return Policy{
		MinLen: 48, MaxLen: 64,
		Pools:     []netip.Prefix{pfx("2001:db8:100::/40"), pfx("fd00::/16")},
		PortPools: map[string][]netip.Prefix{"eth9": {pfx("2001:db8:900::/40")}},
		Own: []OwnPrefix{
			{pfx("fd00:0:0:ffff::/64"), "subnet of up0"},
			{pfx("fd00:0:0:ffff::2/128"), "address of up0"},
			{pfx("fd00:0:0:1::/64"), "subnet of eth1"},
			{pfx("2001:db8:1ff:ff00::/56"), "allowed_sources of eth2"},
		},
	}
}

func TestPolicyRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, port, prefix string
		reason             string // "" = installed
	}{
		{"inside a pool", "eth1", "2001:db8:100:100::/56", ""},
		{"ULA from a pool", "eth1", "fd00:1234:5678::/48", ""},
		{"longest allowed", "eth1", "2001:db8:100:1::/64", ""},
		{"the default route", "eth1", "::/0", RefuseReserved},
		{"multicast", "eth1", "ff00::/8", RefuseReserved},
		{"a multicast /48", "eth1", "ff05:1::/48", RefuseReserved},
		{"link-local", "eth1", "fe80::/64", RefuseReserved},
		{"IPv4-compatible space", "eth1", "::a00:0/120", RefuseReserved},
		{"NAT64 space below ::/8", "eth1", "64:ff9b::/96", RefuseReserved},
		{"too short", "eth1", "2001:db8:100::/40", RefuseLength},
		{"too long", "eth1", "2001:db8:100::/80", RefuseLength},
		{"outside the pools", "eth1", "2001:db8:200::/56", RefusePool},
		{"straddles a pool", "eth1", "2001:db8::/32", RefuseLength},
		{"port pool replaces the global", "eth9", "2001:db8:100:100::/56", RefusePool},
		{"inside the port pool", "eth9", "2001:db8:900:100::/56", ""},
		{"covers the uplink subnet", "eth1", "fd00::/48", RefuseOwn},
		{"is the uplink subnet", "eth1", "fd00:0:0:ffff::/64", RefuseOwn},
		{"a downlink subnet", "eth2", "fd00:0:0:1::/64", RefuseOwn},
		{"holds allowed_sources of another port", "eth1", "2001:db8:1ff::/48", RefuseOwn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := NewTable(PortLimits{}, nil)
			tb.SetPolicy(labPolicy())
			l := learned(tc.port, duidA, 1, tc.prefix, time.Hour, time.Hour)
			_, err := tb.Learn(t0, l)
			var re *RefusedError
			switch {
			case tc.reason == "" && err != nil:
				t.Fatalf("Learn %s: %v", tc.prefix, err)
			case tc.reason == "":
				if tb.Len() != 1 || len(tb.TakeChanges()) != 1 {
					t.Fatalf("not installed")
				}
				return
			case !errors.As(err, &re) || !errors.Is(err, ErrRefused):
				t.Fatalf("Learn %s: err %v, want a refusal (%s)", tc.prefix, err, tc.reason)
			case re.Reason != tc.reason:
				t.Fatalf("Learn %s: reason %q (%v), want %q", tc.prefix, re.Reason, err, tc.reason)
			}
			if tb.Len() != 0 || len(tb.TakeChanges()) != 0 {
				t.Errorf("a refused prefix changed the table")
			}
			if err := tb.Check(l.Key); err == nil {
				t.Errorf("Check passes what Learn refused")
			}
		})
	}
}

func TestPolicyZeroAllowsAnyUnicast(t *testing.T) {
	tb := NewTable(PortLimits{}, nil)
	for _, p := range []string{"2000::/3", "2001:db8::1/128", "fc00::/7"} {
		mustLearn(t, tb, t0, learned("eth1", duidA, 1, p, time.Hour, time.Hour))
		tb.Remove(Key{Port: "eth1", DUID: duidA, IAID: 1, Prefix: pfx(p)}, ReasonOperator)
	}
	if _, err := tb.Learn(t0, learned("eth1", duidA, 1, "::/0", time.Hour, time.Hour)); !errors.Is(err, ErrRefused) {
		t.Errorf("::/0 with no policy: %v, want refused (reserved)", err)
	}
}

func TestNestedAcrossClients(t *testing.T) {
	tb := NewTable(PortLimits{}, nil)
	mustLearn(t, tb, t0, learned("eth1", duidA, 1, "2001:db8:100::/48", time.Hour, time.Hour))
	for _, tc := range []struct {
		port, duid, prefix string
		refused            bool
	}{
		{"eth1", duidB, "2001:db8:100:100::/56", true},  // inside A's /48
		{"eth1", duidB, "2001:db8:100::/40", true},      // contains it
		{"eth2", duidA, "2001:db8:100:200::/56", true},  // the same DUID on another port is another client
		{"eth1", duidA, "2001:db8:100:300::/56", false}, // A's own nested prefix
		{"eth1", duidB, "2001:db8:101::/48", false},     // beside it
	} {
		_, err := tb.Learn(t0, learned(tc.port, tc.duid, 2, tc.prefix, time.Hour, time.Hour))
		var re *RefusedError
		if tc.refused != (err != nil) || tc.refused && (!errors.As(err, &re) || re.Reason != RefuseNested) {
			t.Errorf("%s %x %s: err %v, refused want %v", tc.port, tc.duid, tc.prefix, err, tc.refused)
		}
	}
	// Once the /48 is gone, nothing nests: the index follows removals.
	tb.Remove(Key{Port: "eth1", DUID: duidA, IAID: 1, Prefix: pfx("2001:db8:100::/48")}, ReasonReleased)
	tb.Remove(Key{Port: "eth1", DUID: duidA, IAID: 2, Prefix: pfx("2001:db8:100:300::/56")}, ReasonReleased)
	mustLearn(t, tb, t0, learned("eth1", duidB, 2, "2001:db8:100:100::/56", time.Hour, time.Hour))
}

func TestIdenticalPrefixMoves(t *testing.T) {
	tb := NewTable(PortLimits{}, nil)
	tb.SetPolicy(labPolicy())
	a := learned("eth1", duidA, 1, "2001:db8:100:100::/56", time.Hour, time.Hour)
	b := learned("eth2", duidB, 7, "2001:db8:100:100::/56", time.Hour, time.Hour)
	mustLearn(t, tb, t0, a)
	tb.TakeChanges()
	if op := mustLearn(t, tb, t0.Add(time.Second), b); op != Added {
		t.Fatalf("op %v", op)
	}
	ch := tb.TakeChanges()
	if len(ch) != 2 || ch[0].Op != Removed || ch[0].Reason != ReasonSuperseded || ch[0].Binding.Key != a.Key ||
		ch[1].Op != Added || ch[1].Binding.Key != b.Key || ch[1].MovedFrom == nil || *ch[1].MovedFrom != a.Key {
		t.Fatalf("changes %+v", ch)
	}
	var logs bytes.Buffer
	m := NewManager(tb, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	m.logChange(&ch[1])
	if s := logs.String(); !strings.Contains(s, "binding moved") || !strings.Contains(s, "from_port=eth1") || !strings.Contains(s, "port=eth2") {
		t.Errorf("the move is not logged as one: %s", s)
	}
	if got, ok := tb.Get(b.Key); !ok || got.MAC != macB {
		t.Errorf("the prefix did not move to B")
	}
}

func TestRestoreApplysPolicy(t *testing.T) {
	tb := NewTable(PortLimits{}, nil)
	tb.SetPolicy(labPolicy())
	tb.BeginRestore(3)
	good := Binding{Key: Key{Port: "eth1", DUID: duidA, IAID: 1, Prefix: pfx("2001:db8:100:100::/56")},
		NextHop: llA, MAC: macA, Expires: t0.Add(time.Hour), Updated: t0}
	bad := good
	bad.Key = Key{Port: "eth1", DUID: duidA, IAID: 2, Prefix: pfx("::/0")}
	nested := good
	nested.Key = Key{Port: "eth1", DUID: duidB, IAID: 3, Prefix: pfx("2001:db8:100:100::/64")}
	if ref, err := tb.RestoreRef(t0, good); ref == nil || err != nil {
		t.Fatalf("good: %v %v", ref, err)
	}
	for _, b := range []Binding{bad, nested} {
		if ref, err := tb.RestoreRef(t0, b); ref != nil || !errors.Is(err, ErrRefused) {
			t.Errorf("%v restored: %v %v", b.Prefix, ref, err)
		}
	}
	expired := good
	expired.Expires = t0
	if ref, err := tb.RestoreRef(t0, expired); ref != nil || err != nil {
		t.Errorf("an expired binding is not a refusal: %v %v", ref, err)
	}
	tb.EndRestore()
	if tb.Len() != 1 {
		t.Errorf("%d bindings restored, want 1", tb.Len())
	}
}

func TestRefusalLogRateLimited(t *testing.T) {
	clk := newFakeClock(t0)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	tb := NewTable(PortLimits{}, nil)
	tb.SetPolicy(labPolicy())
	m := NewManager(tb, clk.now, log)
	counted := map[string]int{}
	m.OnRefused = func(port string, err error) {
		var re *RefusedError
		if errors.As(err, &re) {
			counted[re.Reason]++
		}
	}
	bad := learned("eth1", duidA, 1, "::/0", time.Hour, time.Hour)
	other := learned("eth1", duidB, 1, "::/0", time.Hour, time.Hour)
	short := learned("eth1", duidA, 1, "2001:db8:100::/40", time.Hour, time.Hour)
	for range 100 {
		m.apply(tb, Update{Learn: []Learned{bad, other, short}})
	}
	if n := strings.Count(logs.String(), "binding refused"); n != 3 {
		t.Errorf("%d log lines in the first minute, want 3 (one per client and reason):\n%s", n, logs.String())
	}
	clk.add(time.Minute)
	logs.Reset()
	m.apply(tb, Update{Learn: []Learned{bad}})
	if s := logs.String(); strings.Count(s, "binding refused") != 1 || !strings.Contains(s, "suppressed=99") {
		t.Errorf("after a minute: %s", s)
	}
	if counted[RefuseReserved] != 201 || counted[RefuseLength] != 100 {
		t.Errorf("counted %v: every refusal must be counted", counted)
	}
}

func TestRefusalLogBounded(t *testing.T) {
	var r refusalLog
	for i := range refusalMaxKeys {
		if _, ok := r.allow(t0, refusalKey{"p", string(rune(i)), "x"}); !ok {
			t.Fatalf("key %d not logged", i)
		}
	}
	if _, ok := r.allow(t0, refusalKey{"p", "new", "x"}); ok {
		t.Errorf("a full log admitted a new client within the minute")
	}
	if _, ok := r.allow(t0.Add(time.Minute), refusalKey{"p", "new", "x"}); !ok || len(r.last) != 1 {
		t.Errorf("old entries were not forgotten: %d left", len(r.last))
	}
}

// FuzzPolicy checks Table.Check against an obvious account of the rules
// (reserved space, lengths, pools, the relay's own prefixes, nesting with
// another client's binding, by brute force over the bindings) for any
// prefix a server might send.
func FuzzPolicy(f *testing.F) {
	for _, s := range []string{"2001:db8:100:100::/56", "::/0", "ff05::/16", "fd00::/48", "2001:db8:100::/48", "2001:db8:1ff:ff00::/57"} {
		p := pfx(s)
		a := p.Addr().As16()
		f.Add(a[:], uint8(p.Bits()), uint8(0), uint8(0))
	}
	existing := []Learned{
		learned("eth1", duidA, 1, "2001:db8:100:100::/56", time.Hour, time.Hour),
		learned("eth1", duidA, 2, "2001:db8:101::/48", time.Hour, time.Hour),
		learned("eth2", duidB, 1, "2001:db8:102:200::/60", time.Hour, time.Hour),
		learned("eth9", duidB, 1, "2001:db8:900::/48", time.Hour, time.Hour),
	}
	ports := []string{"eth1", "eth2", "eth9"}
	duids := []string{duidA, duidB}
	pol := labPolicy()
	f.Fuzz(func(t *testing.T, addr []byte, bits, port, client uint8) {
		if len(addr) != 16 || bits > 128 {
			return
		}
		p := netip.PrefixFrom(netip.AddrFrom16([16]byte(addr)), int(bits)).Masked()
		k := Key{Port: ports[int(port)%len(ports)], DUID: duids[int(client)%len(duids)], IAID: 9, Prefix: p}
		tb := NewTable(PortLimits{}, nil)
		tb.SetPolicy(pol)
		for _, l := range existing {
			mustLearn(t, tb, t0, l)
		}
		err := tb.Check(k)

		want := ""
		pools := pol.Pools
		if pp := pol.PortPools[k.Port]; len(pp) > 0 {
			pools = pp
		}
		inPool := false
		for _, q := range pools {
			inPool = inPool || q.Bits() <= p.Bits() && q.Contains(p.Addr())
		}
		switch {
		case p.Addr().Is4In6():
			want = RefuseInvalid // netip's IPv4-mapped form: not an IPv6 prefix
		case ReservedOverlap(p).IsValid():
			want = RefuseReserved
		case p.Bits() < pol.MinLen || p.Bits() > pol.MaxLen:
			want = RefuseLength
		case !inPool:
			want = RefusePool
		}
		for _, o := range pol.Own {
			if want == "" && o.Prefix.Overlaps(p) {
				want = RefuseOwn
			}
		}
		for _, l := range existing {
			if want == "" && l.Prefix != p && l.Prefix.Overlaps(p) && (l.Port != k.Port || l.DUID != k.DUID) {
				want = RefuseNested
			}
		}
		var re *RefusedError
		switch {
		case want == "" && err != nil:
			t.Fatalf("%s on %s refused (%v); the rules allow it", p, k.Port, err)
		case want != "" && (!errors.As(err, &re) || re.Reason != want):
			t.Fatalf("%s on %s: %v, want refused for %s", p, k.Port, err, want)
		}
		// Learn agrees with Check, and a refusal changes nothing.
		n := tb.Len()
		tb.TakeChanges()
		_, lerr := tb.Learn(t0, Learned{Key: k, Valid: time.Hour})
		if (lerr == nil) != (err == nil) {
			t.Fatalf("Learn %v, Check %v", lerr, err)
		}
		if lerr != nil && (tb.Len() != n || len(tb.TakeChanges()) != 0) {
			t.Fatalf("a refused %s changed the table", p)
		}
	})
}

// TestNestedAgainstBruteForce churns a table over a small space of nested
// prefixes (three lengths, a few clients, two ports) and checks every
// answer of the nesting check against a walk of all bindings, so the
// index built and dropped as lengths come and go never disagrees.
func TestNestedAgainstBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	tb := NewTable(PortLimits{}, nil)
	lens := []int{40, 48, 56}
	clients := []string{duidA, duidB, "\x00\x03\x00\x01\x02\x00\x00\x00\x00\x0c"}
	ports := []string{"eth1", "eth2"}
	randKey := func() Key {
		a := [16]byte{0x20, 0x01, 0x0d, 0xb8, byte(rng.IntN(2)), byte(rng.IntN(4)), byte(rng.IntN(4) << 6)}
		return Key{
			Port: ports[rng.IntN(2)], DUID: clients[rng.IntN(3)], IAID: uint32(rng.IntN(2)),
			Prefix: netip.PrefixFrom(netip.AddrFrom16(a), lens[rng.IntN(len(lens))]).Masked(),
		}
	}
	brute := func(k Key) bool { // refused for nesting?
		for _, b := range tb.List() {
			if b.Prefix != k.Prefix && b.Prefix.Overlaps(k.Prefix) && (b.Port != k.Port || b.DUID != k.DUID) {
				return true
			}
		}
		return false
	}
	built := 0
	for step := range 20000 {
		k := randKey()
		if want, err := brute(k), tb.Check(k); want != (err != nil) {
			t.Fatalf("step %d: Check(%v %x %s) = %v, brute force says refused %v", step, k.Port, k.DUID, k.Prefix, err, want)
		}
		if rng.IntN(3) == 0 {
			if all := tb.List(); len(all) > 0 {
				tb.Remove(all[rng.IntN(len(all))].Key, ReasonOperator)
			}
		} else {
			tb.Learn(t0, Learned{Key: k, Valid: time.Hour})
		}
		if tb.nest != nil {
			built++
		}
		if tb.nlens > 1 && tb.nest == nil {
			t.Fatalf("step %d: %d lengths in use and no index", step, tb.nlens)
		}
	}
	if built == 0 || built == 20000 {
		t.Errorf("the index was present in %d of 20000 steps: the churn did not exercise building and dropping it", built)
	}
}
