package fwd

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Binaries builds pdrelay, fakekea and, when its source is in the tree,
// xskfwd from the module at root into dir. Xskfwd is "" when
// bench/cmd/xskfwd does not exist: the ceiling side is then skipped.
func Binaries(root, dir string) (pdrelay, fakekea, xskfwd string, err error) {
	build := func(name, pkg string) (string, error) {
		out := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("fwd: go build %s: %v\n%s", pkg, err, b)
		}
		return out, nil
	}
	if pdrelay, err = build("pdrelay", "./cmd/pdrelay"); err != nil {
		return
	}
	if fakekea, err = build("fakekea", "./bench/cmd/fakekea"); err != nil {
		return
	}
	if _, serr := os.Stat(filepath.Join(root, "bench", "cmd", "xskfwd")); serr == nil {
		xskfwd, err = build("xskfwd", "./bench/cmd/xskfwd")
	}
	return
}
