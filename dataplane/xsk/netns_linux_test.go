package xsk

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Test namespaces are named xsk-<pid>-<random>-<role>. sweepStale removes
// those of test binaries that died before their cleanup ran.
const nsPrefix = "xsk-"

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		sweepStale()
	}
	os.Exit(m.Run())
}

func sweepStale() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, nsPrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat("/proc/" + pidStr); errors.Is(err, os.ErrNotExist) {
			_ = exec.Command("ip", "netns", "del", name).Run()
		}
		_ = pid
	}
}

// requireRoot skips tests that need root, ip(8) and network namespaces.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("xsk: needs root (network namespaces, BPF, AF_XDP); skipping")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("xsk: needs ip(8) from iproute2; skipping")
	}
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newNS creates a namespace that is deleted when the test ends, with lo
// up, DAD off and forwarding off.
func newNS(t testing.TB, role string) string {
	t.Helper()
	name := fmt.Sprintf("%s%d-%s-%s", nsPrefix, os.Getpid(), randHex(3), role)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Logf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	err := inNS(name, func() error {
		for _, kv := range [][2]string{
			{"net/ipv6/conf/all/accept_dad", "0"},
			{"net/ipv6/conf/default/accept_dad", "0"},
			{"net/ipv6/conf/all/forwarding", "0"},
			{"net/ipv6/conf/default/accept_ra", "0"},
		} {
			if err := os.WriteFile("/proc/sys/"+kv[0], []byte(kv[1]), 0); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("sysctl in %s: %v", name, err)
	}
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// inNS runs fn on an OS thread switched into namespace ns. Sockets,
// BPF links and sysctl files fn opens belong to ns. fn must not start
// goroutines that expect to be in ns.
func inNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("restore netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func mustInNS(t testing.TB, ns string, fn func() error) {
	t.Helper()
	if err := inNS(ns, fn); err != nil {
		t.Fatalf("in %s: %v", ns, err)
	}
}

func ifindex(t testing.TB, ns, name string) int {
	t.Helper()
	var idx int
	mustInNS(t, ns, func() error {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		idx = ifi.Index
		return nil
	})
	return idx
}

// veth creates a veth pair a (in nsA) — b (in nsB) with the given MACs,
// both up.
func veth(t testing.TB, nsA, a, macA, nsB, b, macB string, extra ...string) {
	t.Helper()
	args := []string{"link", "add", a, "netns", nsA, "address", macA}
	args = append(args, extra...)
	args = append(args, "type", "veth", "peer", "name", b, "netns", nsB, "address", macB)
	args = append(args, extra...)
	run(t, "ip", args...)
	run(t, "ip", "-n", nsA, "link", "set", a, "up")
	run(t, "ip", "-n", nsB, "link", "set", b, "up")
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
	// The hosts' own stacks leave UDP/TCP checksums for the "hardware"
	// to finish (CHECKSUM_PARTIAL). A veth never finishes them, and XDP
	// and AF_XDP see the frame as is, so R would forward frames with bad
	// checksums. Real NICs finish checksums before the wire; in a veth
	// lab, hosts behind an XDP dataplane need tx checksum offload off.
	txCsumOff(t, tp.a, "vA")
	txCsumOff(t, tp.b, "vB")
	tp.rA = ifindex(t, tp.r, "rA")
	tp.rB = ifindex(t, tp.r, "rB")
	tp.vA = ifindex(t, tp.a, "vA")
	tp.vB = ifindex(t, tp.b, "vB")
	return tp
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// xdpShown returns the xdp part of `ip link show` for an interface ("" if
// none is attached).
func xdpShown(t testing.TB, ns, dev string) string {
	out := run(t, "ip", "-n", ns, "-d", "link", "show", dev)
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, "xdp"); i >= 0 && (strings.Contains(l, "prog/xdp") || strings.Contains(l, "xdpgeneric") || strings.Contains(l, "xdp/id")) {
			return strings.TrimSpace(l[i:])
		}
	}
	return ""
}

// txCsumOff turns off tx checksum offload on dev in ns, like `ethtool -K
// dev tx off` (legacy ETHTOOL_STXCSUM ioctl; ethtool(8) is not needed).
func txCsumOff(t testing.TB, ns, dev string) {
	t.Helper()
	mustInNS(t, ns, func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		const ethtoolSTXCSUM = 0x17
		ev := struct{ cmd, data uint32 }{ethtoolSTXCSUM, 0}
		var ifr struct {
			name [unix.IFNAMSIZ]byte
			data unsafe.Pointer
			_    [16]byte
		}
		copy(ifr.name[:], dev)
		ifr.data = unsafe.Pointer(&ev)
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); e != 0 {
			return fmt.Errorf("ETHTOOL_STXCSUM %s: %w", dev, e)
		}
		return nil
	})
}
