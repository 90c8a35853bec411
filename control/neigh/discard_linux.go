package neigh

import (
	"fmt"
	"net/netip"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// discardPort is the UDP discard service (RFC 863): a datagram to it asks
// nothing of the gateway, and any answer (port unreachable) is harmless.
const discardPort = 9

// sendDiscard sends one byte to the discard port of gw through the
// interface ifname (index ifindex), from a socket in namespace ns (the
// caller's when not open). The kernel queues the datagram and resolves
// gw first, which is the point.
func sendDiscard(ns netns.NsHandle, ifname string, ifindex int, gw netip.Addr) error {
	fd, err := socketAt(ns, unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_UDP)
	if err != nil {
		return fmt.Errorf("open UDP socket: %w", err)
	}
	defer unix.Close(fd)
	// Binding to the uplink keeps a global gateway's datagram on it; it
	// needs no privilege on a socket not yet bound.
	if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname); err != nil {
		return fmt.Errorf("bind UDP socket to %s: %w", ifname, err)
	}
	to := &unix.SockaddrInet6{Port: discardPort, Addr: gw.As16()}
	if gw.IsLinkLocalUnicast() {
		to.ZoneId = uint32(ifindex)
	}
	if err := unix.Sendto(fd, []byte{0}, 0, to); err != nil {
		return fmt.Errorf("send to [%s]:%d: %w", gw, discardPort, err)
	}
	return nil
}

// socketAt opens a socket in namespace ns, or in the caller's when ns is
// not open. Switching namespace holds one OS thread; a thread that cannot
// be switched back is left locked, so it ends with its goroutine.
func socketAt(ns netns.NsHandle, domain, typ, proto int) (int, error) {
	if !ns.IsOpen() {
		return unix.Socket(domain, typ, proto)
	}
	type result struct {
		fd  int
		err error
	}
	c := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		cur, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			c <- result{-1, fmt.Errorf("get current netns: %w", err)}
			return
		}
		defer cur.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			c <- result{-1, fmt.Errorf("enter netns: %w", err)}
			return
		}
		fd, err := unix.Socket(domain, typ, proto)
		if netns.Set(cur) == nil {
			runtime.UnlockOSThread()
		}
		c <- result{fd, err}
	}()
	r := <-c
	return r.fd, r.err
}
