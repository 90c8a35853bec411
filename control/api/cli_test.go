package api

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(f func([]string, *bytes.Buffer, *bytes.Buffer) int, args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := f(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func bindingsCmd(args []string, out, errOut *bytes.Buffer) int { return RunBindings(args, out, errOut) }
func clearCmd(args []string, out, errOut *bytes.Buffer) int    { return RunClear(args, out, errOut) }

func TestRunBindingsTable(t *testing.T) {
	path := serve(t, sample())
	code, out, errOut := run(bindingsCmd, "-s", path)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("output has %d lines, want a header and 4 rows:\n%s", len(lines), out)
	}
	if got := strings.Fields(lines[0]); strings.Join(got, " ") != "PORT CLIENT-DUID IAID PREFIX NEXT-HOP MAC PREFERRED VALID SERVER-DUID SOURCE" {
		t.Errorf("header = %q", lines[0])
	}
	want := "eth1 00030001 1 2001:db8:1::/56 fe80::1 02:00:00:00:00:01 20m34s 1h0m0s 0001ab snooped"
	if got := strings.Join(strings.Fields(lines[1]), " "); got != want {
		t.Errorf("row 1 = %q\nwant    %q", got, want)
	}
}

func TestRunBindingsJSON(t *testing.T) {
	path := serve(t, sample())
	for _, args := range [][]string{
		{"--json", "--socket", path},
		{"-json", "-s=" + path},
		{"--socket=" + path, "--json"},
	} {
		code, out, errOut := run(bindingsCmd, args...)
		if code != ExitOK {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		var bs []BindingJSON
		if err := json.Unmarshal([]byte(out), &bs); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		if len(bs) != 4 || bs[3].Interface != "eth2" || bs[3].Prefix.String() != "2001:db8:4::/56" {
			t.Errorf("%v: %+v", args, bs)
		}
	}
	code, out, _ := run(bindingsCmd, "--json", "-s", serve(t, &fakeBackend{}))
	if code != ExitOK || strings.TrimSpace(out) != "[]" {
		t.Errorf("empty --json: exit %d, %q", code, out)
	}
}

func TestSocketChoice(t *testing.T) {
	path := serve(t, sample())
	t.Run("environment", func(t *testing.T) {
		t.Setenv(SocketEnv, path)
		if code, _, errOut := run(bindingsCmd); code != ExitOK {
			t.Errorf("exit %d: %s", code, errOut)
		}
	})
	t.Run("flag over environment", func(t *testing.T) {
		t.Setenv(SocketEnv, filepath.Join(t.TempDir(), "wrong.sock"))
		if code, _, errOut := run(bindingsCmd, "-s", path); code != ExitOK {
			t.Errorf("exit %d: %s", code, errOut)
		}
	})
	t.Run("config", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "pdrelay.yaml")
		os.WriteFile(cfg, []byte(`state_dir: /var/lib/pdrelay
api_socket: `+path+`
servers: [ff05::1:3]
trusted_servers: [2001:db8:ffff::/64]
uplink: {interface: up0}
downlinks: [{interface: eth1}]
`), 0o644)
		if code, _, errOut := run(bindingsCmd, "-c", cfg); code != ExitOK {
			t.Errorf("exit %d: %s", code, errOut)
		}
		if code, _, errOut := run(bindingsCmd, "-c", cfg, "-s", path); code != ExitUsage || !strings.Contains(errOut, "not both") {
			t.Errorf("-c and -s: exit %d: %s", code, errOut)
		}
	})
	t.Run("default", func(t *testing.T) {
		t.Setenv(SocketEnv, "")
		var s socketFlags
		if p, err := s.path(); p != DefaultSocket || err != nil {
			t.Errorf("default socket = %q, %v", p, err)
		}
	})
}

func TestRunBindingsErrors(t *testing.T) {
	nowhere := filepath.Join(t.TempDir(), "none.sock")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"-s", nowhere}, ExitError, "connect to pdrelay at " + nowhere},
		{[]string{"--verbose"}, ExitUsage, "flag provided but not defined: -verbose"},
		{[]string{"-s", nowhere, "extra"}, ExitUsage, `unexpected argument "extra"`},
		{[]string{"-s"}, ExitUsage, "flag needs an argument"},
		{[]string{"-h"}, ExitOK, "usage: pdrelay bindings"},
	} {
		code, _, errOut := run(bindingsCmd, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) {
			t.Errorf("bindings %v: exit %d, stderr %q; want %d and %q", tc.args, code, errOut, tc.code, tc.msg)
		}
	}
}

func TestRunClear(t *testing.T) {
	for _, tc := range []struct {
		args []string
		out  string
	}{
		{[]string{"--prefix", "2001:db8:3::/56"}, "cleared 1 binding\n  eth1  2001:db8:3::/56  client 00030002  iaid 1\n"},
		{[]string{"--client", "00:03:00:01", "--interface", "eth1"}, "cleared 2 bindings\n"},
		{[]string{"--client", "00030001"}, "cleared 3 bindings\n"},
		{[]string{"--interface", "eth2"}, "cleared 1 binding\n"},
		{[]string{"--all"}, "cleared 4 bindings\n"},
		{[]string{"--interface", "eth9"}, "no binding matched; nothing cleared\n"},
	} {
		path := serve(t, sample())
		code, out, errOut := run(clearCmd, append(tc.args, "-s", path)...)
		if code != ExitOK || !strings.HasPrefix(out, tc.out) {
			t.Errorf("clear %v: exit %d, stdout %q, stderr %q; want %q", tc.args, code, out, errOut, tc.out)
		}
	}
	rb := &releasingBackend{fakeBackend: sample()}
	code, out, _ := run(clearCmd, "--all", "--release", "--socket", serve(t, rb))
	if code != ExitOK || !strings.HasPrefix(out, "cleared 4 bindings, released at the server\n") || len(rb.released) != 4 {
		t.Errorf("clear --all --release: exit %d, %q", code, out)
	}
	rb = &releasingBackend{fakeBackend: sample(), status: map[string]uint16{"2001:db8:3::/56": 10}}
	code, out, _ = run(clearCmd, "--all", "--release", "--socket", serve(t, rb))
	want := "cleared 3 bindings, released at the server\n" +
		"  eth1  2001:db8:1::/56  client 00030001  iaid 1\n" +
		"  eth1  2001:db8:2::/56  client 00030001  iaid 2\n" +
		"  eth2  2001:db8:4::/56  client 00030001  iaid 1\n" +
		"not released, kept until they expire: 1 binding\n" +
		"  eth1  2001:db8:3::/56  client 00030002  iaid 1  NotAllowed\n"
	if code != ExitError || out != want {
		t.Errorf("clear --all --release, one refused: exit %d\n%s\nwant exit 1\n%s", code, out, want)
	}
}

func TestRunClearErrors(t *testing.T) {
	fb := sample()
	path := serve(t, fb)
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{}, ExitUsage, "nothing selected"},
		{[]string{"--release"}, ExitUsage, "nothing selected"},
		{[]string{"--prefix", "2001:db8:1::/56", "--client", "00030001"}, ExitUsage, "prefix cannot be combined"},
		{[]string{"--prefix", "2001:db8:1::/56", "--interface", "eth1"}, ExitUsage, "prefix cannot be combined"},
		{[]string{"--all", "--interface", "eth1"}, ExitUsage, "all cannot be combined"},
		{[]string{"--all", "--prefix", "2001:db8:1::/56"}, ExitUsage, "all cannot be combined"},
		{[]string{"--prefix", "nope"}, ExitUsage, `prefix "nope" is not an IPv6 prefix`},
		{[]string{"--client", "0"}, ExitUsage, `client "0" is not a DUID in hex`},
		{[]string{"--all", "stray"}, ExitUsage, `unexpected argument "stray"`},
		{[]string{"--all", "--release"}, ExitError, "(release.mode is off); nothing was cleared"},
	} {
		code, out, errOut := run(clearCmd, append(tc.args, "-s", path)...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) || out != "" {
			t.Errorf("clear %v: exit %d, stdout %q, stderr %q; want %d and %q", tc.args, code, out, errOut, tc.code, tc.msg)
		}
	}
	if n := len(fb.prefixes()); n != 4 {
		t.Errorf("refused commands cleared bindings: %d left", n)
	}
	code, _, errOut := run(clearCmd, "--all", "-s", filepath.Join(t.TempDir(), "none.sock"))
	if code != ExitError || !strings.Contains(errOut, "connect to pdrelay") {
		t.Errorf("clear with no relay: exit %d, %q", code, errOut)
	}
}
