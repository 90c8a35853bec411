package api

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// ErrSocketInUse is returned by Listen when a live process already answers
// on the socket path.
var ErrSocketInUse = errors.New("socket in use by a running process")

// maxSocketPath is the longest path a unix socket address holds.
const maxSocketPath = 107

// Listen creates the operator socket at path with mode 0600, so that only
// its owner (root) may connect: the API can clear every binding. It creates
// the parent directory if needed and removes a stale socket left by a
// process that died, but refuses a path that is not a socket or that a
// live process still answers on. Closing the listener removes the socket.
func Listen(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	// Bind inside a private directory, set the mode, then move the socket
	// into place: no one can connect while its mode is still the umask's.
	priv, err := os.MkdirTemp(dir, ".pdrelay")
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	defer os.Remove(priv)
	bindAt := filepath.Join(priv, "s")
	if len(bindAt) > maxSocketPath {
		bindAt = path // no room: bind in place, then set the mode
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: bindAt, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	l := &unixListener{UnixListener: ln, path: path}
	if err := os.Chmod(bindAt, 0o600); err != nil {
		os.Remove(bindAt)
		ln.Close()
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if bindAt != path {
		if err := os.Rename(bindAt, path); err != nil {
			os.Remove(bindAt)
			ln.Close()
			return nil, fmt.Errorf("listen on %s: %w", path, err)
		}
	}
	return l, nil
}

// removeStale removes a socket at path that nothing listens on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listen on %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("listen on %s: the path exists and is not a socket; not removing it", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("listen on %s: %w (is pdrelay already running?)", path, ErrSocketInUse)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}

// unixListener removes its socket file when closed.
type unixListener struct {
	*net.UnixListener
	path string
	once sync.Once
	err  error
}

func (l *unixListener) Close() error {
	l.once.Do(func() {
		l.err = l.UnixListener.Close()
		os.Remove(l.path)
	})
	return l.err
}

// Addr reports the socket's final path, not where it was bound.
func (l *unixListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }
