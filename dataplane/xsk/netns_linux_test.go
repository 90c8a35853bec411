package xsk

import (
	"net"
	"os"
	"testing"

	"github.com/pdrelay/pdrelay/internal/nstest"
)

// Test namespaces are named xsk-<pid>-<random>-<role>. TestMain sweeps
// those of test binaries that died before their cleanup ran.
const nsPrefix = "xsk-"

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		nstest.SweepStale(nsPrefix)
	}
	os.Exit(m.Run())
}

// The package's tests use the shared netns helpers under these names.
var (
	requireRoot = nstest.RequireRoot
	run         = nstest.Run
	inNS        = nstest.InNS
	mustInNS    = nstest.MustInNS
	ifindex     = nstest.Ifindex
	veth        = nstest.Veth
	mustMAC     = nstest.MustMAC
	xdpShown    = nstest.XDPShown
)

// newNS creates a namespace xsk-<pid>-<random>-role that is deleted when
// the test ends, with lo up, DAD off and forwarding off.
func newNS(t testing.TB, role string) string {
	t.Helper()
	return nstest.NewNS(t, nsPrefix, role)
}

// topo is the forwarding shape: A —veth— R —veth— B, R holding two
// veths. R's kernel does not forward; only the test's AF_XDP sockets can
// carry a frame from A to B.
//
//	A vA 2001:db8:a::2/64 ── rA 2001:db8:a::1/64  R  rB 2001:db8:b::1/64 ── vB 2001:db8:b::2/64 B
//	  default via 2001:db8:a::1                                   default via 2001:db8:b::1
type topo struct {
	a, r, b  string
	rA, rB   int // ifindexes in R
	vA, vB   int // ifindexes in A and B
	macVA    net.HardwareAddr
	macRA    net.HardwareAddr
	macRB    net.HardwareAddr
	macVB    net.HardwareAddr
	llRA     string // R's link-local on rA
	addrVA   string
	addrRA   string
	addrRB   string
	addrVB   string
	vethOpts []string
}

func newTopo(t testing.TB) *topo {
	t.Helper()
	tp := &topo{
		a: newNS(t, "a"), r: newNS(t, "r"), b: newNS(t, "b"),
		macVA: mustMAC("02:00:00:00:0a:02"), macRA: mustMAC("02:00:00:00:0a:01"),
		macRB: mustMAC("02:00:00:00:0b:01"), macVB: mustMAC("02:00:00:00:0b:02"),
		llRA:   "fe80::ff:fe00:a01",
		addrVA: "2001:db8:a::2", addrRA: "2001:db8:a::1",
		addrRB: "2001:db8:b::1", addrVB: "2001:db8:b::2",
	}
	veth(t, tp.a, "vA", tp.macVA.String(), tp.r, "rA", tp.macRA.String())
	veth(t, tp.r, "rB", tp.macRB.String(), tp.b, "vB", tp.macVB.String())
	run(t, "ip", "-n", tp.a, "addr", "add", tp.addrVA+"/64", "dev", "vA", "nodad")
	run(t, "ip", "-n", tp.a, "-6", "route", "add", "default", "via", tp.addrRA, "dev", "vA")
	run(t, "ip", "-n", tp.r, "addr", "add", tp.addrRA+"/64", "dev", "rA", "nodad")
	run(t, "ip", "-n", tp.r, "addr", "add", tp.addrRB+"/64", "dev", "rB", "nodad")
	run(t, "ip", "-n", tp.b, "addr", "add", tp.addrVB+"/64", "dev", "vB", "nodad")
	run(t, "ip", "-n", tp.b, "-6", "route", "add", "default", "via", tp.addrRB, "dev", "vB")
	tp.rA = ifindex(t, tp.r, "rA")
	tp.rB = ifindex(t, tp.r, "rB")
	tp.vA = ifindex(t, tp.a, "vA")
	tp.vB = ifindex(t, tp.b, "vB")
	return tp
}
