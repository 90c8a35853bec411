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
