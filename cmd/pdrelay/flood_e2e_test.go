package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/ipv6"

	"github.com/pdrelay/pdrelay/bench/lab"
)

// TestEndToEndFlood: one downlink receives 100,000 distinct Requests as
// fast as the test can send them. Meanwhile a real client (dhcpcd) on
// another port gets its prefix in its normal time, measured against the
// same client on a third port before the flood; once the flood ends a
// real client on the flooded port gets one too. The relay's RSS is read
// before and after. The figures are logged (go test -v -run Flood).
func TestEndToEndFlood(t *testing.T) {
	lab.Require(t, "kea-dhcp6", "dhcpcd")
	if testing.Short() {
		t.Skip("the flood takes a few seconds")
	}
	bin := buildRelay(t)
	l := lab.NewT(t, lab.Config{Clients: 3})
	kea, err := l.StartKea(lab.KeaOptions{})
	if err != nil {
		t.Fatalf("kea: %v", err)
	}
	const metricsAddr = "127.0.0.1:9547"
	r, err := l.StartPdrelay(bin, l.PdrelayConfig("metrics_listen: "+metricsAddr+"\n", ""))
	if err != nil {
		t.Fatalf("pdrelay: %v", err)
	}
	timeToPrefix := func(port int) time.Duration {
		t.Helper()
		start := time.Now()
		c, err := l.StartDhcpcd(port, lab.ClientOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.WaitPrefix(30 * time.Second); err != nil {
			t.Fatalf("dhcpcd on dl%d got no prefix: %v\n%s", port, err, r.Proc.Log())
		}
		return time.Since(start)
	}

	baseline := timeToPrefix(1)
	rssBefore := rss(t, r.Proc.Cmd.Process.Pid)

	// 100,000 distinct Requests (a DUID and transaction id each, asking
	// Kea for an IA_PD) from the client namespace behind dl0.
	const n = 100_000
	msgs := make([][]byte, n)
	for i := range msgs {
		duid := []byte{0, 3, 0, 1, 0x0a, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}
		msgs[i] = (&lab.Message{Type: lab.MsgRequest, XID: uint32(i), Options: []lab.Option{
			{Code: lab.OptClientID, Data: duid},
			{Code: lab.OptServerID, Data: kea.ServerDUID()},
			{Code: lab.OptElapsedTime, Data: []byte{0, 0}},
			lab.IAPDOption(1),
		}}).Marshal()
	}
	sock, err := l.ListenUDP(l.ClientNS[0], netip.MustParseAddrPort("[::]:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	idx, err := l.IfIndex(l.ClientNS[0], "eth0")
	if err != nil {
		t.Fatal(err)
	}
	group := &net.UDPAddr{IP: net.ParseIP("ff02::1:2"), Port: 547, Zone: strconv.Itoa(idx)}
	flooded := make(chan time.Duration, 1)
	floodStart := time.Now()
	go func() {
		// sendmmsg, 64 at a time; a batch cut short (ENOBUFS: the veth's
		// queue is full) is resent from where it stopped.
		pc := ipv6.NewPacketConn(sock)
		batch := make([]ipv6.Message, 64)
		for i := 0; i < len(msgs); {
			k := min(len(batch), len(msgs)-i)
			for j := range k {
				batch[j] = ipv6.Message{Buffers: [][]byte{msgs[i+j]}, Addr: group}
			}
			sent, err := pc.WriteBatch(batch[:k], 0)
			if err != nil && sent <= 0 {
				time.Sleep(50 * time.Microsecond)
				continue
			}
			i += sent
		}
		flooded <- time.Since(floodStart)
	}()
	// A real client on another port while the flood runs.
	for sent := time.Now(); time.Since(sent) < 20*time.Millisecond; {
		time.Sleep(time.Millisecond)
	}
	during := timeToPrefix(2)
	floodTook := <-flooded
	afterFlood := timeToPrefix(0)
	rssAfter := rss(t, r.Proc.Cmd.Process.Pid)

	m, err := r.Metrics(metricsAddr)
	if err != nil {
		t.Fatal(err)
	}
	drops := func(reason string) int {
		return metricInt(m, `pdrelay_dhcp_client_drops_total{interface="dl0",reason="`+reason+`"}`)
	}
	relayed := metricInt(m, `pdrelay_dhcp_messages_total{direction="up",type="request"}`)
	t.Logf("flood: %d Requests sent on dl0 in %v (%.0f/s)", n, floodTook.Round(time.Millisecond), float64(n)/floodTook.Seconds())
	t.Logf("dl0 drops: rate_limited %d, socket_overflow %d, bad_checksum %d; Requests relayed (all ports) %d",
		drops("rate_limited"), drops("socket_overflow"), drops("bad_checksum"), relayed)
	t.Logf("time to prefix: dl1 before the flood %v, dl2 during it %v, dl0 after it %v",
		baseline.Round(time.Millisecond), during.Round(time.Millisecond), afterFlood.Round(time.Millisecond))
	t.Logf("relay RSS: %.1f MiB before, %.1f MiB after", float64(rssBefore)/(1<<20), float64(rssAfter)/(1<<20))
	t.Logf("pending: %d requests, %d bytes", metricInt(m, "pdrelay_pending_requests"), metricInt(m, "pdrelay_pending_bytes"))

	if floodTook < during {
		t.Logf("note: the flood ended before the dl2 client finished (%v < %v)", floodTook, during)
	}
	// The other port's client is served in its normal time: the flood
	// costs it CPU on this 2-core machine, not its place in a queue.
	if during > baseline+3*time.Second {
		t.Errorf("dl2's client took %v during the flood, %v before it", during, baseline)
	}
	// The flood reached the relay and was held to the port's rate: the
	// default 100 a second with a burst of 200.
	limited := drops("rate_limited") + drops("socket_overflow")
	if limited < n/2 {
		t.Errorf("only %d of %d flood messages limited or overflowed", limited, n)
	}
	maxRelayed := 200 + int(100*(floodTook+during+afterFlood).Seconds()) + 50
	if relayed > maxRelayed {
		t.Errorf("%d Requests relayed, more than the rate limit allows (%d)", relayed, maxRelayed)
	}
	if grow := rssAfter - rssBefore; grow > 64<<20 {
		t.Errorf("RSS grew by %d MiB", grow>>20)
	}
}

// rss returns the resident set size of process pid, in bytes.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// metricInt returns the value of the sample whose name and labels are
// series in a /metrics text, 0 if absent.
func metricInt(text, series string) int {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+]+)$`)
	m := re.FindStringSubmatch(text)
	if m == nil {
		return 0
	}
	f, _ := strconv.ParseFloat(m[1], 64)
	return int(f)
}
