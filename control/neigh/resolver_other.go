//go:build !linux

package neigh

import "context"

// Run needs Linux; elsewhere it returns ErrUnsupported.
func (r *Resolver) Run(ctx context.Context) error { return ErrUnsupported }
