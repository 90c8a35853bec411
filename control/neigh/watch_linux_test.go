package neigh

import (
	"github.com/pdrelay/pdrelay/internal/testutil"

	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// MACs in the test topology: the relay's uplink and the gateway's port.
var (
	relayMAC = [6]byte{0x02, 0x00, 0x5e, 0x00, 0x53, 0x02}
	gwMAC    = [6]byte{0x02, 0x00, 0x5e, 0x00, 0x53, 0x01}
	gwMAC2   = [6]byte{0x02, 0x00, 0x5e, 0x00, 0x53, 0x11}
)

// Interface names: up0 in namespace A (the relay), gw0 in B (the gateway).
const (
	upIf = "up0"
	gwIf = "gw0"
)

// topo is two namespaces joined by a veth pair: A, where Watch looks, and
// B, the gateway, which has fe80::1 on gw0.
type topo struct {
	a, b    string         // namespace names
	nsA     netns.NsHandle // open handle of A
	ifindex int            // up0's index in A
}

// fast are neighbour timers of up0 in A short enough for tests: a
// REACHABLE entry goes STALE within 1.5 s; a probe is retransmitted every
// 200 ms after a 1 s delay.
var fast = map[string]string{
	"base_reachable_time_ms": "1000",
	"delay_first_probe_time": "1",
	"retrans_time_ms":        "200",
}

func newTopo(t *testing.T) *topo {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: no ip(8) (iproute2)")
	}
	id := fmt.Sprintf("neigh-%d-%06x", os.Getpid(), rand.Uint32()&0xffffff)
	tp := &topo{a: id + "-a", b: id + "-b", nsA: netns.None()}
	for _, ns := range []string{tp.a, tp.b} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Skipf("skipping: cannot create a network namespace: %v: %s", err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", ns, err, out)
			}
		})
		// No DAD, so link-local addresses are usable at once.
		tp.sysctl(t, ns, "ipv6/conf/all/accept_dad", "0")
		tp.sysctl(t, ns, "ipv6/conf/default/accept_dad", "0")
	}
	tp.ip(t, "", "link", "add", upIf, "netns", tp.a, "address", mac(relayMAC), "type", "veth",
		"peer", "name", gwIf, "netns", tp.b, "address", mac(gwMAC))
	for k, v := range fast {
		tp.sysctl(t, tp.a, "ipv6/neigh/"+upIf+"/"+k, v)
	}
	tp.ip(t, tp.a, "link", "set", upIf, "up")
	tp.ip(t, tp.b, "link", "set", gwIf, "up")
	tp.ip(t, tp.b, "addr", "add", "fe80::1/64", "dev", gwIf, "nodad")
	h, err := netns.GetFromName(tp.a)
	if err != nil {
		t.Fatalf("open netns %s: %v", tp.a, err)
	}
	tp.nsA = h
	t.Cleanup(func() { h.Close() })
	// The ifindex from netlink, not from ip(8)'s text: ip names the veth
	// peer's namespace, and prints an error among its output when another
	// test's namespace is deleted meanwhile.
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("netlink in %s: %v", tp.a, err)
	}
	defer nh.Close()
	link, err := nh.LinkByName(upIf)
	if err != nil {
		t.Fatalf("%s in %s: %v", upIf, tp.a, err)
	}
	tp.ifindex = link.Attrs().Index
	return tp
}

// ip runs ip(8) in namespace ns ("" for the caller's) and returns its
// output.
func (tp *topo) ip(t *testing.T, ns string, args ...string) string {
	t.Helper()
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// flushNeigh flushes ns's neighbour entries on dev. The watcher under test
// may re-resolve its gateway between flush rounds, which is its job, so
// ip's "Flush not complete" after ten rounds counts as flushed.
func (tp *topo) flushNeigh(t *testing.T, ns, dev string) {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "neigh", "flush", "dev", dev).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "Flush not complete") {
		t.Fatalf("ip -n %s neigh flush dev %s: %v: %s", ns, dev, err, out)
	}
}

func (tp *topo) sysctl(t *testing.T, ns, key, value string) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "sh", "-c",
		fmt.Sprintf("echo %s > /proc/sys/net/%s", value, key)).CombinedOutput()
	if err != nil {
		t.Fatalf("sysctl %s=%s in %s: %v: %s", key, value, ns, err, out)
	}
}

func mac(m [6]byte) string { return net.HardwareAddr(m[:]).String() }

type rec struct {
	g  Gateway
	ok bool
}

func (r rec) String() string {
	return fmt.Sprintf("{%v %s if%d ok=%v}", r.g.Addr, mac(r.g.MAC), r.g.Ifindex, r.ok)
}

// watch starts WatchWithOptions on up0 in A; the returned channel gets
// each update, and stop cancels the watch and checks how it ended.
func (tp *topo) watch(t *testing.T, gw netip.Addr, opt Options) (<-chan rec, func()) {
	t.Helper()
	opt.NetNS = tp.nsA
	if opt.Poll == 0 {
		opt.Poll = time.Second
	}
	if opt.Retry == 0 {
		opt.Retry = 200 * time.Millisecond
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	updates := make(chan rec, 256)
	stop := testutil.Start(t, "Watch", func(ctx context.Context) error {
		return WatchWithOptions(ctx, upIf, gw, log, func(g Gateway, ok bool) { updates <- rec{g, ok} }, opt)
	})
	return updates, stop
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// await returns the first update for which match holds, failing the test
// after timeout.
func await(t *testing.T, updates <-chan rec, timeout time.Duration, what string, match func(rec) bool) rec {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case r := <-updates:
			if match(r) {
				return r
			}
			t.Logf("update %v (waiting for %s)", r, what)
		case <-deadline:
			t.Fatalf("no update %s within %v", what, timeout)
		}
	}
}

// settle takes the updates still coming from an earlier step (`ip neigh
// flush` deletes in rounds, and the watch may resolve between them) until
// none arrives for 300 ms.
func settle(t *testing.T, updates <-chan rec) {
	t.Helper()
	for {
		select {
		case r := <-updates:
			t.Logf("update %v (settling)", r)
		case <-time.After(300 * time.Millisecond):
			return
		}
	}
}

// quiet fails the test if an update arrives within d.
func quiet(t *testing.T, updates <-chan rec, d time.Duration) {
	t.Helper()
	select {
	case r := <-updates:
		t.Fatalf("unexpected update %v", r)
	case <-time.After(d):
	}
}

var ll1 = netip.MustParseAddr("fe80::1")

func resolvedTo(addr netip.Addr, m [6]byte) func(rec) bool {
	return func(r rec) bool { return r.ok && r.g.Addr == addr && r.g.MAC == m }
}

func lost(r rec) bool { return !r.ok }

func TestWatchConfiguredGateway(t *testing.T) {
	tp := newTopo(t)
	updates, stop := tp.watch(t, netip.MustParseAddr("fe80::1%"+upIf), Options{})
	want := ll1.WithZone(upIf)

	r := await(t, updates, 5*time.Second, "resolving fe80::1", resolvedTo(want, gwMAC))
	if r.g.Ifindex != tp.ifindex {
		t.Errorf("Ifindex = %d, want %d", r.g.Ifindex, tp.ifindex)
	}

	settle(t, updates)
	t.Log("the gateway's MAC changes")
	tp.ip(t, tp.b, "link", "set", gwIf, "address", mac(gwMAC2))
	tp.flushNeigh(t, tp.a, upIf)
	await(t, updates, 5*time.Second, "with the new MAC", resolvedTo(want, gwMAC2))

	settle(t, updates)
	t.Log("the gateway goes down")
	tp.ip(t, tp.b, "link", "set", gwIf, "down")
	tp.flushNeigh(t, tp.a, upIf)
	r = await(t, updates, 5*time.Second, "gateway lost", lost)
	if r.g.Addr != want || r.g.MAC != ([6]byte{}) {
		t.Errorf("lost update %v: want the gateway's address and no MAC", r)
	}
	quiet(t, updates, time.Second)

	t.Log("the gateway comes back")
	tp.ip(t, tp.b, "link", "set", gwIf, "up")
	tp.ip(t, tp.b, "addr", "add", "fe80::1/64", "dev", gwIf, "nodad") // gone with the link
	await(t, updates, 10*time.Second, "resolved again", resolvedTo(want, gwMAC2))
	stop()
}

// TestWatchDeadGateway checks that a gateway that stops answering is
// found out with no traffic through the kernel: its entry goes STALE, the
// watch has it confirmed, the probes fail.
func TestWatchDeadGateway(t *testing.T) {
	tp := newTopo(t)
	updates, _ := tp.watch(t, ll1, Options{Poll: 500 * time.Millisecond})
	want := ll1.WithZone(upIf)
	await(t, updates, 5*time.Second, "resolving fe80::1", resolvedTo(want, gwMAC))
	// Stable while the gateway answers, though REACHABLE keeps lapsing.
	quiet(t, updates, 3*time.Second)
	tp.ip(t, tp.b, "addr", "del", "fe80::1/64", "dev", gwIf)
	await(t, updates, 10*time.Second, "gateway lost", lost)
}

func TestWatchGlobalGateway(t *testing.T) {
	tp := newTopo(t)
	tp.ip(t, tp.a, "addr", "add", "2001:db8::2/64", "dev", upIf, "nodad")
	tp.ip(t, tp.b, "addr", "add", "2001:db8::1/64", "dev", gwIf, "nodad")
	gw := netip.MustParseAddr("2001:db8::1")
	before := runtime.NumGoroutine()
	updates, stop := tp.watch(t, gw, Options{})
	await(t, updates, 5*time.Second, "resolving 2001:db8::1", resolvedTo(gw, gwMAC))
	stop()
	testutil.NoLeak(t, before, "Watch returned")
}

// TestWatchUplinkRecreated checks that the watch survives the uplink
// going away and follows it to its new interface index.
func TestWatchUplinkRecreated(t *testing.T) {
	tp := newTopo(t)
	updates, _ := tp.watch(t, ll1, Options{})
	want := ll1.WithZone(upIf)
	await(t, updates, 5*time.Second, "resolving fe80::1", resolvedTo(want, gwMAC))

	tp.ip(t, tp.a, "link", "del", upIf)
	await(t, updates, 5*time.Second, "gateway lost", lost)

	tp.ip(t, "", "link", "add", upIf, "netns", tp.a, "type", "veth", "peer", "name", gwIf, "netns", tp.b,
		"address", mac(gwMAC2))
	tp.ip(t, tp.a, "link", "set", upIf, "up")
	tp.ip(t, tp.b, "link", "set", gwIf, "up")
	tp.ip(t, tp.b, "addr", "add", "fe80::1/64", "dev", gwIf, "nodad")
	r := await(t, updates, 5*time.Second, "resolved on the new uplink", resolvedTo(want, gwMAC2))
	if r.g.Ifindex == tp.ifindex {
		t.Errorf("Ifindex = %d, the old uplink's", r.g.Ifindex)
	}
}

// TestWatchDiscard resolves with the fallback trigger, a UDP datagram
// sent from a socket in A.
func TestWatchDiscard(t *testing.T) {
	tp := newTopo(t)
	updates, _ := tp.watch(t, ll1, Options{discardOnly: true})
	await(t, updates, 5*time.Second, "resolving fe80::1", resolvedTo(ll1.WithZone(upIf), gwMAC))
}

// TestWatchPermanent checks that a static entry is taken as it is and
// left alone.
func TestWatchPermanent(t *testing.T) {
	tp := newTopo(t)
	static := [6]byte{0x02, 0x00, 0x5e, 0x00, 0x53, 0x99}
	tp.ip(t, tp.a, "neigh", "add", "fe80::1", "dev", upIf, "lladdr", mac(static), "nud", "permanent")
	updates, _ := tp.watch(t, ll1, Options{Poll: 300 * time.Millisecond})
	await(t, updates, 5*time.Second, "the static MAC", resolvedTo(ll1.WithZone(upIf), static))
	quiet(t, updates, 2*time.Second)
	if out := tp.ip(t, tp.a, "neigh", "show", "fe80::1", "dev", upIf); !strings.Contains(out, "PERMANENT") {
		t.Errorf("the static entry changed: %s", out)
	}
}

func TestWatchDefaultRoute(t *testing.T) {
	tp := newTopo(t)
	tp.ip(t, tp.b, "addr", "add", "fe80::2/64", "dev", gwIf, "nodad")
	updates, _ := tp.watch(t, netip.Addr{}, Options{})
	quiet(t, updates, 500*time.Millisecond) // no default route yet

	tp.ip(t, tp.a, "-6", "route", "add", "default", "via", "fe80::1", "dev", upIf, "metric", "100")
	r := await(t, updates, 5*time.Second, "resolving the default route's gateway", resolvedTo(ll1.WithZone(upIf), gwMAC))
	if r.g.Ifindex != tp.ifindex {
		t.Errorf("Ifindex = %d, want %d", r.g.Ifindex, tp.ifindex)
	}

	t.Log("a better default route")
	ll2 := netip.MustParseAddr("fe80::2%" + upIf)
	tp.ip(t, tp.a, "-6", "route", "add", "default", "via", "fe80::2", "dev", upIf, "metric", "50")
	await(t, updates, 5*time.Second, "the new gateway", resolvedTo(ll2, gwMAC))

	settle(t, updates)
	t.Log("no default route")
	tp.ip(t, tp.a, "-6", "route", "flush", "default")
	r = await(t, updates, 5*time.Second, "gateway lost", lost)
	if r.g.Addr != ll2 {
		t.Errorf("lost update %v: want the address of the gateway lost, %v", r, ll2)
	}
}

// TestWatchDefaultRouteElsewhere checks that a default route through
// another interface is not taken for the uplink's.
func TestWatchDefaultRouteElsewhere(t *testing.T) {
	tp := newTopo(t)
	tp.ip(t, tp.a, "link", "add", "other0", "type", "veth", "peer", "name", "other1")
	tp.ip(t, tp.a, "link", "set", "other0", "up")
	tp.ip(t, tp.a, "link", "set", "other1", "up")
	tp.ip(t, tp.a, "-6", "route", "add", "default", "via", "fe80::1", "dev", "other0")
	updates, _ := tp.watch(t, netip.Addr{}, Options{})
	quiet(t, updates, time.Second)
}

func TestWatchErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nop := func(Gateway, bool) {}
	err := Watch(ctx, "neigh-nonesuch", netip.Addr{}, nil, nop)
	if err == nil || !strings.HasPrefix(err.Error(), "neigh: find uplink neigh-nonesuch: ") {
		t.Errorf("Watch(missing interface) = %v", err)
	}
	err = Watch(ctx, "lo", netip.MustParseAddr("192.0.2.1"), nil, nop)
	if err == nil || err.Error() != "neigh: gateway 192.0.2.1 is not an IPv6 address" {
		t.Errorf("Watch(IPv4 gateway) = %v", err)
	}
}

func TestBackoff(t *testing.T) {
	w := &watcher{opt: Options{Retry: time.Second, Poll: 10 * time.Second}}
	var got []time.Duration
	for w.tries = 0; w.tries <= 7; w.tries++ {
		got = append(got, w.backoff())
	}
	want := []time.Duration{1, 1, 2, 4, 8, 10, 10, 10}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("backoffs %v, want %v seconds", got, want)
		}
	}
}
