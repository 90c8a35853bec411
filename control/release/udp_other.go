//go:build !linux

package release

import "syscall"

// bindToDevice binds nothing where SO_BINDTODEVICE does not exist.
func bindToDevice(string) func(network, address string, c syscall.RawConn) error { return nil }
