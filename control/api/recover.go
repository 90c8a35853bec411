package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pdrelay/pdrelay/control/leasequery"
)

// Recoverer runs Bulk Leasequery recoveries (RFC 5460) and reports the
// servers' status; *leasequery.Requestor satisfies it.
type Recoverer interface {
	Recover(ctx context.Context, server string) (leasequery.Report, error)
	Status() []leasequery.ServerStatus
}

var _ Recoverer = (*leasequery.Requestor)(nil)

// RecoverRequest is the body of POST /v1/recover: the server to query
// ("" for every server in leasequery.servers), as an address or
// "[address]:port".
type RecoverRequest struct {
	Server string `json:"server,omitempty"`
}

// recoverTimeout bounds `pdrelay recover`: a run retries an absent server
// with backoff (up to BULK_LQ_MAX_RETRY between attempts) before it gives
// up, and a large table takes a while to stream.
const recoverTimeout = 15 * time.Minute

func (s *Server) recover(w http.ResponseWriter, r *http.Request) {
	if s.Recoverer == nil {
		s.fail(w, http.StatusNotImplemented, errors.New("bulk leasequery is not configured (leasequery.servers)"))
		return
	}
	var req RecoverRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		s.fail(w, http.StatusBadRequest, fmt.Errorf("invalid recover request: %v", err))
		return
	}
	// The recovery ends with the request: an operator who interrupts
	// `pdrelay recover` stops it (what it learned so far stays).
	rep, err := s.Recoverer.Recover(r.Context(), req.Server)
	switch {
	case errors.Is(err, leasequery.ErrBusy):
		s.fail(w, http.StatusConflict, err)
	case errors.Is(err, leasequery.ErrUnknownServer):
		s.fail(w, http.StatusBadRequest, err)
	case errors.Is(err, leasequery.ErrNoServers):
		s.fail(w, http.StatusNotImplemented, err)
	case err != nil:
		s.fail(w, http.StatusServiceUnavailable, err)
	default:
		writeJSON(w, http.StatusOK, rep)
	}
}

func (s *Server) leasequeryStatus(w http.ResponseWriter, _ *http.Request) {
	st := []leasequery.ServerStatus{}
	if s.Recoverer != nil {
		st = s.Recoverer.Status()
	}
	writeJSON(w, http.StatusOK, st)
}

// Recover runs a Bulk Leasequery recovery now.
func (c *Client) Recover(ctx context.Context, req RecoverRequest) (leasequery.Report, error) {
	var out leasequery.Report
	body, err := json.Marshal(req)
	if err != nil {
		return out, err
	}
	err = c.do(ctx, http.MethodPost, "/v1/recover", body, &out)
	return out, err
}

// Leasequery returns the Bulk Leasequery servers' status.
func (c *Client) Leasequery(ctx context.Context) ([]leasequery.ServerStatus, error) {
	var out []leasequery.ServerStatus
	err := c.do(ctx, http.MethodGet, "/v1/leasequery", nil, &out)
	return out, err
}

const recoverUsage = `usage: pdrelay recover [--server S] [--json] [-s|--socket PATH | -c|--config FILE]

Recovers the relay's bindings from the Bulk Leasequery servers
(leasequery.servers) now, and prints what each server's answer added,
updated and removed, and what was refused. Exits 1 unless every query
was answered in full.

      --server S        only this server (an address, or [address]:port)
      --json            print the report as JSON
` + socketHelp

// RunRecover implements `pdrelay recover`; args follow the subcommand.
// It returns the exit code.
func RunRecover(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("recover", recoverUsage, stderr)
	var req RecoverRequest
	fs.StringVar(&req.Server, "server", "", "")
	asJSON := fs.Bool("json", false, "")
	var sock socketFlags
	sock.register(fs)
	if code, done := parse(fs, args, stderr); done {
		return code
	}
	c, ok := sock.client("recover", stderr)
	if !ok {
		return ExitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), recoverTimeout)
	defer cancel()
	rep, err := c.Recover(ctx, req)
	if err != nil {
		return requestFailed(stderr, "recover", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(stderr, "pdrelay recover: %v\n", err)
			return ExitError
		}
	} else {
		printRecover(stdout, rep)
	}
	for _, s := range rep.Servers {
		if s.Result != leasequery.ResultComplete {
			return ExitError
		}
	}
	return ExitOK
}

// printRecover prints the human table of `pdrelay recover`: one row per
// server, then its queries that did not complete.
func printRecover(w io.Writer, rep leasequery.Report) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tRESULT\tRECEIVED\tADDED\tUPDATED\tREMOVED\tREFUSED\tDISCARDED\tATTEMPTS\tTOOK")
	for _, s := range rep.Servers {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", s.Server, s.Result, s.Received, s.Added,
			s.Updated, s.Removed, s.Refused, s.Discarded, s.Attempts, seconds(s.DurationSeconds))
	}
	tw.Flush()
	for _, s := range rep.Servers {
		for _, q := range s.Queries {
			if q.Result == leasequery.ResultComplete {
				continue
			}
			why := q.Error
			if why == "" {
				why = q.Status
			}
			fmt.Fprintf(w, "  %s %s: %s: %s\n", s.Server, q.Query, q.Result, why)
		}
	}
}

// printLeasequery prints the servers' last recoveries under `pdrelay
// stats`; nothing when leasequery is not configured.
func printLeasequery(w io.Writer, st []leasequery.ServerStatus) {
	if len(st) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "LEASEQUERY-SERVER\tLAST-QUERY\tRESULT\tRECEIVED\tADDED\tREMOVED\tREFUSED\tTOOK")
	for _, s := range st {
		l := s.Last
		if l == nil {
			state := "never"
			if s.Running {
				state = "running"
			}
			fmt.Fprintf(tw, "%s\t-\t%s\t-\t-\t-\t-\t-\n", s.Server, state)
			continue
		}
		res := l.Result
		if s.Running {
			res += " (running again)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", s.Server, l.Started.UTC().Format(time.RFC3339), res,
			l.Received, l.Added, l.Removed, l.Refused, seconds(l.DurationSeconds))
	}
	tw.Flush()
}

func seconds(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(time.Microsecond * 100).String()
	}
	return strings.TrimSpace(d.String())
}
