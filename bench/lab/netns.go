package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"time"

	"github.com/vishvananda/netns"
)

// InNS runs fn on an OS thread switched into namespace ns. Sockets fn
// opens stay in ns after it returns, so this is how a test gets a socket
// inside the lab. fn must not start goroutines that expect to be in ns.
func (l *Lab) InNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("lab: netns.Get: %w", err)
			return
		}
		defer orig.Close()
		h, err := netns.GetFromName(ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("lab: netns %s: %w", ns, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("lab: setns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it is destroyed when this
			// goroutine ends, and no other goroutine runs in ns.
			errc <- errors.Join(ferr, fmt.Errorf("lab: restoring netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// ListenUDP opens a UDP socket inside namespace ns. A zone in laddr names
// an interface in ns. Destinations with a zone must use the interface's
// index there (see Lab.IfIndex), not its name.
func (l *Lab) ListenUDP(ns string, laddr netip.AddrPort) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := l.InNS(ns, func() error {
		z, err := zoneIndex(laddr.Addr().Zone())
		if err != nil {
			return err
		}
		a := net.UDPAddrFromAddrPort(laddr)
		a.Zone = z
		c, err = net.ListenUDP("udp6", a)
		return err
	})
	return c, err
}

// Ping sends ICMPv6 echo requests from namespace ns to dst (a link-local
// dst needs a zone, e.g. fe80::1%eth0) until one is answered or timeout
// passes. src, if valid, is the source address.
func (l *Lab) Ping(ns string, src, dst netip.Addr, timeout time.Duration) error {
	var c *net.IPConn
	var to *net.IPAddr
	err := l.InNS(ns, func() error {
		// Zone names are interface names inside ns: resolve them here.
		var laddr *net.IPAddr
		if src.IsValid() {
			z, err := zoneIndex(src.Zone())
			if err != nil {
				return err
			}
			laddr = &net.IPAddr{IP: src.AsSlice(), Zone: z}
		}
		z, err := zoneIndex(dst.Zone())
		if err != nil {
			return err
		}
		to = &net.IPAddr{IP: dst.AsSlice(), Zone: z}
		c, err = net.ListenIP("ip6:ipv6-icmp", laddr)
		return err
	})
	if err != nil {
		return fmt.Errorf("lab: ping socket in %s: %w", ns, err)
	}
	defer c.Close()
	id := uint16(time.Now().UnixNano())
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for seq := uint16(1); time.Now().Before(deadline); seq++ {
		// Type 128 echo request; the kernel fills in the checksum.
		req := []byte{128, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq), 'l', 'a', 'b'}
		if _, err := c.WriteTo(req, to); err != nil {
			return fmt.Errorf("lab: ping %s from %s: %w", dst, ns, err)
		}
		next := time.Now().Add(200 * time.Millisecond)
		if next.After(deadline) {
			next = deadline
		}
		_ = c.SetReadDeadline(next)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				break
			}
			if n >= 8 && buf[0] == 129 && binary.BigEndian.Uint16(buf[4:]) == id {
				if a, ok := netip.AddrFromSlice(from.(*net.IPAddr).IP); ok && a.Unmap() == dst.WithZone("") {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("lab: no echo reply from %s in %s within %v", dst, ns, timeout)
}

// zoneIndex turns an interface name into its index (as a string, which
// the net package accepts as a zone) in the current thread's namespace.
func zoneIndex(zone string) (string, error) {
	if zone == "" {
		return "", nil
	}
	ifi, err := net.InterfaceByName(zone)
	if err != nil {
		return "", fmt.Errorf("lab: zone %q: %w", zone, err)
	}
	return itoa(ifi.Index), nil
}

func execCtx(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}
