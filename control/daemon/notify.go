package daemon

import (
	"log/slog"

	sd "github.com/coreos/go-systemd/v22/daemon"
)

// States the relay reports to systemd (sd_notify(3)) when it runs as a
// Type=notify service (contrib/pdrelay.service). Outside systemd
// NOTIFY_SOCKET is unset and notify does nothing.
const (
	sdReady     = sd.SdNotifyReady    // every part runs: API socket, forwarding, relay sockets
	sdStopping  = sd.SdNotifyStopping // on the way out
	sdReloading = sd.SdNotifyReloading
)

// notify sends state to systemd; a failure is logged, never fatal.
func notify(log *slog.Logger, state string) {
	if state == sdReloading {
		// systemd 253 and later want the time with RELOADING=1.
		state += "\n" + sd.SdNotifyMonotonicUsec()
	}
	if _, err := sd.SdNotify(false, state); err != nil {
		log.Warn("systemd notify", "state", state, "err", err)
	}
}
