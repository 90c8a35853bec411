package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func serveBGP(t *testing.T, src BGPSource) string {
	t.Helper()
	return serveWith(t, &fakeBackend{}, func(s *Server) { s.BGP = src })
}

func TestBGP(t *testing.T) {
	// Without bgp in the config: disabled, an empty session list.
	off := serve(t, &fakeBackend{})
	var stdout, stderr bytes.Buffer
	if code := RunBGP([]string{"-s", off}, &stdout, &stderr); code != ExitOK || !strings.Contains(stdout.String(), "bgp not configured") {
		t.Fatalf("no bgp: code %d out %q err %q", code, stdout.String(), stderr.String())
	}
	stdout.Reset()
	if code := RunBGP([]string{"--json", "-s", off}, &stdout, &stderr); code != ExitOK {
		t.Fatalf("no bgp --json: code %d err %q", code, stderr.String())
	}
	var raw map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &raw); err != nil || raw["enabled"] != false || raw["sessions"] == nil {
		t.Fatalf("no bgp --json: %s (%v): want enabled false and an empty sessions list", stdout.String(), err)
	}

	// With a speaker: one session up, one never up, one down.
	up := time.Now().Add(-90 * time.Minute)
	down := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	path := serveBGP(t, func(context.Context) (BGPStatusJSON, error) {
		return BGPStatusJSON{ASN: 65001, RouterID: "192.0.2.1", NextHop: "fd00:53::1", Prefixes: 3, Delegated: 2,
			Sessions: []BGPSessionJSON{
				{Peer: "fd00:53::2", PeerASN: 65000, State: "established", Since: &up, UptimeSeconds: 5400,
					PrefixesSent: 3, UpdatesSent: 4, GracefulRestart: true},
				{Peer: "fd00:53::3", PeerASN: 65000, State: "active"},
				{Peer: "fd00:53::4", PeerASN: 65002, State: "idle", Since: &down, Flaps: 2, LastError: "hold_timer_expired"},
			}}, nil
	})
	st, err := Dial(path).BGP(context.Background())
	if err != nil || !st.Enabled || len(st.Sessions) != 3 || st.Sessions[0].PrefixesSent != 3 {
		t.Fatalf("BGP = %+v, %v", st, err)
	}
	stdout.Reset()
	if code := RunBGP([]string{"-s", path}, &stdout, &stderr); code != ExitOK {
		t.Fatalf("code %d %s", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"asn 65001, router id 192.0.2.1, next hop fd00:53::1: 3 prefixes announced (2 delegated, 1 aggregates)",
		"PEER        ASN    STATE        UP/DOWN                     SENT  RECEIVED  UPDATES-SENT  FLAPS  GR   LAST-ERROR",
		"fd00:53::2  65000  established  1h30m0s                     3     0         4             0      yes  -",
		"fd00:53::3  65000  active       never                       0     0         0             0      no   -",
		"fd00:53::4  65002  idle         since 2026-01-02T03:04:05Z  0     0         0             2      no   hold_timer_expired",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("no line %q in:\n%s", want, out)
		}
	}
	stdout.Reset()
	if code := RunBGP([]string{"--json", "-s", path}, &stdout, &stderr); code != ExitOK {
		t.Fatalf("--json: code %d %s", code, stderr.String())
	}
	var got struct {
		Enabled  bool `json:"enabled"`
		Sessions []struct {
			Peer          string `json:"peer"`
			State         string `json:"state"`
			UptimeSeconds int64  `json:"uptime_seconds"`
			PrefixesSent  uint64 `json:"prefixes_sent"`
			Since         string `json:"since"`
		} `json:"sessions"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil || !got.Enabled || got.Sessions[0].UptimeSeconds != 5400 ||
		got.Sessions[0].PrefixesSent != 3 || got.Sessions[2].Since != "2026-01-02T03:04:05Z" || got.Sessions[1].Since != "" {
		t.Fatalf("--json output %s: %v", stdout.String(), err)
	}

	// A speaker that cannot answer: 503, exit 1.
	failing := serveBGP(t, func(context.Context) (BGPStatusJSON, error) { return BGPStatusJSON{}, errors.New("bgp server stopped") })
	stderr.Reset()
	if code := RunBGP([]string{"-s", failing}, &stdout, &stderr); code != ExitError || !strings.Contains(stderr.String(), "bgp server stopped (HTTP 503)") {
		t.Fatalf("failing source: code %d err %q", code, stderr.String())
	}
	if code := RunBGP([]string{"-s", path, "extra"}, &stdout, &stderr); code != ExitUsage {
		t.Fatalf("extra argument: code %d", code)
	}
}
