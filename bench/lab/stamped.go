package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// StampedConn is a packet socket that reads the frames one interface
// receives with the kernel's receive timestamp (SO_TIMESTAMPNS: taken
// when the frame entered the receiving stack, on a veth when the sender
// transmitted it), for tests that check when frames arrived, not only
// what arrived.
type StampedConn struct {
	fd int
}

// ListenStamped opens a StampedConn on interface ifname of the current
// network namespace (call it inside Lab.InNS), with a receive buffer of
// rcvbuf bytes (0: the kernel's default) so that a burst is not lost
// while the reader sleeps.
func ListenStamped(ifname string, rcvbuf int) (*StampedConn, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("lab: stamped packet socket: %w", err)
	}
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, fmt.Errorf("lab: stamped packet socket: %w", err)
	}
	c := &StampedConn{fd: fd}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		c.Close()
		return nil, fmt.Errorf("lab: SO_TIMESTAMPNS: %w", err)
	}
	if rcvbuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf); err != nil {
			c.Close()
			return nil, fmt.Errorf("lab: SO_RCVBUFFORCE %d: %w", rcvbuf, err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index}); err != nil {
		c.Close()
		return nil, fmt.Errorf("lab: bind packet socket to %s: %w", ifname, err)
	}
	return c, nil
}

// Collect calls fn with each frame the interface receives (not those it
// sends) and its kernel receive time, until d has passed.
func (c *StampedConn) Collect(d time.Duration, fn func(frame []byte, at time.Time)) error {
	return collect(c.fd, d, make([]byte, 128), false, func(frame, oob []byte) error {
		at, err := stampOf(oob)
		if err != nil {
			return err
		}
		fn(frame, at)
		return nil
	})
}

// stampOf finds the SCM_TIMESTAMPNS control message.
func stampOf(oob []byte) (time.Time, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}, fmt.Errorf("lab: capture: control message: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
			// struct timespec on a 64-bit kernel: seconds, nanoseconds.
			sec := int64(binary.NativeEndian.Uint64(m.Data[0:]))
			nsec := int64(binary.NativeEndian.Uint64(m.Data[8:]))
			return time.Unix(sec, nsec), nil
		}
	}
	return time.Time{}, errors.New("lab: capture: frame without a timestamp")
}

// Close closes the socket.
func (c *StampedConn) Close() error { return unix.Close(c.fd) }
