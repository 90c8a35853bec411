package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestSystemdUnit checks contrib/pdrelay.service: systemd-analyze accepts
// it, and it grants exactly the capabilities the README lists.
func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile("../../contrib/pdrelay.service")
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for _, line := range strings.Split(string(unit), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			keys[k] = v
		}
	}
	for k, want := range map[string]string{"Type": "notify", "StateDirectory": "pdrelay", "RuntimeDirectory": "pdrelay"} {
		if keys[k] != want {
			t.Errorf("%s=%q, want %q", k, keys[k], want)
		}
	}
	if !strings.Contains(keys["ExecReload"], "pdrelay reload") {
		t.Errorf("ExecReload=%q does not run pdrelay reload", keys["ExecReload"])
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	// The README's requirements name each capability in backquotes.
	var listed []string
	for _, m := range regexp.MustCompile("`(CAP_[A-Z_]+)`").FindAllStringSubmatch(string(readme), -1) {
		listed = append(listed, m[1])
	}
	slices.Sort(listed)
	listed = slices.Compact(listed)
	for _, k := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
		got := strings.Fields(keys[k])
		slices.Sort(got)
		if !slices.Equal(got, listed) {
			t.Errorf("%s = %v, README lists %v", k, got, listed)
		}
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: the unit's syntax is not checked")
	}
	// verify wants the programs to exist: point them at this test binary.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "pdrelay.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/pdrelay", self)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
