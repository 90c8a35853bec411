//go:build !linux

package neigh

import (
	"context"
	"log/slog"
	"net/netip"
)

// Watch needs Linux; elsewhere it returns ErrUnsupported.
func Watch(ctx context.Context, ifname string, gw netip.Addr, log *slog.Logger, update func(Gateway, bool)) error {
	return ErrUnsupported
}

// WatchWithOptions needs Linux; elsewhere it returns ErrUnsupported.
func WatchWithOptions(ctx context.Context, ifname string, gw netip.Addr, log *slog.Logger, update func(Gateway, bool), opt Options) error {
	return ErrUnsupported
}
