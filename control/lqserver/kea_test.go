package lqserver

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/pdrelay/pdrelay/control/lqserver/keatest"
)

// TestKeaPaging: the walk sees every lease once, in order, with as few
// lease6-get-page commands as the page size allows (a short page is the
// last), and stops at the callback's error.
func TestKeaPaging(t *testing.T) {
	n, gen := genLeases(7, 0)
	kea, err := keatest.Start(t.TempDir(), keatest.Options{N: n, Gen: gen})
	if err != nil {
		t.Fatal(err)
	}
	defer kea.Close()
	k := &Kea{Socket: kea.Socket, PageSize: 3}
	var got []netip.Prefix
	skipped, err := k.Leases(context.Background(), func(l *Lease) error {
		got = append(got, l.Prefix)
		return nil
	})
	if err != nil || skipped != 0 || len(got) != 7 {
		t.Fatalf("walk: %v %d %v", got, skipped, err)
	}
	for i, p := range got {
		if p != gen(i).Prefix {
			t.Errorf("lease %d: %s, want %s", i, p, gen(i).Prefix)
		}
	}
	if c := kea.Commands()["lease6-get-page"]; c != 3 {
		t.Errorf("%d pages for 7 leases of 3 a page, want 3", c)
	}
	stop := errors.New("stop")
	seen := 0
	_, err = k.Leases(context.Background(), func(*Lease) error {
		seen++
		if seen == 4 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || seen != 4 {
		t.Errorf("stopping walk: %v after %d", err, seen)
	}
	// Deleting and reading single leases.
	p := gen(2).Prefix
	if l, err := k.GetLease(context.Background(), TypePD, p.Addr()); err != nil || l == nil || l.Prefix != p {
		t.Fatalf("get: %+v %v", l, err)
	}
	if ok, err := k.DeleteLease(context.Background(), TypePD, p.Addr()); !ok || err != nil {
		t.Fatalf("delete: %v %v", ok, err)
	}
	if ok, err := k.DeleteLease(context.Background(), TypePD, p.Addr()); ok || err != nil {
		t.Fatalf("second delete: %v %v", ok, err)
	}
	if l, err := k.GetLease(context.Background(), TypePD, p.Addr()); err != nil || l != nil {
		t.Fatalf("get after delete: %+v %v", l, err)
	}
	if ls, err := k.LeasesByDUID(context.Background(), gen(0).DUID); err != nil || len(ls) != 2 {
		t.Fatalf("by duid: %d %v", len(ls), err)
	}
	var ke *KeaError
	if _, err := (&Kea{Socket: kea.Socket}).Config(context.Background()); err != nil {
		t.Errorf("config-get: %v", err)
	}
	var a answerHead
	if err := k.command(context.Background(), "no-such-command", nil, &a); err != nil || !errors.As(a.check("no-such-command"), &ke) || ke.Result != keaUnsupported {
		t.Errorf("unknown command: %+v %v", a, err)
	}
}
