package lab

import (
	"path/filepath"
	"testing"
)

// Require skips the test, with the reason, unless labs can be built here
// and the named binaries (for example "kea-dhcp6", "dhclient", "dhcpcd",
// "dhcrelay") are installed.
func Require(t testing.TB, bins ...string) {
	t.Helper()
	if err := Available(bins...); err != nil {
		t.Skipf("skipping lab test: %v", err)
	}
}

// NewT builds a Lab for a test: it skips the test when labs cannot be
// built (see Require), fails it when building fails, and registers Close
// with t.Cleanup. When the test has failed, the tail of every process log
// is logged before the Lab goes.
func NewT(t testing.TB, cfg Config) *Lab {
	t.Helper()
	Require(t)
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	l, err := New(cfg)
	if err != nil {
		t.Fatalf("lab.New: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range l.Procs() {
				t.Logf("--- %s (%s) log tail ---\n%s", p.Name, filepath.Base(p.LogPath), tail(p.Log(), 40))
			}
		}
		if err := l.Close(); err != nil {
			t.Errorf("lab.Close: %v", err)
		}
	})
	return l
}
