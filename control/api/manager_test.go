package api

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
)

// TestWithManager runs the API over a real binding.Manager.
func TestWithManager(t *testing.T) {
	now := func() time.Time { return t0 }
	mgr := binding.NewManager(binding.NewTable(binding.PortLimits{MaxPerClient: 8}, nil), now, testLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { mgr.Run(ctx); close(ran) }()
	t.Cleanup(func() { cancel(); <-ran })

	learn := func(port, duid string, iaid uint32, prefix string, preferred, valid time.Duration) binding.Learned {
		return binding.Learned{
			Key:        binding.Key{Port: port, DUID: duid, IAID: iaid, Prefix: netip.MustParsePrefix(prefix)},
			NextHop:    netip.MustParseAddr("fe80::2"),
			MAC:        [6]byte{2, 0, 0, 0, 0, 2},
			MACKnown:   true,
			Preferred:  preferred,
			Valid:      valid,
			ServerDUID: "\x00\x02",
		}
	}
	mgr.Apply(binding.Update{Learn: []binding.Learned{
		learn("eth1", "\x00\x03\x00\x01", 1, "2001:db8:1::/56", 30*time.Minute, time.Hour),
		learn("eth1", "\x00\x03\x00\x01", 1, "2001:db8:2::/56", time.Hour, 2*time.Hour),
		learn("eth2", "\x00\x03\x00\x02", 5, "2001:db8:3::/56", binding.Infinity, binding.Infinity),
	}})

	srv := NewServer(mgr, testLogger(t))
	srv.Now = func() time.Time { return t0.Add(10 * time.Minute) }
	ln, err := Listen(t.TempDir() + "/api.sock")
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.ServeListener(sctx, ln) }()
	defer func() { scancel(); <-served }()
	c := Dial(ln.Addr().String())

	bs, err := c.Bindings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 3 {
		t.Fatalf("listed %d bindings, want 3: %+v", len(bs), bs)
	}
	b := bs[0]
	if b.Interface != "eth1" || b.ClientDUID != "00030001" || b.IAID != 1 || b.Prefix.String() != "2001:db8:1::/56" ||
		b.NextHop.String() != "fe80::2" || b.NextHopMAC != "02:00:00:00:00:02" || b.ServerDUID != "0002" ||
		b.PreferredLifetime != 20*60 || b.ValidLifetime != 50*60 || !b.Expires.Equal(t0.Add(time.Hour)) {
		t.Errorf("binding 0 = %+v", b)
	}
	if b := bs[2]; b.ValidLifetime != Infinite || b.PreferredLifetime != Infinite {
		t.Errorf("infinite binding = %+v", b)
	}

	resp, err := c.Clear(ctx, ClearRequest{Client: "00030001", Interface: "eth1"})
	if err != nil || resp.Count != 2 {
		t.Fatalf("Clear = %+v, %v", resp, err)
	}
	bs, err = c.Bindings(ctx)
	if err != nil || len(bs) != 1 || bs[0].Prefix.String() != "2001:db8:3::/56" {
		t.Errorf("after clear: %+v, %v", bs, err)
	}

	// The manager's stop is a 503, not a hang.
	cancel()
	<-ran
	if _, err := c.Bindings(context.Background()); err == nil {
		t.Error("Bindings after the manager stopped succeeded")
	}
}
