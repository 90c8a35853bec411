package main

// End-to-end test of BGP advertisement (RFC 8987 R-4): pdrelay peers with
// FRR (zebra and bgpd) in the server namespace, which has no static route
// for the delegated space: the upstream host reaches a client only through
// the route pdrelay announces.

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/bench/lab"
	"github.com/pdrelay/pdrelay/control/api"
)

func TestEndToEndBGP(t *testing.T) {
	lab.Require(t, "kea-dhcp6", "dhclient", "zebra", "bgpd", "vtysh")
	bin := buildRelay(t)
	l := lab.NewT(t, lab.Config{Clients: 1, NoPoolRoute: true, Tag: "bg"})
	if out, err := l.Run(l.ServerNS, "ip", "-6", "route", "show", "match", "2001:db8:100::1"); err != nil || strings.Contains(out, "2001:db8") {
		t.Fatalf("the server namespace routes the delegated space statically: %q %v", out, err)
	}
	if _, err := l.StartKea(lab.KeaOptions{ValidLifetime: 300, PreferredLifetime: 200, RenewTimer: 100, RebindTimer: 150}); err != nil {
		t.Fatalf("kea: %v", err)
	}
	frr, err := l.StartFRR(lab.FRROptions{})
	if err != nil {
		t.Fatalf("frr: %v", err)
	}
	relayAddr := lab.RelayUplinkAddr // the next hop pdrelay announces by default
	const metricsAddr = "127.0.0.1:9549"
	cfg := l.PdrelayConfig(fmt.Sprintf(`metrics_listen: %s
dataplane:
  mode: xdp
bgp:
  asn: 65001
  router_id: 192.0.2.1
  neighbors:
    - {address: %s, asn: 65000}
  communities: ["65001:100"]
  aggregates: [2001:db8:8000::/40]
  graceful_restart_time: 60s
`, metricsAddr, lab.ServerAddr), "")
	r, c, p := relayOneClient(t, l, bin, cfg)
	agg := netip.MustParsePrefix("2001:db8:8000::/40")

	// FRR holds the delegated prefix (and the aggregate) with pdrelay's
	// next hop, and zebra has put it in the server namespace's kernel.
	waitFRR(t, frr, "the delegated prefix and the aggregate", func(rs map[netip.Prefix]lab.FRRRoute) bool {
		return rs[p].NextHop == relayAddr && !rs[p].Stale && rs[p].ASPath == "65001" && rs[agg].NextHop == relayAddr
	})
	kernelRoute := func() string {
		out, _ := exec.Command("ip", "-n", l.ServerNS, "-6", "route", "show", p.String()).Output()
		return strings.TrimSpace(string(out))
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		kr := kernelRoute()
		if strings.Contains(kr, "via "+relayAddr.String()) && strings.Contains(kr, "proto bgp") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server namespace kernel route for %s: %q, want via %s proto bgp (zebra)", p, kr, relayAddr)
		}
	}
	if out, err := frr.Vtysh("show bgp ipv6 unicast " + p.String() + " json"); err != nil || !strings.Contains(out, `"65001:100"`) {
		t.Errorf("FRR's path for %s lacks community 65001:100: %v\n%s", p, err, out)
	}

	// The upstream host reaches the client through the announced route
	// (and pdrelay's forwarding plane), and the client it.
	host := p.Addr().Next()
	if err := l.AddClientAddr(0, host); err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(l.ServerNS, lab.UpstreamAddr, host, 5*time.Second); err != nil {
		t.Fatalf("upstream -> client through the BGP route: %v", err)
	}

	// The operator's view: the session, the prefixes it carries.
	out, err := r.CLI("bgp", "--json")
	if err != nil {
		t.Fatalf("pdrelay bgp --json: %v\n%s", err, out)
	}
	var st api.BGPStatusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil || !st.Enabled || len(st.Sessions) != 1 {
		t.Fatalf("pdrelay bgp --json: %v\n%s", err, out)
	}
	if s := st.Sessions[0]; s.Peer != lab.ServerAddr.String() || s.State != "established" || s.PrefixesSent != 2 ||
		!s.GracefulRestart || st.Delegated != 1 || st.Prefixes != 2 || st.NextHop != relayAddr.String() {
		t.Errorf("pdrelay bgp --json: %+v", st)
	}
	if out, err := r.CLI("bgp"); err != nil || !regexp.MustCompile(`(?m)^fd00:0:0:ffff::1\s+65000\s+established\s+\S+\s+2\s`).MatchString(out) {
		t.Errorf("pdrelay bgp: %v\n%s", err, out)
	} else {
		t.Logf("$ pdrelay bgp\n%s", out)
	}
	peer := fmt.Sprintf(`{peer="%s"}`, lab.ServerAddr)
	if up, sent := metric(t, r, metricsAddr, "pdrelay_bgp_session_up"+peer), metric(t, r, metricsAddr, "pdrelay_bgp_prefixes_advertised"+peer); up != 1 || sent != 2 {
		t.Errorf("metrics: session_up %v, prefixes_advertised %v; want 1 and 2", up, sent)
	}

	// A restart (SIGTERM, start again): FRR keeps the route throughout,
	// marked stale while pdrelay is away, and refreshed after. Sampled
	// from the moment the signal is sent until FRR has it fresh again.
	var (
		mu      sync.Mutex
		samples int
		missing []string
		stale   int
	)
	stopPoll := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for {
			select {
			case <-stopPoll:
				return
			default:
			}
			rs, err := frr.Routes()
			kr := kernelRoute()
			mu.Lock()
			samples++
			switch {
			case err != nil:
				missing = append(missing, "vtysh: "+err.Error())
			case rs[p].NextHop != relayAddr:
				missing = append(missing, fmt.Sprintf("%s: FRR holds %+v", time.Now().Format("15:04:05.000"), rs[p]))
			case !strings.Contains(kr, "via "+relayAddr.String()):
				missing = append(missing, fmt.Sprintf("%s: kernel route %q", time.Now().Format("15:04:05.000"), kr))
			case rs[p].Stale:
				stale++
			}
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	mon, err := l.Start(l.ServerNS, "ip-monitor", "ip", "-6", "monitor", "route")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // ip monitor subscribes
	restartAt := time.Now()
	if err := r.Stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.Proc.Log(), "bgp speaker stopped: the peers keep the routes") {
		t.Errorf("no graceful stop logged")
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	waitFRR(t, frr, "the route refreshed after the restart", func(rs map[netip.Prefix]lab.FRRRoute) bool {
		return rs[p].NextHop == relayAddr && !rs[p].Stale
	})
	fresh := time.Since(restartAt)
	close(stopPoll)
	<-polled
	mu.Lock()
	t.Logf("restart: %d samples of FRR's table and the kernel route over %v, %d with the route stale", samples, fresh.Round(time.Millisecond), stale)
	if len(missing) > 0 {
		t.Errorf("the route was missing at FRR during the restart (%d of %d samples):\n%s", len(missing), samples, strings.Join(missing, "\n"))
	}
	if stale == 0 {
		t.Errorf("FRR never marked the route stale: the restart was not seen (or not graceful)")
	}
	mu.Unlock()
	s, err := frr.Session(lab.RelayUplinkAddr)
	if err != nil || s.State != "Established" || !s.RBit || !s.FBit || !s.NBit {
		t.Errorf("FRR's session after the restart: %+v, %v; want Established with the R, F and N bits", s, err)
	}
	if !strings.Contains(s.LastReset, "closed the session") {
		t.Errorf("FRR's last reset: %q, want the session closed (no NOTIFICATION)", s.LastReset)
	}
	// The kernel of the server namespace never lost the route: without
	// the F bit FRR would clear the stale route when the session comes up
	// and install it again from the UPDATE, a flap too short for the
	// sampling above but not for the kernel's own notifications.
	mon.Stop()
	for _, line := range strings.Split(mon.Log(), "\n") {
		if strings.HasPrefix(line, "Deleted") && strings.Contains(line, p.String()) {
			t.Errorf("the server namespace's kernel deleted the route during the restart: %s", line)
		}
	}
	if err := l.Ping(l.ServerNS, lab.UpstreamAddr, host, 5*time.Second); err != nil {
		t.Fatalf("after the restart, upstream -> client: %v", err)
	}

	// The client releases: FRR withdraws the prefix (and keeps the
	// aggregate). Measured from pdrelay's log line of the removal.
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
	waitBindings(t, r, 0)
	var gone time.Time
	waitFRR(t, frr, "the released prefix withdrawn", func(rs map[netip.Prefix]lab.FRRRoute) bool {
		_, held := rs[p]
		if !held && gone.IsZero() {
			gone = time.Now()
		}
		return !held && rs[agg].NextHop == relayAddr
	})
	if at, ok := logTime(r.Proc.Log(), `msg="binding removed".*prefix=`+regexp.QuoteMeta(p.String())+`.*reason=released`); ok {
		d := gone.Sub(at)
		t.Logf("release: FRR no longer holds %s %v after pdrelay removed the binding (FRR polled every 20 ms)", p, d.Round(time.Millisecond))
		if d > time.Second {
			t.Errorf("the withdrawal took %v to reach FRR, want under a second", d)
		}
	} else {
		t.Errorf("no release logged")
	}
	for deadline := time.Now().Add(5 * time.Second); kernelRoute() != ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the server namespace still routes %s: %q", p, kernelRoute())
		}
	}
	if err := l.Ping(l.ServerNS, lab.UpstreamAddr, host, time.Second); err == nil {
		t.Errorf("the upstream host still reaches the released prefix")
	}
}

// waitFRR polls FRR's table until cond holds (15 s at most).
func waitFRR(t *testing.T, f *lab.FRR, what string, cond func(map[netip.Prefix]lab.FRRRoute) bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		rs, err := f.Routes()
		if err == nil && cond(rs) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("FRR never held %s: %v %v", what, rs, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logTime returns the time of the last log line matching re.
func logTime(log, re string) (time.Time, bool) {
	m := regexp.MustCompile(`(?m)^time=(\S+) .*`+re).FindAllStringSubmatch(log, -1)
	if m == nil {
		return time.Time{}, false
	}
	at, err := time.Parse(time.RFC3339Nano, m[len(m)-1][1])
	return at, err == nil
}
