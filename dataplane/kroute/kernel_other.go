//go:build !linux

package kroute

// openKernel fails: rtnetlink is Linux's.
func openKernel(int, uint32) (kernel, error) { return nil, ErrUnsupported }
