// Package version says which pdrelay is running: the release version,
// set at build time (`make build` passes `git describe`), and the commit
// and Go version, read from the build information the Go toolchain
// stamps into every binary built from a git checkout.
//
// Its functions are safe for concurrent use.
package version

import (
	"runtime"
	"runtime/debug"
	"sync"
)

// version and commit are set with -ldflags "-X
// github.com/pdrelay/pdrelay/internal/version.version=v1.2.3" (and
// .commit=...), as `make build` does: the toolchain's own VCS stamp is
// off where GOFLAGS holds -buildvcs=false.
var version, commit = "", ""

// Info is what `pdrelay version` prints and pdrelay_build_info labels.
type Info struct {
	Version  string `json:"version"`  // the release, or "devel"
	Commit   string `json:"commit"`   // the git commit, or "unknown"
	Modified bool   `json:"modified"` // built from a tree with uncommitted changes
	Go       string `json:"go"`       // the Go toolchain
}

var get = sync.OnceValue(func() Info {
	info := Info{Version: version, Commit: commit, Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if info.Commit == "" {
					info.Commit = s.Value
				}
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version // go install module@version
		}
	}
	if info.Version == "" {
		info.Version = "devel"
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	return info
})

// Get returns the running binary's version information.
func Get() Info { return get() }

// String is the one-line form: "pdrelay VERSION (commit C[, modified], GO)".
func (i Info) String() string {
	c := i.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	if i.Modified {
		c += ", modified"
	}
	return "pdrelay " + i.Version + " (commit " + c + ", " + i.Go + ")"
}
