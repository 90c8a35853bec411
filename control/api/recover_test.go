package api

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/leasequery"
)

// fakeRecoverer answers recoveries with a fixed report.
type fakeRecoverer struct {
	rep    leasequery.Report
	err    error
	server string
}

func (f *fakeRecoverer) Recover(_ context.Context, server string) (leasequery.Report, error) {
	f.server = server
	return f.rep, f.err
}

func (f *fakeRecoverer) Status() []leasequery.ServerStatus {
	last := f.rep.Servers[0]
	return []leasequery.ServerStatus{{Server: last.Server, Last: &last}, {Server: "[2001:db8::2]:547"}}
}

func serveRecover(t *testing.T, r Recoverer) string {
	t.Helper()
	return serveWith(t, &fakeBackend{}, func(s *Server) { s.Recoverer = r })
}

func sampleReport(result string) leasequery.Report {
	s := leasequery.ServerReport{Server: "[2001:db8::547]:547", Result: result, Attempts: 1,
		Started: t0, DurationSeconds: 0.25,
		Counts:  leasequery.Counts{Received: 5, Added: 3, Updated: 1, Refused: 1, Removed: 2},
		Queries: []leasequery.QueryReport{{Query: "relay-id", Result: "complete"}}}
	if result != leasequery.ResultComplete {
		s.Queries[0] = leasequery.QueryReport{Query: "relay-id", Result: "status", Status: "NotAllowed", Error: `server answered NotAllowed: "no"`}
	}
	return leasequery.Report{Servers: []leasequery.ServerReport{s}, Counts: s.Counts}
}

func TestRunRecover(t *testing.T) {
	fr := &fakeRecoverer{rep: sampleReport(leasequery.ResultComplete)}
	path := serveRecover(t, fr)
	var out, errOut strings.Builder
	if code := RunRecover([]string{"-s", path, "--server", "2001:db8::547"}, &out, &errOut); code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if fr.server != "2001:db8::547" {
		t.Errorf("server asked %q", fr.server)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[1]), " ") != "[2001:db8::547]:547 complete 5 3 1 2 1 0 1 250ms" {
		t.Errorf("table:\n%s", out.String())
	}

	out.Reset()
	if code := RunRecover([]string{"-s", path, "--json"}, &out, &errOut); code != ExitOK {
		t.Fatalf("--json exit %d", code)
	}
	var rep leasequery.Report
	if err := json.Unmarshal([]byte(out.String()), &rep); err != nil || rep.Servers[0].Added != 3 {
		t.Errorf("--json: %v %s", err, out.String())
	}

	// A query that failed: the table says why, and the exit code is 1.
	fr.rep = sampleReport(leasequery.ResultFailed)
	out.Reset()
	if code := RunRecover([]string{"-s", path}, &out, &errOut); code != ExitError {
		t.Errorf("failed recovery exit %d", code)
	}
	if !strings.Contains(out.String(), "relay-id: status: server answered NotAllowed") {
		t.Errorf("table:\n%s", out.String())
	}

	fr.err = leasequery.ErrBusy
	errOut.Reset()
	if code := RunRecover([]string{"-s", path}, &out, &errOut); code != ExitError || !strings.Contains(errOut.String(), "already running") {
		t.Errorf("busy: exit %d, %s", code, errOut.String())
	}
	fr.err = leasequery.ErrUnknownServer
	if code := RunRecover([]string{"-s", path, "--server", "x"}, &out, &errOut); code != ExitUsage {
		t.Errorf("unknown server: exit %d", code)
	}
}

func TestRunRecoverNotConfigured(t *testing.T) {
	path := serve(t, &fakeBackend{})
	var out, errOut strings.Builder
	if code := RunRecover([]string{"-s", path}, &out, &errOut); code != ExitError || !strings.Contains(errOut.String(), "not configured") {
		t.Errorf("exit %d: %s", code, errOut.String())
	}
}

func TestStatsShowsLeasequery(t *testing.T) {
	path := serveRecover(t, &fakeRecoverer{rep: sampleReport(leasequery.ResultComplete)})
	var out, errOut strings.Builder
	if code := RunStats([]string{"-s", path}, &out, &errOut); code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	want := "[2001:db8::547]:547 " + t0.Format(time.RFC3339) + " complete 5 3 2 1 250ms"
	if !strings.Contains(out.String(), "LEASEQUERY-SERVER") || !strings.Contains(squeeze(out.String()), want) ||
		!strings.Contains(squeeze(out.String()), "[2001:db8::2]:547 - never") {
		t.Errorf("stats:\n%s\nwant a row %q", out.String(), want)
	}
	// --json keeps to the ports' counters.
	out.Reset()
	if code := RunStats([]string{"-s", path, "--json"}, &out, &errOut); code != ExitOK || strings.TrimSpace(out.String()) != "[]" {
		t.Errorf("--json: %s", out.String())
	}
}

func squeeze(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	return strings.Join(lines, "\n")
}
