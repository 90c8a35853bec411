package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/release"
)

var t0 = time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)

// fakeBackend is an in-memory binding table.
type fakeBackend struct {
	mu sync.Mutex
	bs []binding.Binding
}

func (f *fakeBackend) List(context.Context) ([]binding.Binding, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.bs), nil
}

func (f *fakeBackend) Clear(_ context.Context, flt binding.Filter) ([]binding.Binding, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out, keep []binding.Binding
	for _, b := range f.bs {
		if flt.Match(&b) {
			out = append(out, b)
		} else {
			keep = append(keep, b)
		}
	}
	f.bs = keep
	return out, nil
}

func (f *fakeBackend) prefixes() []string {
	bs, _ := f.List(context.Background())
	return prefixesOf(bs)
}

func prefixesOf(bs []binding.Binding) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.Prefix.String())
	}
	slices.Sort(out)
	return out
}

// releasingBackend also implements Releaser: the server answers each
// prefix with status[prefix] (Success when absent), or not at all for
// the prefixes in silent; what it releases is cleared, as
// release.Releaser does.
type releasingBackend struct {
	*fakeBackend
	err      error
	status   map[string]uint16
	silent   map[string]bool
	released []binding.Binding
}

func (r *releasingBackend) Release(ctx context.Context, bs []binding.Binding) ([]release.Result, error) {
	if r.err != nil {
		return nil, r.err
	}
	r.released = append(r.released, bs...)
	var out []release.Result
	for _, b := range bs {
		res := release.Result{Binding: b, Answered: true, Status: r.status[b.Prefix.String()]}
		if r.silent[b.Prefix.String()] {
			res = release.Result{Binding: b, Err: release.ErrNoAnswer}
		}
		if res.Released() {
			r.fakeBackend.Clear(ctx, binding.Filter{Prefix: b.Prefix, DUID: b.DUID, Port: b.Port})
		}
		out = append(out, res)
	}
	return out, nil
}

func bnd(port, duid string, iaid uint32, prefix string) binding.Binding {
	return binding.Binding{
		Key:        binding.Key{Port: port, DUID: duid, IAID: iaid, Prefix: netip.MustParsePrefix(prefix)},
		NextHop:    netip.MustParseAddr("fe80::1"),
		MAC:        [6]byte{2, 0, 0, 0, 0, 1},
		Preferred:  t0.Add(1234*time.Second + 500*time.Millisecond),
		Expires:    t0.Add(3600 * time.Second),
		ServerDUID: "\x00\x01\xab",
		Updated:    t0,
	}
}

// sample holds two clients, one of them on two ports (RFC 8987 G-4).
func sample() *fakeBackend {
	return &fakeBackend{bs: []binding.Binding{
		bnd("eth1", "\x00\x03\x00\x01", 1, "2001:db8:1::/56"),
		bnd("eth1", "\x00\x03\x00\x01", 2, "2001:db8:2::/56"),
		bnd("eth1", "\x00\x03\x00\x02", 1, "2001:db8:3::/56"),
		bnd("eth2", "\x00\x03\x00\x01", 1, "2001:db8:4::/56"),
	}}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// serve runs a server for b on a socket in a temporary directory and
// returns the socket's path.
func serve(t *testing.T, b Backend) string {
	t.Helper()
	return serveWith(t, b, nil)
}

// serveWith is serve with set applied to the server before it serves
// (its Recoverer, BGP, Reloader).
func serveWith(t *testing.T, b Backend, set func(*Server)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api.sock")
	s := NewServer(b, testLogger(t))
	s.Now = func() time.Time { return t0 }
	if set != nil {
		set(s)
	}
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeListener(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	})
	return path
}

// post sends a raw request body to /v1/clear.
func post(t *testing.T, path, body string) (int, []byte) {
	t.Helper()
	hc := Dial(path).hc
	resp, err := hc.Post("http://pdrelay/v1/clear", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes()
}

func TestSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "api.sock") // the directory is created
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	s := NewServer(sample(), testLogger(t))
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- s.ServeListener(ctx, ln) }()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, want a socket with 0600", fi.Mode())
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("socket directory holds %v, want the socket alone", ents)
	}
	if _, err := Listen(path); !errors.Is(err, ErrSocketInUse) {
		t.Errorf("second Listen = %v, want ErrSocketInUse", err)
	}
	if _, err := Dial(path).Bindings(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ServeListener = %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind after shutdown: %v", err)
	}
}

func TestServeRemovesStaleSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "api.sock")
	// A socket left behind by a process that died.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(sample(), nil).Serve(ctx, path) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := Dial(path).Bindings(ctx); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("server never answered: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve = %v", err)
	}

	// A file that is not a socket is left alone.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep"), 0o644)
	if _, err := Listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen(regular file) = %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Errorf("regular file was changed")
	}
}

func TestBindingsJSON(t *testing.T) {
	fb := sample()
	inf := bnd("eth3", "\x00\x03\x00\x09", 7, "2001:db8:9::/48")
	inf.Preferred, inf.Expires = binding.Forever, binding.Forever
	old := bnd("eth3", "\x00\x03\x00\x09", 8, "2001:db8:a::/48")
	old.Preferred = t0.Add(-time.Second) // deprecated, still valid
	old.ServerDUID = ""
	fb.bs = append(fb.bs, inf, old)
	path := serve(t, fb)

	resp, err := Dial(path).hc.Get("http://pdrelay/v1/bindings")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var got []map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 6 {
		t.Fatalf("got %d bindings, want 6", len(got))
	}
	want := map[string]any{
		"interface":          "eth1",
		"client_duid":        "00030001",
		"iaid":               1.0,
		"prefix":             "2001:db8:1::/56",
		"next_hop":           "fe80::1",
		"next_hop_mac":       "02:00:00:00:00:01",
		"preferred_lifetime": 1234.0, // 1234.5 s left: whole seconds
		"valid_lifetime":     3600.0,
		"server_duid":        "0001ab",
		"source":             "snooped",
		"expires":            "2026-01-02T16:04:05Z",
	}
	if !reflect.DeepEqual(got[0], want) {
		t.Errorf("binding 0 =\n%v\nwant\n%v", got[0], want)
	}
	if g := got[4]; g["preferred_lifetime"] != 4294967295.0 || g["valid_lifetime"] != 4294967295.0 ||
		g["expires"] != "9999-01-01T00:00:00Z" {
		t.Errorf("infinite binding = %v", g)
	}
	if g := got[5]; g["preferred_lifetime"] != 0.0 || g["valid_lifetime"] != 3600.0 || g["server_duid"] != "" {
		t.Errorf("deprecated binding = %v", g)
	}

	// An empty table is an empty array, not null.
	path = serve(t, &fakeBackend{})
	resp, err = Dial(path).hc.Get("http://pdrelay/v1/bindings")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	if s := strings.TrimSpace(buf.String()); s != "[]" {
		t.Errorf("empty list = %q, want []", s)
	}
}

func TestRemaining(t *testing.T) {
	for _, tc := range []struct {
		end  time.Time
		want uint32
	}{
		{t0.Add(3600 * time.Second), 3600},
		{t0.Add(999 * time.Millisecond), 0},
		{t0.Add(1001 * time.Millisecond), 1},
		{t0, 0},
		{t0.Add(-time.Hour), 0},
		{time.Time{}, 0},
		{binding.Forever, Infinite},
		{t0.Add(binding.Infinity), Infinite - 1}, // finite, however far
	} {
		if got := Remaining(tc.end, t0); got != tc.want {
			t.Errorf("Remaining(%v) = %d, want %d", tc.end, got, tc.want)
		}
	}
}

func TestClearSelectors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		req     ClearRequest
		cleared []string
	}{
		{"prefix", ClearRequest{Prefix: "2001:db8:2::/56"}, []string{"2001:db8:2::/56"}},
		{"prefix with host bits", ClearRequest{Prefix: "2001:db8:2::1/56"}, []string{"2001:db8:2::/56"}},
		{"prefix of another length", ClearRequest{Prefix: "2001:db8:2::/64"}, nil},
		{"client on every port", ClearRequest{Client: "00030001"},
			[]string{"2001:db8:1::/56", "2001:db8:2::/56", "2001:db8:4::/56"}},
		{"client with colons on one port", ClearRequest{Client: "00:03:00:01", Interface: "eth2"},
			[]string{"2001:db8:4::/56"}},
		{"interface", ClearRequest{Interface: "eth1"},
			[]string{"2001:db8:1::/56", "2001:db8:2::/56", "2001:db8:3::/56"}},
		{"all", ClearRequest{All: true},
			[]string{"2001:db8:1::/56", "2001:db8:2::/56", "2001:db8:3::/56", "2001:db8:4::/56"}},
		{"no match", ClearRequest{Interface: "eth9"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fb := sample()
			path := serve(t, fb)
			resp, err := Dial(path).Clear(context.Background(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, b := range resp.Cleared {
				got = append(got, b.Prefix.String())
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.cleared) || resp.Count != len(tc.cleared) {
				t.Errorf("cleared %v (count %d), want %v", got, resp.Count, tc.cleared)
			}
			for _, p := range fb.prefixes() {
				if slices.Contains(tc.cleared, p) {
					t.Errorf("%s still bound", p)
				}
			}
			if n := len(fb.prefixes()) + len(tc.cleared); n != 4 {
				t.Errorf("%d bindings left, want %d", len(fb.prefixes()), 4-len(tc.cleared))
			}
		})
	}
}

func TestClearInvalid(t *testing.T) {
	fb := sample()
	path := serve(t, fb)
	for _, tc := range []struct {
		body string
		want string
	}{
		{`{}`, "nothing selected"},
		{`{"release": true}`, "nothing selected"},
		{`{"prefix": "2001:db8:1::/56", "client": "00030001"}`, "prefix cannot be combined"},
		{`{"prefix": "2001:db8:1::/56", "interface": "eth1"}`, "prefix cannot be combined"},
		{`{"all": true, "interface": "eth1"}`, "all cannot be combined"},
		{`{"all": true, "client": "00030001"}`, "all cannot be combined"},
		{`{"prefix": "2001:db8:1::"}`, `prefix "2001:db8:1::" is not an IPv6 prefix`},
		{`{"prefix": "192.0.2.0/24"}`, "is not an IPv6 prefix"},
		{`{"client": "xyz"}`, `client "xyz" is not a DUID in hex`},
		{`{"interface": "a/b"}`, "is not an interface name"},
		{`{"interface": "eth1", "force": true}`, `unknown field "force"`},
		{`[1]`, "invalid clear request"},
		{`{"all": true`, "invalid clear request"},
	} {
		code, body := post(t, path, tc.body)
		var e errorJSON
		json.Unmarshal(body, &e)
		if code != http.StatusBadRequest || !strings.Contains(e.Error, tc.want) {
			t.Errorf("POST %s = %d %s, want 400 with %q", tc.body, code, body, tc.want)
		}
	}
	if n := len(fb.prefixes()); n != 4 {
		t.Errorf("invalid requests cleared bindings: %d left", n)
	}
	// The routes take only their methods.
	resp, err := Dial(path).hc.Get("http://pdrelay/v1/clear")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/clear = %d", resp.StatusCode)
	}
}

func TestClearRelease(t *testing.T) {
	ctx := context.Background()
	t.Run("no releaser", func(t *testing.T) {
		fb := sample()
		_, err := Dial(serve(t, fb)).Clear(ctx, ClearRequest{All: true, Release: true})
		var se *StatusError
		if !errors.As(err, &se) || se.Code != http.StatusNotImplemented || !strings.Contains(se.Msg, "(release.mode is off); nothing was cleared") {
			t.Errorf("Clear(release) = %v, want 501", err)
		}
		if n := len(fb.prefixes()); n != 4 {
			t.Errorf("refused release cleared bindings: %d left", n)
		}
	})
	t.Run("mode off", func(t *testing.T) {
		rb := &releasingBackend{fakeBackend: sample(), err: release.ErrModeOff}
		_, err := Dial(serve(t, rb)).Clear(ctx, ClearRequest{All: true, Release: true})
		var se *StatusError
		if !errors.As(err, &se) || se.Code != http.StatusNotImplemented ||
			!strings.Contains(se.Msg, "release.mode is off") || !strings.Contains(se.Msg, "nothing was cleared") {
			t.Errorf("Clear(release) = %v, want 501 naming release.mode", err)
		}
		if n := len(rb.prefixes()); n != 4 {
			t.Errorf("refused release cleared bindings: %d left", n)
		}
	})
	t.Run("released then cleared", func(t *testing.T) {
		rb := &releasingBackend{fakeBackend: sample()}
		resp, err := Dial(serve(t, rb)).Clear(ctx, ClearRequest{Client: "00030001", Interface: "eth1", Release: true})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"2001:db8:1::/56", "2001:db8:2::/56"}
		if got := prefixesOf(rb.released); !slices.Equal(got, want) {
			t.Errorf("released %v, want %v", got, want)
		}
		if resp.Count != 2 || len(rb.prefixes()) != 2 || len(resp.NotReleased) != 0 {
			t.Errorf("cleared %d, %d left, not released %v", resp.Count, len(rb.prefixes()), resp.NotReleased)
		}
	})
	t.Run("partly released", func(t *testing.T) {
		rb := &releasingBackend{fakeBackend: sample(),
			status: map[string]uint16{"2001:db8:2::/56": 3 /* NoBinding: done */, "2001:db8:3::/56": 1 /* UnspecFail */},
			silent: map[string]bool{"2001:db8:4::/56": true}}
		resp, err := Dial(serve(t, rb)).Clear(ctx, ClearRequest{All: true, Release: true})
		if err != nil {
			t.Fatal(err)
		}
		var cleared []string
		for _, b := range resp.Cleared {
			cleared = append(cleared, b.Prefix.String())
		}
		if !slices.Equal(cleared, []string{"2001:db8:1::/56", "2001:db8:2::/56"}) || resp.Count != 2 {
			t.Errorf("cleared %v (count %d)", cleared, resp.Count)
		}
		if len(resp.NotReleased) != 2 || resp.NotReleased[0].Prefix.String() != "2001:db8:3::/56" || resp.NotReleased[0].Reason != "UnspecFail" ||
			resp.NotReleased[1].Reason != "no answer" || resp.NotReleased[1].Interface != "eth2" {
			t.Errorf("not released %+v", resp.NotReleased)
		}
		if got := rb.prefixes(); !slices.Equal(got, []string{"2001:db8:3::/56", "2001:db8:4::/56"}) {
			t.Errorf("left %v, want the two kept", got)
		}
	})
	t.Run("release fails", func(t *testing.T) {
		rb := &releasingBackend{fakeBackend: sample(), err: errors.New("release mode \"x\" unknown")}
		_, err := Dial(serve(t, rb)).Clear(ctx, ClearRequest{Prefix: "2001:db8:3::/56", Release: true})
		var se *StatusError
		if !errors.As(err, &se) || se.Code != http.StatusBadGateway || !strings.Contains(se.Msg, "unknown; nothing was cleared") {
			t.Errorf("Clear(release) = %v, want 502", err)
		}
		if n := len(rb.prefixes()); n != 4 {
			t.Errorf("failed release cleared bindings: %d left", n)
		}
	})
	t.Run("nothing to release", func(t *testing.T) {
		rb := &releasingBackend{fakeBackend: sample(), err: errors.New("must not be called")}
		resp, err := Dial(serve(t, rb)).Clear(ctx, ClearRequest{Interface: "eth9", Release: true})
		if err != nil || resp.Count != 0 || len(rb.released) != 0 {
			t.Errorf("Clear = %+v, %v; released %d", resp, err, len(rb.released))
		}
	})
}

func TestClientNoRelay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.sock")
	_, err := Dial(path).Bindings(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "connect to pdrelay at "+path+": ") {
		t.Errorf("Bindings(no relay) = %v", err)
	}
}
