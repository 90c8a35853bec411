//go:build !linux

package nftguard

// openKernel fails: nf_tables is Linux's.
func openKernel(string, int) (kernel, error) { return nil, ErrUnsupported }
