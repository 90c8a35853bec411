package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cpuPeriod is the CFS period of LimitCPU's quota: short, so that a
// throttled process waits milliseconds, not a tenth of a second.
const cpuPeriod = 10 * time.Millisecond

// CPULimitAvailable reports why LimitCPU cannot work here (nil if it
// can): not root, or no cgroup cpu controller that new cgroups get
// (cgroup v2 with "cpu" in the root's cgroup.subtree_control, or v1's
// cpu hierarchy). It changes nothing: enabling a controller is the
// host's business.
func CPULimitAvailable() error {
	if os.Geteuid() != 0 {
		return errors.New("lab: a cpu limit needs root (cgroups)")
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.subtree_control"); err == nil {
		for _, c := range strings.Fields(string(b)) {
			if c == "cpu" {
				return nil
			}
		}
		return errors.New("lab: cgroup v2 without the cpu controller in /sys/fs/cgroup/cgroup.subtree_control")
	}
	if _, err := os.Stat("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"); err != nil {
		return fmt.Errorf("lab: no cgroup cpu controller: %w", err)
	}
	return nil
}

// LimitCPU caps process pid at share of one CPU (0 < share <= 1) with a
// CFS quota in a cgroup of its own, under the cgroup v2 hierarchy at
// /sys/fs/cgroup or, failing that, v1's cpu controller at
// /sys/fs/cgroup/cpu. A process that needs more than share waits: its
// throughput then is share times what a whole CPU gives it. undo moves
// pid back (if it still runs) and removes the cgroup.
func LimitCPU(pid int, share float64) (undo func() error, err error) {
	if share <= 0 || share > 1 {
		return nil, fmt.Errorf("lab: cpu share %v not in (0, 1]", share)
	}
	quota := int64(share * float64(cpuPeriod/time.Microsecond))
	name := fmt.Sprintf("pdrelay-lab-%d", pid)
	type hier struct {
		root  string
		limit [][2]string // file, value
	}
	if err := CPULimitAvailable(); err != nil {
		return nil, err
	}
	var h hier
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		h = hier{root: "/sys/fs/cgroup", limit: [][2]string{{"cpu.max", fmt.Sprintf("%d %d", quota, cpuPeriod/time.Microsecond)}}}
	} else {
		h = hier{root: "/sys/fs/cgroup/cpu", limit: [][2]string{
			{"cpu.cfs_period_us", strconv.FormatInt(int64(cpuPeriod/time.Microsecond), 10)},
			{"cpu.cfs_quota_us", strconv.FormatInt(quota, 10)},
		}}
	}
	dir := filepath.Join(h.root, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lab: cgroup: %w", err)
	}
	undo = func() error {
		// Back to the parent, so the directory can go.
		_ = os.WriteFile(filepath.Join(h.root, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
		var err error
		for range 50 { // rmdir fails while an exiting task is still counted
			if err = os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
				return nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		return fmt.Errorf("lab: cgroup: %w", err)
	}
	for _, l := range h.limit {
		if err := os.WriteFile(filepath.Join(dir, l[0]), []byte(l[1]), 0); err != nil {
			_ = undo()
			return nil, fmt.Errorf("lab: cgroup %s: %w (is the cpu controller enabled?)", l[0], err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		_ = undo()
		return nil, fmt.Errorf("lab: cgroup: move %d: %w", pid, err)
	}
	return undo, nil
}
