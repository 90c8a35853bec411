package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Capture records every frame seen on one interface of a Lab namespace,
// in and out, from a packet socket, like tcpdump without the binary. It
// sees frames as the kernel hands them to packet sockets (a checksum a
// local sender left partial stays partial), so tests decode headers, not
// checksums.
type Capture struct {
	f      *os.File
	mu     sync.Mutex
	frames [][]byte
	done   chan struct{}
}

// Capture starts capturing on interface ifname in namespace ns. Stop ends
// it and returns the frames.
func (l *Lab) Capture(ns, ifname string) (*Capture, error) {
	var fd int
	err := l.InNS(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind packet socket to %s: %w", ifname, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lab: capture on %s in %s: %w", ifname, ns, err)
	}
	c := &Capture{f: os.NewFile(uintptr(fd), "capture:"+ifname), done: make(chan struct{})}
	go c.run()
	return c, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *Capture) run() {
	defer close(c.done)
	buf := make([]byte, 65536)
	for {
		n, err := c.f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			continue
		}
		c.mu.Lock()
		c.frames = append(c.frames, append([]byte(nil), buf[:n]...))
		c.mu.Unlock()
	}
}

// Frames returns a copy of the list of frames captured so far.
func (c *Capture) Frames() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.frames...)
}

// Stop ends the capture (after a short grace for frames in flight) and
// returns every frame captured.
func (c *Capture) Stop() [][]byte {
	time.Sleep(50 * time.Millisecond)
	c.f.Close()
	<-c.done
	return c.Frames()
}

// UDP6 is the part of an Ethernet/IPv6/UDP frame tests look at.
type UDP6 struct {
	Src, Dst         [16]byte
	SrcPort, DstPort uint16
	Payload          []byte
}

// ParseUDP6 decodes an untagged Ethernet frame carrying IPv6 and UDP
// directly after the fixed header; ok is false for anything else.
func ParseUDP6(f []byte) (u UDP6, ok bool) {
	if len(f) < 14+40+8 || binary.BigEndian.Uint16(f[12:]) != 0x86dd || f[14+6] != 17 {
		return u, false
	}
	ip := f[14:]
	ulen := int(binary.BigEndian.Uint16(ip[40+4:]))
	if ulen < 8 || 40+ulen > len(ip) {
		return u, false
	}
	u.Src, u.Dst = [16]byte(ip[8:24]), [16]byte(ip[24:40])
	u.SrcPort, u.DstPort = binary.BigEndian.Uint16(ip[40:]), binary.BigEndian.Uint16(ip[42:])
	u.Payload = ip[48 : 40+ulen]
	return u, true
}

// SendFrame writes frame, a whole Ethernet frame, to interface ifname in
// namespace ns through a packet socket: the kernel adds nothing and
// checks nothing, so tests can send what no socket API would (a wrong
// checksum, a forged header).
func (l *Lab) SendFrame(ns, ifname string, frame []byte) error {
	return l.InNS(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("lab: packet socket: %w", err)
		}
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IPV6), Ifindex: ifi.Index, Halen: 6}
		copy(to.Addr[:], frame[:6])
		if err := unix.Sendto(fd, frame, 0, to); err != nil {
			return fmt.Errorf("lab: send frame on %s in %s: %w", ifname, ns, err)
		}
		return nil
	})
}
