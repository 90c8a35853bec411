package replay

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var goldenArgs = []string{"--pcap", "testdata/in.pcap", "-c", "testdata/pdrelay.yaml",
	"--mac", "eth0=02:00:00:00:00:01", "--mac", "eth1=02:00:00:00:00:02", "--mac", "eth2=02:00:00:00:00:03",
	"--gateway-mac", "0a:00:00:00:00:fe"}

// TestMainGolden runs the command as an operator would, with --bindings and
// with --socket (a relay's API serving testdata/bindings.json), and checks
// it writes the golden output and prints the golden summaries.
func TestMainGolden(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	bindings, err := os.ReadFile("testdata/bindings.json")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/bindings" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(bindings)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	for _, tc := range []struct {
		name string
		args []string
		want string // the golden stdout
	}{
		{"bindings file, text", []string{"--bindings", "testdata/bindings.json"}, "testdata/summary.txt"},
		{"socket, json", []string{"--socket", sock, "--json"}, "testdata/summary.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.pcapng")
			var stdout, stderr bytes.Buffer
			args := append(append(append([]string{}, goldenArgs...), "--out", out), tc.args...)
			if code := Main(args, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			for _, c := range []struct{ got, want string }{{out, "testdata/out.pcapng"}} {
				got, _ := os.ReadFile(c.got)
				exp, _ := os.ReadFile(c.want)
				if len(exp) == 0 || !bytes.Equal(got, exp) {
					t.Errorf("--out differs from %s", c.want)
				}
			}
			exp, _ := os.ReadFile(tc.want)
			if stdout.String() != string(exp) {
				t.Errorf("stdout:\n%s\nwant %s:\n%s", stdout.String(), tc.want, exp)
			}
		})
	}
}

// TestMainErrors: usage errors exit 2 and say what is wrong; bad input
// exits 1 and names it.
func TestMainErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--pcap", "x"}, 2, "-c is required"},
		{[]string{"-c", "x"}, 2, "--pcap is required"},
		{append([]string{}, goldenArgs...), 2, "exactly one of --bindings and --socket"},
		{append(append([]string{}, goldenArgs...), "--bindings", "a", "-s", "b"), 2, "exactly one of --bindings and --socket"},
		{append(append([]string{}, goldenArgs...), "--bindings", "testdata/bindings.json", "--mac", "eth0=zz"), 2, "not an Ethernet address"},
		{append(append([]string{}, goldenArgs...), "--bindings", "testdata/bindings.json", "--mac", "eth7=02:00:00:00:00:07"), 1, "--mac eth7: not a port in the config"},
		{append(append([]string{}, goldenArgs...), "--bindings", "testdata/bindings.json", "--in", "eth7"), 1, "--in eth7: not a port in the config"},
		{append(append([]string{}, goldenArgs...), "--bindings", "testdata/pdrelay.yaml"), 1, "read bindings testdata/pdrelay.yaml"},
		{append(append([]string{}, goldenArgs[2:]...), "--pcap", "testdata/bindings.json", "--bindings", "testdata/bindings.json"), 1, "bad capture"},
		{[]string{"--pcap", "testdata/in.pcap", "-c", "testdata/pdrelay.yaml", "--mac", "eth0=02:00:00:00:00:01", "--bindings", "testdata/bindings.json"}, 1, "port eth1: no MAC given"},
	} {
		var stdout, stderr bytes.Buffer
		code := Main(tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.msg) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.msg)
		}
	}
}

// TestLiveFlagErrors: the live replay's flags are refused without
// --interface, the offline replay's with it, and bad values and inputs
// say what is wrong (usage errors exit 2, bad input 1). None of these
// opens a socket.
func TestLiveFlagErrors(t *testing.T) {
	live := []string{"--interface", "lo", "--pcap", "testdata/in.pcap"}
	with := func(extra ...string) []string { return append(append([]string{}, live...), extra...) }
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--pcap", "testdata/in.pcap", "--rate", "max"}, 2, "--rate needs --interface"},
		{[]string{"--pcap", "testdata/in.pcap", "--loop", "3", "-c", "x"}, 2, "--loop needs --interface"},
		{[]string{"--pcap", "testdata/in.pcap", "--queue", "1"}, 2, "--queue needs --interface"},
		{[]string{"--pcap", "testdata/in.pcap", "--progress"}, 2, "--progress needs --interface"},
		{[]string{"--pcap", "testdata/in.pcap", "--realtime"}, 2, "--realtime needs --interface"},
		{with("--rate", "fast"), 2, `--rate "fast": want original, max, or frames per second`},
		{with("--rate", "0"), 2, `--rate "0"`},
		{with("--loop", "-1"), 2, "--loop -1: want 0 (until interrupted) or more"},
		{with("--queue", "-2"), 2, "--queue -2"},
		{[]string{"--pcap", "testdata/in.pcap", "--burst", "8"}, 2, "--burst needs --interface"},
		{with("--burst", "8"), 2, "--burst needs a fixed --rate"},
		{with("--rate", "1k", "--burst", "0"), 2, "--burst 0: want 1 to 64"},
		{with("--rate", "1k", "--burst", "65"), 2, "--burst 65: want 1 to 64"},
		{[]string{"--interface", "lo"}, 2, "--pcap is required"},
		{with("-c", "testdata/pdrelay.yaml"), 2, "-c is for the offline replay"},
		{with("--bindings", "testdata/bindings.json"), 2, "--bindings is for the offline replay"},
		{with("--out", "x.pcapng"), 2, "--out is for the offline replay"},
		{with("-s", "x.sock"), 2, "-s is for the offline replay"},
		{with("extra"), 2, `unexpected argument "extra"`},
		{[]string{"--interface", "nosuch-lr0", "--pcap", "testdata/in.pcap"}, 1, "--interface nosuch-lr0"},
		{[]string{"--interface", "lo", "--pcap", "testdata/missing.pcap"}, 1, "testdata/missing.pcap"},
		{[]string{"--interface", "lo", "--pcap", "testdata/bindings.json"}, 1, "bad capture"},
	} {
		var stdout, stderr bytes.Buffer
		code := Main(tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.msg) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.msg)
		}
		if stdout.Len() != 0 {
			t.Errorf("%q: stdout %q", tc.args, stdout.String())
		}
	}
}
