package fwd

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Binaries builds pdrelay, fakekea and, when their sources are in the
// tree, xskfwd and xdpfast from the module at root into dir. Xskfwd or
// xdpfast is "" when its command does not exist: its side is then
// skipped.
func Binaries(root, dir string) (pdrelay, fakekea, xskfwd, xdpfast string, err error) {
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
		if xskfwd, err = build("xskfwd", "./bench/cmd/xskfwd"); err != nil {
			return
		}
	}
	if _, serr := os.Stat(filepath.Join(root, "bench", "cmd", "xdpfast")); serr == nil {
		xdpfast, err = build("xdpfast", "./bench/cmd/xdpfast")
	}
	return
}
