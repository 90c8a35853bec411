//go:build !linux

package kroute

// openKernel fails: rtnetlink is Linux's.
func openKernel(int) (kernel, error) { return nil, ErrUnsupported }
