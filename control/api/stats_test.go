package api

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

func TestStats(t *testing.T) {
	// With the plane off the relay answers an empty list.
	off := serve(t, &fakeBackend{})
	var stdout, stderr bytes.Buffer
	if code := RunStats([]string{"-s", off}, &stdout, &stderr); code != ExitOK || !strings.Contains(stdout.String(), "forwarding plane off") {
		t.Fatalf("plane off: code %d out %q err %q", code, stdout.String(), stderr.String())
	}
	stdout.Reset()
	if code := RunStats([]string{"--json", "-s", off}, &stdout, &stderr); code != ExitOK || strings.TrimSpace(stdout.String()) != "[]" {
		t.Fatalf("plane off --json: code %d out %q", code, stdout.String())
	}

	// With a source: the counters by port and reason, JSON and table.
	path := filepath.Join(t.TempDir(), "api.sock")
	s := NewServer(&fakeBackend{}, testLogger(t))
	s.Stats = func() []PortStatsJSON {
		return []PortStatsJSON{{Interface: "dl0", RxPackets: 7, RxBytes: 455,
			Packets: map[string]uint64{"forwarded": 2, "spoofed": 5, "loop": 0}}}
	}
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.ServeListener(ctx, ln)

	st, err := Dial(path).Stats(context.Background())
	if err != nil || len(st) != 1 || st[0].Packets["spoofed"] != 5 {
		t.Fatalf("Stats = %+v, %v", st, err)
	}
	stdout.Reset()
	if code := RunStats([]string{"--json", "-s", path}, &stdout, &stderr); code != ExitOK {
		t.Fatalf("--json: code %d %s", code, stderr.String())
	}
	var got []map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil || got[0]["interface"] != "dl0" || got[0]["rx_packets"] != 7.0 {
		t.Fatalf("--json output %s: %v", stdout.String(), err)
	}
	stdout.Reset()
	RunStats([]string{"-s", path}, &stdout, &stderr)
	out := stdout.String()
	if !strings.Contains(out, "spoofed") || !strings.Contains(out, "forwarded") || strings.Contains(out, "loop") {
		t.Fatalf("table should list the non-zero reasons only:\n%s", out)
	}
	if code := RunStats([]string{"-s", path, "extra"}, &stdout, &stderr); code != ExitUsage {
		t.Fatalf("extra argument: code %d", code)
	}
}
