package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/pdrelay/pdrelay/internal/version"
)

func TestVersionCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"version"}, &out, &errOut); code != 0 {
		t.Fatalf("pdrelay version: exit %d: %s", code, errOut.String())
	}
	if got, want := strings.TrimSpace(out.String()), version.Get().String(); got != want || !strings.HasPrefix(got, "pdrelay ") {
		t.Errorf("pdrelay version printed %q, want %q", got, want)
	}
	out.Reset()
	if code := run([]string{"version", "--json"}, &out, &errOut); code != 0 {
		t.Fatalf("pdrelay version --json: exit %d", code)
	}
	var info version.Info
	if err := json.Unmarshal(out.Bytes(), &info); err != nil || info != version.Get() {
		t.Errorf("pdrelay version --json: %v %+v", err, info)
	}
	if code := run([]string{"version", "extra"}, &out, &errOut); code != 2 {
		t.Errorf("pdrelay version extra: exit %d, want 2", code)
	}
}
