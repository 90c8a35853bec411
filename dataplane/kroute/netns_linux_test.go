package kroute

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/pdrelay/pdrelay/internal/nstest"
	"github.com/pdrelay/pdrelay/internal/testutil"
)

// Root-only tests against the kernel: a router namespace (IPv6
// forwarding on: it models the router pdrelay runs on) between two
// clients and an upstream host.
//
//	cl0 ns  eth0 ──veth── dl0 ┐
//	                          router ns  up0 ──veth── eth0  up ns
//	cl1 ns  eth0 ──veth── dl1 ┘
//
// Each client holds an address in its delegated prefix on lo and a
// default route via the router's fe80::1; the upstream host routes
// 2001:db8::/32 to the router. Traffic from upstream reaches a client's
// prefix only through the route the Router writes.

const nsPrefix = "kr-"

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		nstest.SweepStale(nsPrefix)
	}
	os.Exit(m.Run())
}

var (
	clientLL  = netip.MustParseAddr("fe80::2")
	routerLL  = "fe80::1"
	clientMAC = [2][6]byte{{2, 0, 0, 0, 0, 0x12}, {2, 0, 0, 0, 0, 0x22}}
	upAddr    = netip.MustParseAddr("fd00:ffff::1")
	// delegated[i] is client i's prefix; host[i] its address in it.
	delegated = [2]netip.Prefix{netip.MustParsePrefix("2001:db8:1:100::/56"), netip.MustParsePrefix("2001:db8:2::/48")}
)

func host(i int) netip.Addr { return delegated[i].Addr().Next() }

type topo struct {
	router  string
	routerF *os.File
	clients [2]string
	up      string
	log     *testutil.SyncBuffer
}

func newTopo(t *testing.T) *topo {
	t.Helper()
	nstest.RequireRoot(t)
	tp := &topo{router: nstest.NewNS(t, nsPrefix, "rt"), up: nstest.NewNS(t, nsPrefix, "up"), log: &testutil.SyncBuffer{}}
	for i := range tp.clients {
		cl := nstest.NewNS(t, nsPrefix, fmt.Sprintf("cl%d", i))
		tp.clients[i] = cl
		dl := fmt.Sprintf("dl%d", i)
		nstest.Veth(t, tp.router, dl, fmt.Sprintf("02:00:00:00:00:%d1", i+1), cl, "eth0", net.HardwareAddr(clientMAC[i][:]).String())
		nstest.Run(t, "ip", "-n", tp.router, "addr", "add", routerLL+"/64", "dev", dl, "nodad")
		// fe80::2 alone: the client's solicitations come from the next
		// hop pdrelay knows it by.
		nstest.Run(t, "ip", "-n", cl, "addr", "flush", "dev", "eth0", "scope", "link")
		nstest.Run(t, "ip", "-n", cl, "addr", "add", clientLL.String()+"/64", "dev", "eth0", "nodad")
		nstest.Run(t, "ip", "-n", cl, "addr", "add", host(i).String()+"/128", "dev", "lo")
		nstest.Run(t, "ip", "-n", cl, "route", "add", "default", "via", routerLL, "dev", "eth0")
	}
	nstest.Veth(t, tp.router, "up0", "02:00:00:00:ff:02", tp.up, "eth0", "02:00:00:00:ff:01")
	nstest.Run(t, "ip", "-n", tp.router, "addr", "add", "fd00:ffff::2/64", "dev", "up0", "nodad")
	nstest.Run(t, "ip", "-n", tp.up, "addr", "add", upAddr.String()+"/64", "dev", "eth0", "nodad")
	nstest.Run(t, "ip", "-n", tp.up, "route", "add", "2001:db8::/32", "via", "fd00:ffff::2")
	nstest.MustInNS(t, tp.router, func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0)
	})
	f, err := os.Open("/run/netns/" + tp.router)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	tp.routerF = f
	return tp
}

// newRouter makes a Router in the router namespace for dl0 and dl1.
func (tp *topo) newRouter(t *testing.T, cfg Config) *Router {
	t.Helper()
	cfg.NetNS = int(tp.routerF.Fd())
	if cfg.Ports == nil {
		cfg.Ports = []string{"dl0", "dl1"}
	}
	cfg.Log = newTextLog(tp.log)
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// run runs r.Run until the test ends.
func run(t *testing.T, r *Router) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func route(i int) Route {
	return Route{Prefix: delegated[i], Port: fmt.Sprintf("dl%d", i), NextHop: clientLL, MAC: clientMAC[i]}
}

// reaches reports whether a UDP datagram from the upstream host to
// client i's address in its delegated prefix arrives.
func (tp *topo) reaches(t *testing.T, i int) bool {
	t.Helper()
	var in, out *net.UDPConn
	nstest.MustInNS(t, tp.clients[i], func() (err error) {
		in, err = net.ListenUDP("udp6", net.UDPAddrFromAddrPort(netip.AddrPortFrom(host(i), 0)))
		return err
	})
	defer in.Close()
	nstest.MustInNS(t, tp.up, func() (err error) {
		out, err = net.DialUDP("udp6", nil, in.LocalAddr().(*net.UDPAddr))
		return err
	})
	defer out.Close()
	buf := make([]byte, 16)
	for range 3 {
		out.Write([]byte("kroute"))
		in.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, err := in.Read(buf); err == nil && string(buf[:n]) == "kroute" {
			return true
		}
	}
	return false
}

// ipShow returns `ip -6 args...` in the router namespace, lines trimmed
// and sorted, without the kernel's own routes.
func (tp *topo) ipShow(t *testing.T, args ...string) []string {
	t.Helper()
	// -N: protocols as numbers, whatever /etc/iproute2/rt_protos.d names
	// (make demo names 157 "pdrelay").
	out := nstest.Run(t, "ip", append([]string{"-N", "-n", tp.router, "-6"}, args...)...)
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.Contains(l, "proto 2 ") && !strings.HasPrefix(l, "ff02::") && !strings.HasPrefix(l, "multicast") {
			lines = append(lines, l)
		}
	}
	slices.Sort(lines)
	return lines
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestKernelRoutes: the routes are in the kernel as R-2 wants them (the
// delegated length exactly, via the client's link-local address on its
// port, pdrelay's protocol, metric 1024), with a neighbour entry per
// next hop (extern_learn, stale, pdrelay's protocol); traffic from
// upstream reaches each client's prefix, and stops once its route goes.
func TestKernelRoutes(t *testing.T) {
	tp := newTopo(t)
	if tp.reaches(t, 0) {
		t.Fatal("the client's prefix is reachable before any route: the test proves nothing")
	}
	r := tp.newRouter(t, Config{})
	r.Add(route(0))
	r.Add(route(1))
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	wantRoutes := []string{
		"2001:db8:1:100::/56 via fe80::2 dev dl0 metric 1024 pref medium",
		"2001:db8:2::/48 via fe80::2 dev dl1 metric 1024 pref medium",
	}
	if got := tp.ipShow(t, "route", "show", "proto", "157", "table", "main"); !slices.Equal(got, wantRoutes) {
		t.Errorf("ip -6 route show proto 157:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantRoutes, "\n"))
	}
	wantNeigh := []string{
		"fe80::2 dev dl0 lladdr 02:00:00:00:00:12 extern_learn STALE proto 157",
		"fe80::2 dev dl1 lladdr 02:00:00:00:00:22 extern_learn STALE proto 157",
	}
	if got := tp.ipShow(t, "neigh", "show", "nud", "stale"); !slices.Equal(got, wantNeigh) {
		t.Errorf("ip -6 neigh show:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantNeigh, "\n"))
	}
	// The same read through netlink, not ip(8): protocol, table, type.
	h, err := netlink.NewHandleAt(netns.NsHandle(tp.routerF.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	rs, err := h.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Protocol: Protocol, Table: MainTable}, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil || len(rs) != 2 {
		t.Fatalf("netlink lists %d routes of protocol %d: %v", len(rs), Protocol, err)
	}
	for _, rt := range rs {
		if ones, _ := rt.Dst.Mask.Size(); rt.Type != 1 /* RTN_UNICAST */ || rt.Priority != Metric || !rt.Gw.Equal(clientLL.AsSlice()) ||
			(rt.Dst.String() == delegated[0].String()) != (ones == 56) {
			t.Errorf("route %+v", rt)
		}
	}
	for i := range 2 {
		if !tp.reaches(t, i) {
			t.Errorf("upstream -> client %d's prefix does not arrive through the route", i)
		}
	}
	// The route and the entry go with the binding.
	r.Delete(delegated[0], "dl0")
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	if tp.reaches(t, 0) || !tp.reaches(t, 1) {
		t.Error("after the delete: client 0 still reachable, or client 1 not")
	}
	if got := tp.ipShow(t, "neigh", "show", "dev", "dl0", "proto", "157"); len(got) != 0 {
		t.Errorf("client 0's neighbour entry outlived its route: %v", got)
	}
}

// TestKernelTable: with another table the routes go there, not into
// main; a table the kernel does not have yet reads as empty.
func TestKernelTable(t *testing.T) {
	tp := newTopo(t)
	r := tp.newRouter(t, Config{Table: 1000})
	run(t, r)
	waitFor(t, "reconcile of an empty table", r.Reconciled)
	r.Add(route(0))
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := tp.ipShow(t, "route", "show", "table", "1000", "proto", "157"); len(got) != 1 || !strings.HasPrefix(got[0], "2001:db8:1:100::/56 via fe80::2 dev dl0") {
		t.Errorf("table 1000: %v", got)
	}
	if got := tp.ipShow(t, "route", "show", "table", "main", "proto", "157"); len(got) != 0 {
		t.Errorf("main: %v", got)
	}
}

// TestKernelReconcile is a restart after a kill: the kernel holds a
// previous run's routes, some still wanted (one of them different now),
// some not, next to an operator's static route of the same protocol
// family. The reconcile removes what no binding backs, replaces what
// differs, adds what is missing, leaves the operator's route, and never
// deletes a route that is wanted: traffic to it flows throughout.
func TestKernelReconcile(t *testing.T) {
	tp := newTopo(t)
	stale := netip.MustParsePrefix("2001:db8:9::/48")
	static := netip.MustParsePrefix("2001:db8:8::/48")
	for _, args := range [][]string{
		{delegated[0].String(), "via", clientLL.String(), "dev", "dl0", "proto", "157"},         // wanted, equal
		{delegated[1].String(), "via", "fe80::99", "dev", "dl1", "proto", "157"},                // wanted, other next hop
		{stale.String(), "via", clientLL.String(), "dev", "dl0", "proto", "157"},                // no binding
		{static.String(), "via", clientLL.String(), "dev", "dl0", "proto", "static"},            // the operator's
		{stale.String(), "via", clientLL.String(), "dev", "dl0", "proto", "157", "metric", "7"}, // another metric
	} {
		nstest.Run(t, "ip", append([]string{"-n", tp.router, "-6", "route", "add"}, args...)...)
	}
	nstest.Run(t, "ip", "-n", tp.router, "neigh", "add", "fe80::99", "lladdr", "02:00:00:00:00:99", "dev", "dl1", "nud", "stale", "extern_learn", "proto", "157")
	// Watch the kernel's route deletions while the reconcile runs.
	var mu sync.Mutex
	var deleted []string
	ch := make(chan netlink.RouteUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.RouteSubscribeAt(netns.NsHandle(tp.routerF.Fd()), ch, done); err != nil {
		t.Fatal(err)
	}
	go func() {
		for u := range ch {
			if u.Type == 25 /* RTM_DELROUTE */ {
				mu.Lock()
				deleted = append(deleted, u.Dst.String())
				mu.Unlock()
			}
		}
	}()
	if !tp.reaches(t, 0) {
		t.Fatal("the previous run's route does not carry traffic")
	}
	r := tp.newRouter(t, Config{Check: -1})
	if n := r.Restore(slices.Values([]Route{route(0), route(1)})); n != 2 {
		t.Fatalf("restored %d", n)
	}
	run(t, r)
	waitFor(t, "reconcile", r.Reconciled)
	want := []string{
		"2001:db8:1:100::/56 via fe80::2 dev dl0 metric 1024 pref medium",
		"2001:db8:2::/48 via fe80::2 dev dl1 metric 1024 pref medium",
	}
	if got := tp.ipShow(t, "route", "show", "proto", "157"); !slices.Equal(got, want) {
		t.Errorf("after the reconcile:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := tp.ipShow(t, "route", "show", "proto", "static"); len(got) != 1 || !strings.HasPrefix(got[0], static.String()) {
		t.Errorf("the operator's route: %v", got)
	}
	// fe80::99 (no route through it) goes; dl1's is written; dl0's the
	// kernel learned from the traffic above stands, the kernel's.
	if got := tp.ipShow(t, "neigh", "show", "proto", "157"); len(got) != 1 || !strings.HasPrefix(got[0], "fe80::2 dev dl1 ") {
		t.Errorf("pdrelay's neighbour entries after the reconcile: %v", got)
	}
	if tp.neighMAC(t, "dl0", clientLL) == "" {
		t.Errorf("the kernel's entry on dl0 went: %v", tp.ipShow(t, "neigh", "show", "dev", "dl0"))
	}
	waitFor(t, "the stale routes' deletions notified", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(deleted) >= 2
	})
	time.Sleep(100 * time.Millisecond) // any later ones
	mu.Lock()
	slices.Sort(deleted)
	if !slices.Equal(deleted, []string{stale.String(), stale.String()}) {
		t.Errorf("routes deleted: %v, want the stale prefix's two routes only", deleted)
	}
	mu.Unlock()
	for i := range 2 {
		if !tp.reaches(t, i) {
			t.Errorf("client %d unreachable after the reconcile", i)
		}
	}
	if !strings.Contains(tp.log.String(), `msg="kernel routes reconciled" routes=2 written=1 removed=2`) {
		t.Errorf("log:\n%s", tp.log)
	}
}

// TestKernelClose: a stop keeps the routes and entries (traffic flows
// with pdrelay down); with FlushOnStop, every route and entry of the
// protocol goes, a previous run's included, and the operator's stay.
func TestKernelClose(t *testing.T) {
	for _, flush := range []bool{false, true} {
		t.Run(fmt.Sprint("flush=", flush), func(t *testing.T) {
			tp := newTopo(t)
			nstest.Run(t, "ip", "-n", tp.router, "-6", "route", "add", "2001:db8:9::/48", "via", "fe80::7", "dev", "dl0", "proto", "157")
			nstest.Run(t, "ip", "-n", tp.router, "-6", "route", "add", "2001:db8:8::/48", "via", "fe80::7", "dev", "dl0", "proto", "static")
			r := tp.newRouter(t, Config{FlushOnStop: flush})
			r.Add(route(0))
			r.Add(route(1))
			if err := r.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			routes := tp.ipShow(t, "route", "show", "proto", "157")
			neighs := tp.ipShow(t, "neigh", "show", "proto", "157")
			if flush && (len(routes) != 0 || len(neighs) != 0) {
				t.Errorf("flush on stop left %v %v", routes, neighs)
			}
			if !flush && (len(routes) != 3 || len(neighs) != 2 || !tp.reaches(t, 0)) {
				t.Errorf("a plain stop took something: %v %v", routes, neighs)
			}
			if got := tp.ipShow(t, "route", "show", "proto", "static"); len(got) != 1 {
				t.Errorf("the operator's route went: %v", got)
			}
		})
	}
}

// TestKernelDownInterface: a downlink down at start holds its route back
// (the kernel refuses one through a down device); it is written as soon
// as the link comes up, from the link event (the periodic check is
// off). A link taken down and up again while running (the kernel drops
// its routes and entries) gets them back the same way.
func TestKernelDownInterface(t *testing.T) {
	tp := newTopo(t)
	nstest.Run(t, "ip", "-n", tp.router, "link", "set", "dl1", "down")
	r := tp.newRouter(t, Config{Check: -1})
	r.Restore(slices.Values([]Route{route(0), route(1)}))
	run(t, r)
	waitFor(t, "reconcile", r.Reconciled)
	if r.Waiting() != 1 || tp.reaches(t, 1) || !tp.reaches(t, 0) {
		t.Fatalf("with dl1 down: waiting %d", r.Waiting())
	}
	if !strings.Contains(tp.log.String(), "downlink down or absent") {
		t.Errorf("no warning logged:\n%s", tp.log)
	}
	nstest.Run(t, "ip", "-n", tp.router, "link", "set", "dl1", "up")
	waitFor(t, "dl1's route after the link came up", func() bool { return r.Waiting() == 0 })
	if !tp.reaches(t, 1) {
		t.Fatal("dl1's client unreachable after the link came up")
	}
	for range 2 { // a flap the Router may or may not see in between
		nstest.Run(t, "ip", "-n", tp.router, "link", "set", "dl0", "down")
		nstest.Run(t, "ip", "-n", tp.router, "link", "set", "dl0", "up")
	}
	waitFor(t, "dl0's route and entry after the flap", func() bool {
		return len(tp.ipShow(t, "route", "show", "dev", "dl0", "proto", "157")) == 1 &&
			len(tp.ipShow(t, "neigh", "show", "dev", "dl0", "proto", "157")) == 1
	})
	if !tp.reaches(t, 0) {
		t.Fatal("dl0's client unreachable after the flap")
	}
	// The client's end goes down and up: dl0 loses its carrier, and the
	// kernel flushes dl0's entries but keeps its routes. The entry is
	// written again.
	nstest.Run(t, "ip", "-n", tp.clients[0], "link", "set", "eth0", "down")
	waitFor(t, "the kernel to flush dl0's entries on carrier loss", func() bool {
		return len(tp.ipShow(t, "neigh", "show", "dev", "dl0", "proto", "157")) == 0
	})
	nstest.Run(t, "ip", "-n", tp.clients[0], "link", "set", "eth0", "up")
	waitFor(t, "dl0's entry after the carrier came back", func() bool {
		return len(tp.ipShow(t, "neigh", "show", "dev", "dl0", "proto", "157")) == 1
	})
	// A downlink that does not exist: its routes wait, the others flow.
	nstest.Run(t, "ip", "-n", tp.router, "link", "del", "dl1")
	r.Add(Route{Prefix: netip.MustParsePrefix("2001:db8:3::/48"), Port: "dl1", NextHop: clientLL})
	if err := r.Flush(); err != nil {
		t.Errorf("Flush through an absent downlink: %v", err)
	}
	waitFor(t, "routes through the absent downlink counted waiting", func() bool { return r.Waiting() == 2 })
}

// TestKernelHandDeleted: a route an operator deletes is back at once,
// from the kernel's notification (the periodic check is off).
func TestKernelHandDeleted(t *testing.T) {
	tp := newTopo(t)
	r := tp.newRouter(t, Config{Check: -1})
	r.Add(route(0))
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	run(t, r)
	waitFor(t, "reconcile", r.Reconciled)
	nstest.Run(t, "ip", "-n", tp.router, "-6", "route", "del", delegated[0].String(), "proto", "157")
	waitFor(t, "the deleted route back", func() bool { return len(tp.ipShow(t, "route", "show", "proto", "157")) == 1 })
	if !tp.reaches(t, 0) {
		t.Fatal("unreachable after the repair")
	}
	// pdrelay's own deletes stay deleted.
	r.Delete(delegated[0], "dl0")
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if got := tp.ipShow(t, "route", "show", "proto", "157"); len(got) != 0 {
		t.Errorf("a deleted route came back: %v", got)
	}
}

// TestKernelNeighbourFollows: the entry pdrelay writes is the kernel's
// to verify and to correct. With a wrong MAC (a binding's stale one) the
// client's own neighbour solicitation (it resolves its gateway) makes
// the kernel take the right MAC; the entry stays pdrelay's (its
// protocol, extern_learn), so it still goes with the route. A permanent
// entry would keep the wrong MAC.
func TestKernelNeighbourFollows(t *testing.T) {
	tp := newTopo(t)
	r := tp.newRouter(t, Config{})
	rt := route(0)
	rt.MAC = [6]byte{2, 0, 0, 0, 0, 0xee} // not the client's
	r.Add(rt)
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := tp.ipShow(t, "neigh", "show", "dev", "dl0", "proto", "157"); len(got) != 1 || !strings.Contains(got[0], "02:00:00:00:00:ee") {
		t.Fatalf("entry %v", got)
	}
	if tp.reaches(t, 0) {
		t.Fatal("traffic arrives through a wrong MAC: the test proves nothing")
	}
	nstest.Run(t, "ip", "-n", tp.clients[0], "neigh", "flush", "dev", "eth0")
	sendFromClient(t, tp.clients[0])
	waitFor(t, "the kernel to take the client's MAC", func() bool {
		return tp.neighMAC(t, "dl0", clientLL) == net.HardwareAddr(clientMAC[0][:]).String()
	})
	got := tp.ipShow(t, "neigh", "show", "dev", "dl0", "to", clientLL.String())
	if !strings.Contains(got[0], "extern_learn") || !strings.Contains(got[0], "proto 157") {
		t.Errorf("the entry is no longer pdrelay's: %v", got)
	}
	if !tp.reaches(t, 0) {
		t.Error("unreachable with the learned MAC")
	}
	r.Delete(delegated[0], "dl0")
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := tp.ipShow(t, "neigh", "show", "dev", "dl0", "to", clientLL.String()); len(got) != 0 {
		t.Errorf("the entry outlived its route: %v", got)
	}
}

// TestKernelNeighbourVerified: the kernel probes the entry when traffic
// uses it, and a wrong MAC fails its probes and is resolved afresh: a
// client whose binding carries a stale MAC is reached within the
// kernel's probe timers (shortened in this router namespace to 1 s of
// delay and 100 ms a probe).
func TestKernelNeighbourVerified(t *testing.T) {
	tp := newTopo(t)
	nstest.MustInNS(t, tp.router, func() error {
		for k, v := range map[string]string{"delay_first_probe_time": "1", "retrans_time_ms": "100"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/neigh/dl0/"+k, []byte(v), 0); err != nil {
				return err
			}
		}
		return nil
	})
	r := tp.newRouter(t, Config{})
	rt := route(0)
	rt.MAC = [6]byte{2, 0, 0, 0, 0, 0xee}
	r.Add(rt)
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for !tp.reaches(t, 0) {
		if time.Since(start) > 6*time.Second {
			t.Fatalf("the kernel never corrected the MAC: %v", tp.ipShow(t, "neigh", "show", "dev", "dl0"))
		}
	}
	t.Logf("reached after %v", time.Since(start).Round(10*time.Millisecond))
	if got := tp.neighMAC(t, "dl0", clientLL); got != net.HardwareAddr(clientMAC[0][:]).String() {
		t.Errorf("entry's MAC %s", got)
	}
}

// neighMAC returns the MAC of the router's entry for addr on dev.
func (tp *topo) neighMAC(t *testing.T, dev string, addr netip.Addr) string {
	got := tp.ipShow(t, "neigh", "show", "dev", dev, "to", addr.String())
	if len(got) != 1 {
		return ""
	}
	if m := regexp.MustCompile(`lladdr (\S+)`).FindStringSubmatch(got[0]); m != nil {
		return m[1]
	}
	return ""
}

// sendFromClient sends one UDP datagram from the client upstream, which
// makes the client resolve its gateway.
func sendFromClient(t *testing.T, ns string) {
	t.Helper()
	nstest.MustInNS(t, ns, func() error {
		c, err := net.DialUDP("udp6", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(upAddr, 9)))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("x"))
		return err
	})
}

// TestKernelBatchAnswers: in one pipelined batch, each refusal is
// charged to its own change (an absent device, a delete of nothing, a
// delete of another protocol's route), and the changes around it are
// applied.
func TestKernelBatchAnswers(t *testing.T) {
	tp := newTopo(t)
	nstest.Run(t, "ip", "-n", tp.router, "-6", "route", "add", "2001:db8:8::/48", "via", "fe80::7", "dev", "dl0", "proto", "static")
	r := tp.newRouter(t, Config{})
	idx := int32(nstest.Ifindex(t, tp.router, "dl0"))
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	ops := []op{
		{kind: opRoute, prefix: p("2001:db8:a::/48"), addr: clientLL, index: idx, table: MainTable},
		{kind: opRoute, prefix: p("2001:db8:b::/48"), addr: clientLL, index: 9999, table: MainTable},
		{kind: opUnroute, prefix: p("2001:db8:c::/48"), table: MainTable},
		{kind: opUnroute, prefix: p("2001:db8:8::/48"), table: MainTable},
		{kind: opNeigh, addr: clientLL, index: idx, mac: clientMAC[0]},
		{kind: opUnneigh, addr: netip.MustParseAddr("fe80::77"), index: idx},
		{kind: opRoute, prefix: p("2001:db8:d::/48"), addr: netip.MustParseAddr("2001:db8:ffff::5"), index: idx, table: MainTable},
	}
	if err := r.k.write(ops); err != nil {
		t.Fatal(err)
	}
	want := []string{"<nil>", "no such device", "no such process", "no such process", "<nil>", "no such file or directory", "<nil>"}
	for i, o := range ops {
		if got := fmt.Sprint(o.err); !strings.HasPrefix(got, want[i]) {
			t.Errorf("op %d %v %v: %v, want %s", i, o.kind, o.prefix, o.err, want[i])
		}
	}
	if got := tp.ipShow(t, "route", "show", "proto", "157"); len(got) != 2 || !strings.Contains(got[1], "onlink") {
		t.Errorf("routes %v: want a and d (onlink: its next hop is not link-local)", got)
	}
	// The kernel's reason comes with the errno.
	nstest.Run(t, "ip", "-n", tp.router, "link", "set", "dl0", "down")
	ops = ops[:1]
	ops[0].err = nil
	r.k.write(ops)
	if ops[0].err == nil || !strings.Contains(ops[0].err.Error(), "network is down: Nexthop device is not up") {
		t.Errorf("a route through a down device: %v", ops[0].err)
	}
}

// TestKernelRouteEventFilter: the route event socket's filter passes the
// deletions of pdrelay's routes by others and nothing else: not its
// writes, not its own deletions (also after its write socket was opened
// again), not another protocol's deletions.
func TestKernelRouteEventFilter(t *testing.T) {
	tp := newTopo(t)
	r := tp.newRouter(t, Config{})
	k := r.k.(*nlKernel)
	s, err := k.routeEvents()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	nstest.Run(t, "ip", "-n", tp.router, "-6", "route", "add", "2001:db8:8::/48", "via", "fe80::7", "dev", "dl0", "proto", "static")
	r.Add(route(0))
	r.Add(route(1))
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	nstest.Run(t, "ip", "-n", tp.router, "-6", "route", "del", "2001:db8:8::/48")
	nstest.Run(t, "ip", "-n", tp.router, "-6", "route", "del", delegated[1].String(), "proto", "157")
	r.Delete(delegated[0], "dl0")
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	// A write socket opened again has another port id.
	r.Add(route(0))
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	k.wmu.Lock()
	old := k.ownPID
	k.resetWrite()
	k.wmu.Unlock()
	r.Delete(delegated[0], "dl0")
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	if k.ownPID == old || k.ownPID == 0 {
		t.Errorf("write socket port id %d after reopening, was %d", k.ownPID, old)
	}
	if got := tp.ipShow(t, "route", "show", "proto", "157"); len(got) != 0 {
		t.Errorf("routes of protocol 157 left: %v", got)
	}
	var got []string
	s.SetReceiveTimeout(&unix.Timeval{Usec: 300_000})
	for {
		msgs, _, err := s.Receive()
		if err != nil {
			break
		}
		for _, m := range msgs {
			kr, ok := parseRoute(m.Data, MainTable)
			got = append(got, fmt.Sprintf("%d %v %v", m.Header.Type, kr.prefix, ok))
		}
	}
	if want := []string{"25 2001:db8:2::/48 true"}; !slices.Equal(got, want) {
		t.Errorf("events %v, want %v (RTM_DELROUTE of the deleted route of protocol 157 alone)", got, want)
	}
}

// TestKernelManyNeighbours: a port with more clients than the kernel's
// neighbour table holds by default (gc_thresh3, 1,024) gets every entry:
// extern_learn entries do not count against it. Without the flag the
// kernel refuses all past 1,024 (and evicts down to 512 five seconds
// later).
func TestKernelManyNeighbours(t *testing.T) {
	tp := newTopo(t)
	r := tp.newRouter(t, Config{})
	const n = 3000
	for i := range n {
		rt := benchRoute(i + 256) // next hops from fe80::100: not the router's fe80::1
		rt.Port = "dl0"
		r.Add(rt)
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	kns, err := r.k.neighs()
	if err != nil {
		t.Fatal(err)
	}
	ours := 0
	for _, kn := range kns {
		if kn.ours {
			ours++
		}
	}
	if s := r.Stats(); ours != n || s.NeighsWritten != n || s.Failed != 0 {
		t.Errorf("kernel holds %d of pdrelay's entries, want %d; %+v", ours, n, s)
	}
}

// TestKernelCheckAllocation: a check of an unchanged kernel allocates
// about the list of routes it reads, and neither copies of the dump's
// datagrams nor a map of what it saw. Through nl.NetlinkSocket.Receive
// and with a map, a check allocated 708 B a route; the list is 72.
func TestKernelCheckAllocation(t *testing.T) {
	r := benchRouter(t, false)
	const n = 20_000
	r.Restore(benchRoutes(0, n))
	reconcile(t, r)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := r.checkKernel(false); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / n; per > 150 {
		t.Errorf("a check allocated %d B a route, want at most 150", per)
	}
	if busy, err := r.step(); busy || err != nil {
		t.Errorf("a check of an unchanged kernel left work: %v", err)
	}
}
