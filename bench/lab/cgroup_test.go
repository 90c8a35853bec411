package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLimitCPU caps a busy loop at a quarter of a CPU and checks that it
// lands in the cgroup, gets about that share of CPU time, and that undo
// removes the cgroup.
func TestLimitCPU(t *testing.T) {
	if err := CPULimitAvailable(); err != nil {
		t.Skip(err)
	}
	cmd := exec.Command("sh", "-c", "while :; do :; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	p := &Proc{Name: "busy", Cmd: cmd}
	undo, err := LimitCPU(cmd.Process.Pid, 0.25)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = undo() }) // after a Fatal too; a second undo does nothing
	cg, err := os.ReadFile(filepath.Join("/proc", itoa(cmd.Process.Pid), "cgroup"))
	if err != nil {
		t.Fatal(err)
	}
	name := "pdrelay-lab-" + itoa(cmd.Process.Pid)
	if !strings.Contains(string(cg), name) {
		t.Fatalf("process not in cgroup %s:\n%s", name, cg)
	}
	c0, err := p.CPUTime()
	if err != nil {
		t.Fatal(err)
	}
	const span = time.Second
	time.Sleep(span)
	c1, err := p.CPUTime()
	if err != nil {
		t.Fatal(err)
	}
	// A quarter of a second, give or take the clock ticks and a slow
	// machine; without the cap the loop takes most of a second.
	if used := c1 - c0; used > span/2 || used < span/20 {
		t.Errorf("capped at 0.25 of a cpu, the loop used %v in %v", used, span)
	}
	if err := undo(); err != nil {
		t.Fatal(err)
	}
	for _, root := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/cpu"} {
		if _, err := os.Stat(filepath.Join(root, name)); err == nil {
			t.Errorf("cgroup %s left under %s", name, root)
		}
	}
	if _, err := LimitCPU(cmd.Process.Pid, 1.5); err == nil {
		t.Error("share 1.5 accepted")
	}
}
