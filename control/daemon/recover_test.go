package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pdrelay/pdrelay/control/api"
	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/config"
	"github.com/pdrelay/pdrelay/control/dhcp6"
	"github.com/pdrelay/pdrelay/control/leasequery"
	"github.com/pdrelay/pdrelay/fib"
)

// lqServe runs a one-query Bulk Leasequery server on loopback answering
// with the given client data options, and returns its address.
func lqServe(t *testing.T, serverID []byte, clients ...[]byte) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				q, err := dhcp6.NewFrameReader(c).Next()
				if err != nil || len(q) < 4 {
					return
				}
				xid := [3]byte(q[1:4])
				sid := dhcp6.AppendOption(nil, dhcp6.OptServerID, serverID)
				var out []byte
				for i, cd := range clients {
					t := dhcp6.MsgLeasequeryData
					m := dhcp6.AppendHeader(nil, t, xid)
					if i == 0 {
						m = append(dhcp6.AppendHeader(nil, dhcp6.MsgLeasequeryReply, xid), sid...)
					}
					out, _ = dhcp6.AppendFramed(out, append(m, cd...))
				}
				if len(clients) == 0 {
					out, _ = dhcp6.AppendFramed(out, append(dhcp6.AppendHeader(nil, dhcp6.MsgLeasequeryReply, xid), sid...))
				} else {
					out, _ = dhcp6.AppendFramed(out, dhcp6.AppendHeader(nil, dhcp6.MsgLeasequeryDone, xid))
				}
				c.Write(out)
				var buf [1]byte
				c.Read(buf[:]) // until the requestor closes
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// lqClient is an OPTION_CLIENT_DATA for a client on the port with
// Interface-ID ifID, with its MAC when mac is not nil.
func lqClient(duid string, prefix string, peer string, ifID string, mac []byte) []byte {
	relay := dhcp6.AppendRelayHeader(nil, dhcp6.MsgRelayForw, 0, netip.IPv6Unspecified(), netip.MustParseAddr(peer))
	relay = dhcp6.AppendOption(relay, dhcp6.OptInterfaceID, []byte(ifID))
	if mac != nil {
		relay = dhcp6.AppendClientLinkLayer(relay, [6]byte(mac))
	}
	var d []byte
	d = dhcp6.AppendOption(d, dhcp6.OptClientID, []byte(duid))
	d = dhcp6.AppendIAPrefix(d, dhcp6.IAPrefix{Preferred: 1800, Valid: 3600, Prefix: netip.MustParsePrefix(prefix)})
	d = dhcp6.AppendCLTTime(d, 10)
	d = dhcp6.AppendLQRelayData(d, netip.IPv6Unspecified(), relay)
	return dhcp6.AppendOption(nil, dhcp6.OptClientData, d)
}

// TestRecoverDaemon runs the daemon's recovery path: the requestor built
// from the config, its bindings through the manager's sinks to the FIB
// and the next-hop resolver, and the operator API and metrics on top.
func TestRecoverDaemon(t *testing.T) {
	serverID := []byte{0, 3, 0, 1, 2, 0, 0x5e, 0, 0x53, 0xfe}
	relayID := []byte{0, 3, 0, 1, 2, 0, 0x5e, 0, 0x53, 0xaa}
	srv := lqServe(t, serverID,
		lqClient(duidA, "2001:db8:a::/56", "fe80::a", "port-1", []byte{2, 0, 0, 0, 0, 0xa}),
		lqClient(duidB, "2001:db8:b::/56", "fe80::b", "port-2", nil), // no MAC: neighbour discovery
	)
	cfg := &config.Config{
		Downlinks: []config.Downlink{
			{Interface: "dl0", InterfaceID: "port-1", LinkAddress: netip.MustParseAddr("2001:db8:f0::1")},
			{Interface: "dl1", InterfaceID: "port-2", LinkAddress: netip.MustParseAddr("2001:db8:f1::1")},
		},
		Leasequery: config.Leasequery{Servers: []netip.AddrPort{srv}, Query: config.QueryRelayID,
			ConnTimeout: 2 * time.Second, DataTimeout: 2 * time.Second, MaxRetry: time.Second},
	}
	log := slog.New(slog.DiscardHandler)
	ft := fib.NewTable()
	fs := testFIBWriter(ft)
	tab := binding.NewTable(binding.PortLimits{}, nil)
	// A binding stored before the state was lost at the server: the
	// server no longer has it, so a complete answer removes it.
	tab.Restore(time.Now(), binding.Binding{Key: binding.Key{Port: "dl0", DUID: "gone", IAID: 1,
		Prefix: netip.MustParsePrefix("2001:db8:c::/56")}, NextHop: nhA, MAC: resolved,
		Expires: time.Now().Add(time.Hour), ServerDUID: string(serverID), Updated: time.Now().Add(-time.Hour)})
	res := newFakeResolver()
	hops := newNextHops(res, log)
	mgr := binding.NewManager(tab, nil, log, fs.Sink, hops.Sink)
	hops.mgr = mgr
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { mgr.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	lq := newRequestor(cfg, relayID, mgr, log)
	reg := prometheus.NewRegistry()
	reg.MustRegister(lq)
	apiSrv := api.NewServer(mgr, log)
	apiSrv.Recoverer = lq
	rec := httptest.NewRecorder()
	apiSrv.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/recover", strings.NewReader(`{}`)))
	if rec.Code != http.StatusOK {
		t.Fatalf("POST /v1/recover: %d %s", rec.Code, rec.Body)
	}
	var rep leasequery.Report
	if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Servers) != 1 || rep.Servers[0].Result != "complete" || rep.Added != 2 || rep.Removed != 1 {
		t.Fatalf("report %s", rec.Body)
	}

	// The FIB routes both recovered prefixes on their ports; the one the
	// server no longer has is gone.
	if err := mgr.Do(ctx, func(*binding.Table) {}); err != nil {
		t.Fatal(err)
	}
	snap := ft.Load()
	for prefix, port := range map[string]fib.PortID{"2001:db8:a::/56": 1, "2001:db8:b::/56": 2} {
		p := netip.MustParsePrefix(prefix)
		r, ok := snap.Lookup(p.Addr())
		if !ok || r.Prefix != p || r.Port != port {
			t.Errorf("%s routed %+v %v, want port %d", prefix, r, ok, port)
		}
	}
	if _, ok := snap.Lookup(netip.MustParseAddr("2001:db8:c::1")); ok {
		t.Error("binding not at the server still routed")
	}
	// The binding without a MAC waits for neighbour discovery; the other
	// does not.
	if n, _, tracking := res.counts(hopKey{"dl1", nhB}); n == 0 || !tracking {
		t.Errorf("next hop of the MAC-less binding not resolved (asked %d times)", n)
	}
	if n, _, _ := res.counts(hopKey{"dl0", nhA}); n != 0 {
		t.Errorf("next hop with a known MAC asked %d times", n)
	}
	bs, _ := mgr.List(ctx)
	for _, b := range bs {
		if b.Source != binding.SourceLeasequery || b.ServerDUID != string(serverID) {
			t.Errorf("binding %v: source %v server %x", b.Prefix, b.Source, b.ServerDUID)
		}
	}

	// Metrics and the status the CLI prints.
	if got := lqGauge(t, reg, "pdrelay_leasequery_last_bindings"); got != 2 {
		t.Errorf("pdrelay_leasequery_last_bindings = %v", got)
	}
	rec = httptest.NewRecorder()
	apiSrv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/leasequery", nil))
	if rec.Code != http.StatusOK || !bytes.Contains(rec.Body.Bytes(), []byte(`"result": "complete"`)) {
		t.Errorf("GET /v1/leasequery: %d %s", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	apiSrv.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/recover", strings.NewReader(`{"server":"2001:db8::9"}`)))
	if rec.Code != http.StatusBadRequest {
		t.Errorf("unknown server: %d %s", rec.Code, rec.Body)
	}
}

// lqGauge returns the value of a one-sample gauge in reg.
func lqGauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			return mf.Metric[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func TestNewRequestorQueries(t *testing.T) {
	dl := []config.Downlink{
		{Interface: "dl0", InterfaceID: "dl0", LinkAddress: netip.MustParseAddr("2001:db8:f0::1")},
		{Interface: "dl1", InterfaceID: "dl1", LinkAddress: netip.MustParseAddr("2001:db8:f1::1")},
	}
	srv := []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::547]:547")}
	if newRequestor(&config.Config{Downlinks: dl}, []byte{1}, nil, slog.New(slog.DiscardHandler)) != nil {
		t.Fatal("a requestor without servers")
	}
	for _, tc := range []struct {
		q       config.LeasequeryQuery
		perLink bool
		want    string
	}{
		{config.QueryRelayID, false, "relay-id"},
		{config.QueryLinkAddress, false, "link-address 2001:db8:f0::1 (dl0),link-address 2001:db8:f1::1 (dl1)"},
		{config.QueryRemoteID, false, "remote-id 00000009ab"},
		{config.QueryRelayID, true, "relay-id on 2001:db8:f0::1 (dl0),relay-id on 2001:db8:f1::1 (dl1)"},
		{config.QueryRemoteID, true, "remote-id 00000009ab on 2001:db8:f0::1 (dl0),remote-id 00000009ab on 2001:db8:f1::1 (dl1)"},
	} {
		cfg := &config.Config{Downlinks: dl, Leasequery: config.Leasequery{Servers: srv, Query: tc.q, PerLink: tc.perLink, RemoteID: []byte{0, 0, 0, 9, 0xab}}}
		lq := newRequestor(cfg, []byte{1}, nil, slog.New(slog.DiscardHandler))
		if got := lq.Queries(); got != tc.want {
			t.Errorf("%s: queries %q, want %q", tc.q, got, tc.want)
		}
	}
}
