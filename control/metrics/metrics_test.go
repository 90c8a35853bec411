package metrics

import (
	"fmt"
	"github.com/pdrelay/pdrelay/control/dhcp6"
	"io"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/relay"
	"github.com/pdrelay/pdrelay/internal/version"
)

// TestScrape drives a real engine and binding table and reads /metrics as
// Prometheus would.
func TestScrape(t *testing.T) {
	eng, err := relay.NewEngine(relay.Config{
		Ports:   []relay.Port{{Name: "dl0"}},
		Servers: []netip.Addr{netip.MustParseAddr("2001:db8::547")},
	})
	if err != nil {
		t.Fatal(err)
	}
	m := New(&eng.Counters, []string{"dl0", "dl1"})

	// One Solicit relayed up, one Relay-Reply from a stranger dropped.
	solicit := []byte{1, 0, 0, 1, 0, 1, 0, 2, 0xab, 0xcd} // Solicit, xid 1, client-id "abcd"
	if _, _, err := eng.HandleClient(time.Now(), relay.ClientPacket{Dst: dhcp6.AllRelayAgentsAndServers, Port: 0, Src: netip.MustParseAddr("fe80::2"), Payload: solicit}); err != nil {
		t.Fatal(err)
	}
	eng.HandleServer(time.Now(), relay.ServerPacket{Uplink: true, Src: netip.MustParseAddr("2001:db8::666"), Payload: []byte{13}})
	// A client message to an address not the relay's.
	eng.HandleClient(time.Now(), relay.ClientPacket{Dst: netip.MustParseAddr("2001:db8::99"), Port: 0, Src: netip.MustParseAddr("fe80::2"), Payload: solicit})

	// Two bindings added on dl0, one removed; one limit hit on dl1.
	tab := binding.NewTable(binding.PortLimits{}, nil)
	now := time.Now()
	for i, p := range []string{"2001:db8:1::/56", "2001:db8:2::/56"} {
		tab.Learn(now, binding.Learned{Key: binding.Key{Port: "dl0", DUID: "c", IAID: uint32(i), Prefix: netip.MustParsePrefix(p)}, Valid: time.Hour})
	}
	tab.Remove(binding.Key{Port: "dl0", DUID: "c", IAID: 1, Prefix: netip.MustParsePrefix("2001:db8:2::/56")}, binding.ReasonReleased)
	m.Sink(tab.TakeChanges())
	m.Refused("dl1", binding.ErrClientLimit)
	m.Refused("dl0", &binding.RefusedError{Reason: binding.RefuseReserved, Detail: "overlaps ff00::/8"})

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	info := version.Get()
	for _, want := range []string{
		fmt.Sprintf(`pdrelay_build_info{commit=%q,goversion=%q,version=%q} 1`, info.Commit, info.Go, info.Version),
		`pdrelay_dhcp_messages_total{direction="up",type="solicit"} 1`,
		`pdrelay_dhcp_drops_total{reason="untrusted_server"} 1`,
		`pdrelay_dhcp_drops_total{reason="bad_destination"} 1`,
		`pdrelay_dhcp_client_drops_total{interface="dl0",reason="bad_destination"} 1`,
		`pdrelay_dhcp_client_drops_total{interface="dl0",reason="rate_limited"} 0`,
		`pdrelay_pending_requests 1`,
		`pdrelay_binding_refusals_total{interface="dl0",reason="reserved"} 1`,
		`pdrelay_binding_refusals_total{interface="dl1",reason="nested"} 0`,
		`pdrelay_dhcp_drops_total{reason="hop_limit"} 0`,
		`pdrelay_bindings{interface="dl0"} 1`,
		`pdrelay_bindings{interface="dl1"} 0`,
		`pdrelay_binding_changes_total{op="added",reason=""} 2`,
		`pdrelay_binding_changes_total{op="removed",reason="released"} 1`,
		`pdrelay_limit_hits_total{interface="dl1",limit="max_per_client"} 1`,
		`pdrelay_limit_hits_total{interface="dl0",limit="max_delegations"} 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestScrapeAfterReconfigure: a port added at run time gets its series
// (AddPorts for the binding ones, the engine's counters for its drops); a
// removed port's series stay, its drop counts frozen, its bindings gauge
// following its bindings as they go.
func TestScrapeAfterReconfigure(t *testing.T) {
	servers := []netip.Addr{netip.MustParseAddr("2001:db8::547")}
	eng, err := relay.NewEngine(relay.Config{Ports: []relay.Port{{Name: "dl0"}}, Servers: servers})
	if err != nil {
		t.Fatal(err)
	}
	m := New(&eng.Counters, []string{"dl0"})
	badDst := func(port int) {
		eng.HandleClient(time.Now(), relay.ClientPacket{Dst: netip.MustParseAddr("2001:db8::99"), Port: port, Src: netip.MustParseAddr("fe80::2"), Payload: []byte{1, 0, 0, 1}})
	}
	badDst(0)
	tab := binding.NewTable(binding.PortLimits{}, nil)
	now := time.Now()
	key := binding.Key{Port: "dl0", DUID: "c", IAID: 1, Prefix: netip.MustParsePrefix("2001:db8:1::/56")}
	tab.Learn(now, binding.Learned{Key: key, Valid: time.Hour})
	m.Sink(tab.TakeChanges())

	// dl0 goes, dl1 comes.
	if err := eng.Reconfigure(relay.Config{Ports: []relay.Port{{Name: "dl1"}}, Servers: servers}); err != nil {
		t.Fatal(err)
	}
	m.AddPorts("dl1")
	badDst(0)
	badDst(0)
	m.Refused("dl1", binding.ErrPortLimit)
	body := scrape(t, m)
	for _, want := range []string{
		`pdrelay_dhcp_client_drops_total{interface="dl0",reason="bad_destination"} 1`,
		`pdrelay_dhcp_client_drops_total{interface="dl1",reason="bad_destination"} 2`,
		`pdrelay_dhcp_client_drops_total{interface="dl1",reason="rate_limited"} 0`,
		`pdrelay_bindings{interface="dl0"} 1`,
		`pdrelay_bindings{interface="dl1"} 0`,
		`pdrelay_limit_hits_total{interface="dl1",limit="max_delegations"} 1`,
		`pdrelay_limit_hits_total{interface="dl1",limit="unique_client"} 0`,
		`pdrelay_binding_refusals_total{interface="dl1",reason="pool"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// The removed port's binding expires: its gauge follows.
	tab.Remove(key, binding.ReasonExpired)
	m.Sink(tab.TakeChanges())
	if body := scrape(t, m); !strings.Contains(body, `pdrelay_bindings{interface="dl0"} 0`) {
		t.Error("the removed port's bindings gauge did not follow its bindings")
	}
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	return string(body)
}
