//go:build linux

package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// SweepStale deletes the namespaces named prefix<pid>-… whose pid is not
// this process's and no longer runs: those of test binaries that died
// before their cleanup ran. Errors are ignored.
func SweepStale(prefix string) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		if pid, err := strconv.Atoi(pidStr); err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat("/proc/" + pidStr); errors.Is(err, os.ErrNotExist) {
			_ = exec.Command("ip", "netns", "del", name).Run()
		}
	}
}

// RequireRoot skips tests that need root, ip(8) and network namespaces.
// The skip message names the test package (from the test binary's name,
// "xsk" for xsk.test).
func RequireRoot(t testing.TB) {
	t.Helper()
	pkg := strings.TrimSuffix(filepath.Base(os.Args[0]), ".test")
	if os.Geteuid() != 0 {
		t.Skip(pkg + ": needs root (network namespaces, BPF, AF_XDP); skipping")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip(pkg + ": needs ip(8) from iproute2; skipping")
	}
}

// Run runs a command and returns its combined output, failing the test
// (with the output) if it fails.
func Run(t testing.TB, name string, args ...string) string {
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

// NewNS creates a namespace prefix<pid>-<random>-role that is deleted
// when the test ends (also on failure), with lo up, DAD off and
// forwarding off, and returns its name.
func NewNS(t testing.TB, prefix, role string) string {
	t.Helper()
	name := fmt.Sprintf("%s%d-%s-%s", prefix, os.Getpid(), randHex(3), role)
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Logf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	err := InNS(name, func() error {
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
	Run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// InNS runs fn on an OS thread switched into namespace ns. Sockets, BPF
// links and sysctl files fn opens belong to ns. fn must not start
// goroutines that expect to be in ns.
func InNS(ns string, fn func() error) error {
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

// MustInNS is InNS, failing the test if fn (or the switch) fails.
func MustInNS(t testing.TB, ns string, fn func() error) {
	t.Helper()
	if err := InNS(ns, fn); err != nil {
		t.Fatalf("in %s: %v", ns, err)
	}
}

// Ifindex returns the index of interface name in ns.
func Ifindex(t testing.TB, ns, name string) int {
	t.Helper()
	var idx int
	MustInNS(t, ns, func() error {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		idx = ifi.Index
		return nil
	})
	return idx
}

// Veth creates a veth pair a (in nsA) — b (in nsB) with the given MACs,
// both up. extra (say "mtu", "9000") is given to ip(8) for both ends.
func Veth(t testing.TB, nsA, a, macA, nsB, b, macB string, extra ...string) {
	t.Helper()
	args := []string{"link", "add", a, "netns", nsA, "address", macA}
	args = append(args, extra...)
	args = append(args, "type", "veth", "peer", "name", b, "netns", nsB, "address", macB)
	args = append(args, extra...)
	Run(t, "ip", args...)
	Run(t, "ip", "-n", nsA, "link", "set", a, "up")
	Run(t, "ip", "-n", nsB, "link", "set", b, "up")
}

// MustMAC parses a MAC address, panicking on a bad one.
func MustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// XDPShown returns the xdp part of `ip -d link show dev` in ns ("" if no
// program is attached).
func XDPShown(t testing.TB, ns, dev string) string {
	t.Helper()
	out := Run(t, "ip", "-n", ns, "-d", "link", "show", dev)
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, "xdp"); i >= 0 && (strings.Contains(l, "prog/xdp") || strings.Contains(l, "xdpgeneric") ||
			strings.Contains(l, "xdp/id") || strings.Contains(l, "xdpdrv")) {
			return strings.TrimSpace(l[i:])
		}
	}
	return ""
}
