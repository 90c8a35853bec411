package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Reloader reloads the relay's config file (SIGHUP does the same). A
// config that does not load, does not validate, or changes what needs a
// restart is refused with ErrReloadRefused wrapped around the reason; the
// relay then keeps running on its old config.
type Reloader interface {
	Reload(ctx context.Context) (ReloadReport, error)
}

// ErrReloadRefused marks a config the relay refused to reload.
var ErrReloadRefused = errors.New("reload refused")

// ReloadReport is the answer to POST /v1/reload: what the reload changed,
// one entry per part ("downlink dl2 added", "servers"), empty when the
// file says what the relay already runs.
type ReloadReport struct {
	Changed []string `json:"changed"`
}

// reloadTimeout bounds `pdrelay reload`: a reload waits for the binding
// manager and programs the kernel for new ports.
const reloadTimeout = time.Minute

func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	if s.Reloader == nil {
		s.fail(w, http.StatusNotImplemented, errors.New("reload is not available"))
		return
	}
	rep, err := s.Reloader.Reload(r.Context())
	switch {
	case errors.Is(err, ErrReloadRefused):
		s.fail(w, http.StatusUnprocessableEntity, err)
	case err != nil:
		s.fail(w, http.StatusServiceUnavailable, err)
	default:
		if rep.Changed == nil {
			rep.Changed = []string{}
		}
		writeJSON(w, http.StatusOK, rep)
	}
}

// Reload asks the relay to reload its config file.
func (c *Client) Reload(ctx context.Context) (ReloadReport, error) {
	var out ReloadReport
	err := c.do(ctx, http.MethodPost, "/v1/reload", []byte("{}"), &out)
	return out, err
}

const reloadUsage = `usage: pdrelay reload [-s|--socket PATH | -c|--config FILE]

Makes the running relay read its config file again, as SIGHUP does, and
prints what changed. A config that does not validate, or that changes
what needs a restart (state_dir, api_socket, the uplink, the dataplane
keys, metrics_listen, relay_id; in the xdp modes the set of downlinks),
is refused: the relay keeps its old config, and the reason is printed
(exit status 1).
` + socketHelp

// RunReload implements `pdrelay reload`; args follow the subcommand. It
// returns the exit code.
func RunReload(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("reload", reloadUsage, stderr)
	var sock socketFlags
	sock.register(fs)
	if code, done := parse(fs, args, stderr); done {
		return code
	}
	c, ok := sock.client("reload", stderr)
	if !ok {
		return ExitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), reloadTimeout)
	defer cancel()
	rep, err := c.Reload(ctx)
	if err != nil {
		return requestFailed(stderr, "reload", err)
	}
	if len(rep.Changed) == 0 {
		fmt.Fprintln(stdout, "reloaded: nothing changed")
		return ExitOK
	}
	fmt.Fprintf(stdout, "reloaded: %s\n", strings.Join(rep.Changed, "; "))
	return ExitOK
}
