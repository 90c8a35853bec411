package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/pdrelay/pdrelay/control/api"
)

// Pdrelay is a pdrelay process running in the Lab's relay namespace, with
// its config, state and operator socket in its own directory.
type Pdrelay struct {
	Bin    string // the binary
	Dir    string
	Config string // path of the YAML config
	Socket string // api_socket
	Proc   *Proc  // the running process; replaced by Restart

	l   *Lab
	run PdrelayRun
}

// PdrelayRun is how a Pdrelay's process runs, on every start.
type PdrelayRun struct {
	Env []string // "KEY=value", added to the process's environment
	// CPUs, when set, is the taskset list (such as "1" or "2-3") the
	// process runs on from its first instruction, so the Go runtime
	// sizes GOMAXPROCS to it.
	CPUs string
}

// PdrelayConfig returns a config for the Lab: Kea's address as the server,
// up0 as uplink, every dl<i> as a point-to-point downlink, state and socket
// under $DIR (StartPdrelay's directory). extra is YAML appended at the top
// level (for example metrics_listen), and perPort is appended inside every
// downlink entry (indented by the caller, 4 spaces). It is
// PdrelayConfigWith with LinkType point-to-point.
func (l *Lab) PdrelayConfig(extra, perPort string) string {
	return l.PdrelayConfigWith(PdrelayConfigOptions{Extra: extra, PerPort: perPort, LinkType: "point-to-point"})
}

// PdrelayConfigOptions parameterises PdrelayConfigWith.
type PdrelayConfigOptions struct {
	// Extra is YAML appended at the top level (for example metrics_listen).
	Extra string
	// PerPort is appended inside every downlink entry (indented by the
	// caller, 4 spaces); it must not set link_type.
	PerPort string
	// LinkType is every downlink's link_type: "point-to-point" or
	// "multi-access". Empty: multi-access if the Lab has SharedSegment,
	// else point-to-point.
	LinkType string
	// Ports are the downlinks (indexes into Lab.Downlinks) the config
	// names; nil: all of them.
	Ports []int
	// LogLevel is log_level; empty: debug (the benchmarks use info, as
	// an operator runs it).
	LogLevel string
}

// PdrelayConfigWith is PdrelayConfig with the downlinks' link_type chosen
// by o.LinkType.
func (l *Lab) PdrelayConfigWith(o PdrelayConfigOptions) string {
	lt := o.LinkType
	if lt == "" {
		lt = "point-to-point"
		if l.cfg.SharedSegment {
			lt = "multi-access"
		}
	}
	level := o.LogLevel
	if level == "" {
		level = "debug"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "state_dir: $DIR/state\napi_socket: $DIR/api.sock\nlog_level: %s\n", level)
	fmt.Fprintf(&b, "servers: [%s]\nuplink:\n  interface: %s\ndownlinks:\n", ServerAddr, l.Uplink.Name)
	for i, d := range l.Downlinks {
		if o.Ports != nil && !slices.Contains(o.Ports, i) {
			continue
		}
		fmt.Fprintf(&b, "  - interface: %s\n    link_type: %s\n%s", d.Name, lt, o.PerPort)
	}
	b.WriteString(o.Extra)
	return b.String()
}

// StartPdrelay writes config (see PdrelayConfig; $DIR is replaced) to a
// new directory under the Lab's and starts bin with it in the relay
// namespace. It returns once
// the operator API answers.
func (l *Lab) StartPdrelay(bin, config string) (*Pdrelay, error) {
	return l.StartPdrelayEnv(bin, config)
}

// StartPdrelayEnv is StartPdrelay with env ("KEY=value") added to the
// relay's environment, on every start.
func (l *Lab) StartPdrelayEnv(bin, config string, env ...string) (*Pdrelay, error) {
	return l.StartPdrelayWith(bin, config, PdrelayRun{Env: env})
}

// StartPdrelayWith is StartPdrelay with the process run as r says.
func (l *Lab) StartPdrelayWith(bin, config string, r PdrelayRun) (*Pdrelay, error) {
	dir, err := os.MkdirTemp(l.Dir, "pdrelay-")
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	config = strings.ReplaceAll(config, "$DIR", dir)
	p := &Pdrelay{Bin: bin, Dir: dir, Config: filepath.Join(dir, "pdrelay.yaml"), Socket: filepath.Join(dir, "api.sock"), l: l, run: r}
	if err := os.WriteFile(p.Config, []byte(config), 0o600); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	return p, p.start()
}

func (p *Pdrelay) start() error {
	proc, err := p.l.start(p.l.RelayNS, "pdrelay", p.run.Env, onCPUs(p.run.CPUs, p.Bin, "run", "-c", p.Config)...)
	if err != nil {
		return err
	}
	p.Proc = proc
	if err := proc.WaitLog("pdrelay started", 10*time.Second); err != nil {
		return err
	}
	// A socket left by a killed relay exists before the new one listens:
	// wait for an answer, not for the file.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := api.Dial(p.Socket).Bindings(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if proc.Exited() || time.Now().After(deadline) {
			return fmt.Errorf("lab: pdrelay API at %s does not answer: %v\n%s", p.Socket, err, tail(proc.Log(), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WriteConfig replaces the relay's config file ($DIR is replaced), for a
// reload.
func (p *Pdrelay) WriteConfig(config string) error {
	config = strings.ReplaceAll(config, "$DIR", p.Dir)
	if err := os.WriteFile(p.Config, []byte(config), 0o600); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	return nil
}

// Restart stops the relay with sig (SIGTERM: graceful; SIGKILL: a crash)
// and starts it again with the same config and state.
func (p *Pdrelay) Restart(sig syscall.Signal) error {
	if err := p.Stop(sig); err != nil {
		return err
	}
	return p.start()
}

// Stop stops the relay with sig and waits for it to exit; Start starts
// it again. In between a test may change its state (StateDir).
func (p *Pdrelay) Stop(sig syscall.Signal) error {
	if err := p.Proc.Signal(sig); err != nil {
		return err
	}
	if err := p.Proc.Wait(10 * time.Second); err != nil && !p.Proc.Exited() {
		return err
	}
	return nil
}

// Start starts a stopped relay again with the same config and state, and
// returns once the operator API answers.
func (p *Pdrelay) Start() error { return p.start() }

// StateDir is the relay's state_dir with a config from PdrelayConfig.
func (p *Pdrelay) StateDir() string { return filepath.Join(p.Dir, "state") }

// CLI runs an operator command of the binary against this relay's socket.
func (p *Pdrelay) CLI(args ...string) (string, error) {
	out, err := exec.Command(p.Bin, append(args, "-s", p.Socket)...).CombinedOutput()
	return string(out), err
}

// Bindings lists the relay's bindings through the operator API.
func (p *Pdrelay) Bindings() ([]api.BindingJSON, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return api.Dial(p.Socket).Bindings(ctx)
}

// Metrics fetches /metrics from addr (host:port inside the relay
// namespace) with bash's /dev/tcp, since the listener is only reachable
// there.
func (p *Pdrelay) Metrics(addr string) (string, error) {
	host, port, ok := strings.Cut(addr, ":")
	if !ok {
		return "", errors.New("lab: metrics address needs host:port")
	}
	script := fmt.Sprintf(`exec 3<>/dev/tcp/%s/%s && printf 'GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n' >&3 && cat <&3`, host, port)
	out, err := p.l.Exec(p.l.RelayNS, "bash", "-c", script).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("lab: GET /metrics: %v: %s", err, out)
	}
	return string(out), nil
}
