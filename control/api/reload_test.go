package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// fakeReloader answers Reload with a fixed report or error.
type fakeReloader struct {
	rep   ReloadReport
	err   error
	calls int
}

func (f *fakeReloader) Reload(context.Context) (ReloadReport, error) {
	f.calls++
	return f.rep, f.err
}

func TestRunReload(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rel      *fakeReloader // nil: no Reloader
		code     int
		out, err string
	}{
		{"changes", &fakeReloader{rep: ReloadReport{Changed: []string{"downlinks[dl1]", "servers"}}}, ExitOK,
			"reloaded: downlinks[dl1]; servers\n", ""},
		{"nothing changed", &fakeReloader{}, ExitOK, "reloaded: nothing changed\n", ""},
		{"refused", &fakeReloader{err: fmt.Errorf("%w: config: state_dir: /a changed to /b: needs a restart", ErrReloadRefused)}, ExitError,
			"", "pdrelay reload: pdrelay: reload refused: config: state_dir: /a changed to /b: needs a restart (HTTP 422)\n"},
		{"failed", &fakeReloader{err: errors.New("kernel guard: no table")}, ExitError, "", "kernel guard: no table"},
		{"no reloader", nil, ExitError, "", "not available"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := serveWith(t, &fakeBackend{}, func(s *Server) {
				if tc.rel != nil {
					s.Reloader = tc.rel
				}
			})
			var out, errOut bytes.Buffer
			code := RunReload([]string{"-s", path}, &out, &errOut)
			if code != tc.code || out.String() != tc.out || !strings.Contains(errOut.String(), tc.err) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, stderr with %q", code, out.String(), errOut.String(), tc.code, tc.out, tc.err)
			}
			if tc.rel != nil && tc.rel.calls != 1 {
				t.Errorf("Reload called %d times", tc.rel.calls)
			}
		})
	}
	var out, errOut bytes.Buffer
	if code := RunReload([]string{"-s", "x", "extra"}, &out, &errOut); code != ExitUsage {
		t.Errorf("an argument: exit %d, want usage", code)
	}
}
