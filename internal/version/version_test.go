package version

import (
	"runtime"
	"strings"
	"testing"
)

func TestGet(t *testing.T) {
	i := Get()
	if i.Version == "" || i.Commit == "" || i.Go != runtime.Version() {
		t.Fatalf("Get() = %+v", i)
	}
	if s := i.String(); !strings.HasPrefix(s, "pdrelay "+i.Version+" (commit ") || !strings.Contains(s, i.Go) {
		t.Errorf("String() = %q", s)
	}
}

func TestString(t *testing.T) {
	i := Info{Version: "v1.2.3", Commit: "0123456789abcdef0123", Modified: true, Go: "go1.26"}
	if got, want := i.String(), "pdrelay v1.2.3 (commit 0123456789ab, modified, go1.26)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
