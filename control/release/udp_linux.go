//go:build linux

package release

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// bindToDevice returns a dialer Control that binds the socket to ifname
// (SO_BINDTODEVICE), or nil for no binding.
func bindToDevice(ifname string) func(network, address string, c syscall.RawConn) error {
	if ifname == "" {
		return nil
	}
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname); serr != nil {
				serr = fmt.Errorf("bind to device %s: %w", ifname, serr)
			}
		})
		return errors.Join(err, serr)
	}
}
