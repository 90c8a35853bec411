package lab

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is a long-running process the Lab started in one of its namespaces.
// Its stdout and stderr go to LogPath. Close stops it.
type Proc struct {
	Name    string // short name, also the log file's stem
	NS      string // namespace it runs in
	LogPath string
	Cmd     *exec.Cmd

	done    chan struct{}
	waitErr error
}

// Start runs args in namespace ns in the background, logging to
// <Dir>/<name>.log. The process is stopped by Close (or by Proc.Stop).
func (l *Lab) Start(ns, name string, args ...string) (*Proc, error) {
	return l.start(ns, name, nil, args...)
}

// Pin pins every thread of process pid to cpus, a taskset list; threads
// it starts later inherit the mask.
func Pin(pid int, cpus string) error {
	if out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, strconv.Itoa(pid)).CombinedOutput(); err != nil {
		return fmt.Errorf("lab: taskset %d: %v: %s", pid, err, bytes.TrimSpace(out))
	}
	return nil
}

// onCPUs returns the command args run on cpus, a taskset list (util-linux
// taskset sets the affinity, then execs args); args alone if cpus is "".
func onCPUs(cpus string, args ...string) []string {
	if cpus == "" {
		return args
	}
	return append([]string{"taskset", "-c", cpus}, args...)
}

func (l *Lab) start(ns, name string, env []string, args ...string) (*Proc, error) {
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return nil, errors.New("lab: closed")
	}
	logPath := filepath.Join(l.Dir, name+".log")
	for i := 2; ; i++ {
		if _, err := os.Stat(logPath); errors.Is(err, os.ErrNotExist) {
			break
		}
		logPath = filepath.Join(l.Dir, fmt.Sprintf("%s-%d.log", name, i))
	}
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	cmd := l.Exec(ns, args...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.Dir = l.Dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	// Own process group, and killed if the test binary dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("lab: start %s: %w", name, err)
	}
	p := &Proc{Name: name, NS: ns, LogPath: logPath, Cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	l.logf("lab %s: started %s (pid %d) in %s: %s", l.ID, name, cmd.Process.Pid, ns, strings.Join(args, " "))
	return p, nil
}

// Pid is the process id. `ip netns exec` execs the command, so this is the
// command's own pid.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return errors.New("lab: " + p.Name + " has exited")
	}
	return p.Cmd.Process.Signal(sig)
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process ends.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits up to timeout for the process to end and returns its exit
// error (nil for status 0).
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.waitErr
	case <-time.After(timeout):
		return fmt.Errorf("lab: %s still running after %v", p.Name, timeout)
	}
}

// Stop sends SIGTERM to the process group, waits up to 3 s, then SIGKILLs
// it. It returns nil once the process is gone.
func (p *Proc) Stop() error {
	if p.Exited() {
		return nil
	}
	pid := p.Cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(3 * time.Second):
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(3 * time.Second):
		return fmt.Errorf("lab: %s (pid %d) did not die", p.Name, pid)
	}
}

// Log returns what the process has written so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// LogTail returns the last n lines of the log, for an error message.
func (p *Proc) LogTail(n int) string { return tail(p.Log(), n) }

// WaitLog waits until the log contains substr.
func (p *Proc) WaitLog(substr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if strings.Contains(p.Log(), substr) {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("lab: %s exited (%v) before logging %q; log:\n%s", p.Name, p.waitErr, substr, tail(p.Log(), 20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: %s did not log %q within %v; log:\n%s", p.Name, substr, timeout, tail(p.Log(), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CPUTime is the CPU time (user and system, all threads) the process has
// used so far, from /proc/PID/stat, in clock ticks of 10 ms.
func (p *Proc) CPUTime() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid()))
	if err != nil {
		return 0, err
	}
	// pid (comm) state ppid ...: utime and stime are the 12th and 13th
	// fields after comm's closing parenthesis (comm may hold spaces).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("lab: %s: short /proc stat %q", p.Name, s)
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("lab: %s: /proc stat: %w", p.Name, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil // USER_HZ 100
}

// WaitIdle waits until the process uses less than share of a core over
// a whole interval (its start-up work done), for up to timeout.
func (p *Proc) WaitIdle(share float64, interval, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last, err := p.CPUTime()
	if err != nil {
		return err
	}
	for {
		time.Sleep(interval)
		now, err := p.CPUTime()
		if err != nil {
			return err
		}
		if used := now - last; float64(used) < share*float64(interval) {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("lab: %s exited (%v) before going idle", p.Name, p.waitErr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: %s still busy (%v of CPU in the last %v) after %v", p.Name, now-last, interval, timeout)
		}
		last = now
	}
}

// Procs returns the processes started so far, oldest first.
func (l *Lab) Procs() []*Proc {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Proc(nil), l.procs...)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitUDP waits until something in namespace ns has a UDP (IPv6 or IPv4)
// socket bound to port.
func (l *Lab) WaitUDP(ns string, port int, timeout time.Duration, alive *Proc) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := l.udpBound(ns, port)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if alive != nil && alive.Exited() {
			return fmt.Errorf("lab: %s exited (%v) before binding UDP %d; log:\n%s", alive.Name, alive.waitErr, port, tail(alive.Log(), 20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: nothing bound UDP port %d in %s within %v", port, ns, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (l *Lab) udpBound(ns string, port int) (bool, error) {
	out, err := l.Exec(ns, "cat", "/proc/net/udp6", "/proc/net/udp").Output()
	if err != nil && len(out) == 0 {
		return false, fmt.Errorf("lab: reading /proc/net/udp6 in %s: %w", ns, err)
	}
	want := fmt.Sprintf(":%04X", port)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 2 && strings.HasSuffix(f[1], want) {
			return true, nil
		}
	}
	return false, nil
}

func itoa(i int) string { return strconv.Itoa(i) }

// CPUs returns the CPUs the process may run on, as /proc lists them
// (Cpus_allowed_list, such as "1" or "0-1").
func (p *Proc) CPUs() (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("lab: %s: no Cpus_allowed_list in /proc status", p.Name)
}
