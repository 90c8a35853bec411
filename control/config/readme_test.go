package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadmeExample checks that the README's example config is
// testdata/example.yaml byte for byte, so that the config operators copy
// is the one TestLoadExample parses. The README holds exactly one
// ```yaml block; a second one, or none, fails too.
func TestReadmeExample(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile(filepath.Join("testdata", "example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := yamlBlocks(string(readme))
	if len(blocks) != 1 {
		t.Fatalf("README.md has %d ```yaml blocks, want exactly 1 (the example config)", len(blocks))
	}
	got := []byte(blocks[0])
	if bytes.Equal(got, example) {
		return
	}
	gl := strings.Split(string(got), "\n")
	wl := strings.Split(string(example), "\n")
	for i := 0; i < max(len(gl), len(wl)); i++ {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			t.Fatalf("README.md's yaml block differs from testdata/example.yaml at line %d of the block:\n README:  %q\n example: %q", i+1, g, w)
		}
	}
	t.Fatalf("README.md's yaml block differs from testdata/example.yaml (%d bytes against %d)", len(got), len(example))
}

// yamlBlocks returns the content of each fenced ```yaml block in a
// Markdown text, every line with its newline.
func yamlBlocks(md string) []string {
	var blocks []string
	var cur strings.Builder
	in := false
	for _, line := range strings.SplitAfter(md, "\n") {
		fence := strings.TrimRight(line, "\n")
		switch {
		case !in && fence == "```yaml":
			in = true
			cur.Reset()
		case in && fence == "```":
			in = false
			blocks = append(blocks, cur.String())
		case in:
			cur.WriteString(line)
		}
	}
	return blocks
}
