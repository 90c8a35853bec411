package daemon

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"testing"

	"github.com/pdrelay/pdrelay/fib"
)

func routesOf(ps ...string) []*fib.Route {
	var rs []*fib.Route
	for _, p := range ps {
		rs = append(rs, &fib.Route{Prefix: netip.MustParsePrefix(p)})
	}
	return rs
}

func setOf(ps ...string) setMirror {
	m := setMirror{}
	for _, p := range ps {
		m[netip.MustParsePrefix(p)] = true
	}
	return m
}

// TestMirrorFill: while the map fills it holds ::/0; changes made during
// the fill win over the older routes the fill copies; afterwards ::/0 is
// gone and changes go straight to the map.
func TestMirrorFill(t *testing.T) {
	set := setMirror{}
	m := &mirror{set: set}
	if err := m.beginFill(); err != nil {
		t.Fatal(err)
	}
	if !set[everything] {
		t.Fatal("no ::/0 while filling")
	}
	// The restored snapshot has A and B; while it is being copied, B's
	// binding ends and C starts.
	restored := routesOf("2001:db8:a::/56", "2001:db8:b::/56")
	m.Delete(netip.MustParsePrefix("2001:db8:b::/56"))
	m.Add(netip.MustParsePrefix("2001:db8:c::/56"))
	n, err := m.fill(context.Background(), slices.Values(restored))
	if err != nil || n != 2 {
		t.Fatalf("fill = %d, %v", n, err)
	}
	if want := setOf("2001:db8:a::/56", "2001:db8:c::/56"); !maps.Equal(set, want) {
		t.Fatalf("after fill %v, want %v", set, want)
	}
	m.Delete(netip.MustParsePrefix("2001:db8:a::/56"))
	if want := setOf("2001:db8:c::/56"); !maps.Equal(set, want) || len(m.journal) != 0 {
		t.Fatalf("after a later delete %v (journal %d), want %v", set, len(m.journal), want)
	}
}

// TestMirrorFillCanceled: a fill cut short leaves ::/0 in the map, so that
// no delegated destination goes to the kernel.
func TestMirrorFillCanceled(t *testing.T) {
	set := setMirror{}
	m := &mirror{set: set}
	m.beginFill()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.fill(ctx, slices.Values(routesOf("2001:db8:a::/56"))); err == nil {
		t.Fatal("canceled fill returned no error")
	}
	if !set[everything] {
		t.Fatal("::/0 left the map after a canceled fill")
	}
}

// TestMirrorFillEverythingRouted: a route for ::/0 itself survives the
// end of the fill.
func TestMirrorFillEverythingRouted(t *testing.T) {
	for _, during := range []bool{false, true} {
		set := setMirror{}
		m := &mirror{set: set}
		m.beginFill()
		var restored []*fib.Route
		if during {
			m.Add(everything)
		} else {
			restored = routesOf("::/0")
		}
		if _, err := m.fill(context.Background(), slices.Values(restored)); err != nil {
			t.Fatal(err)
		}
		if !set[everything] {
			t.Fatalf("routed ::/0 (added during the fill: %v) left the map", during)
		}
	}
}
