package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadmeExample checks that the README's example config is
// testdata/example.yaml byte for byte, and TestConfigReference that
// docs/config.md's is testdata/reference.yaml, so that the configs
// operators copy are the ones TestLoadExample and TestLoadReference
// parse. Each document holds exactly one ```yaml block; a second one, or
// none, fails too.
func TestReadmeExample(t *testing.T) {
	checkYAMLBlock(t, filepath.Join("..", "..", "README.md"), "example.yaml")
}

func TestConfigReference(t *testing.T) {
	checkYAMLBlock(t, filepath.Join("..", "..", "docs", "config.md"), "reference.yaml")
}

func checkYAMLBlock(t *testing.T, doc, testdata string) {
	t.Helper()
	md, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join("testdata", testdata))
	if err != nil {
		t.Fatal(err)
	}
	blocks := yamlBlocks(string(md))
	if len(blocks) != 1 {
		t.Fatalf("%s has %d ```yaml blocks, want exactly 1 (testdata/%s)", doc, len(blocks), testdata)
	}
	got := []byte(blocks[0])
	if bytes.Equal(got, want) {
		return
	}
	gl := strings.Split(string(got), "\n")
	wl := strings.Split(string(want), "\n")
	for i := 0; i < max(len(gl), len(wl)); i++ {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			t.Fatalf("%s's yaml block differs from testdata/%s at line %d of the block:\n doc:      %q\n testdata: %q", doc, testdata, i+1, g, w)
		}
	}
	t.Fatalf("%s's yaml block differs from testdata/%s (%d bytes against %d)", doc, testdata, len(got), len(want))
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
