package store

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
)

const (
	helperPath     = "PDRELAY_STORE_HELPER_PATH"
	helperMaxBatch = "PDRELAY_STORE_HELPER_MAXBATCH"
)

// TestHelperProcess is the child of TestCrashKill: it opens the store,
// continues the sequence testBinding(0), testBinding(1), ... after the
// highest index stored, Puts as fast as it is allowed while the
// background flush commits, and prints "committed N" as commits complete.
// It runs until it is killed.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(helperPath)
	if path == "" {
		t.Skip("child process of TestCrashKill")
	}
	maxBatch, _ := strconv.Atoi(os.Getenv(helperMaxBatch))
	s, err := OpenWithOptions(path, nil, Options{FlushInterval: 5 * time.Millisecond, MaxBatch: maxBatch})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	next := 0
	if _, err := s.Load(func(b binding.Binding) error {
		next = max(next, bindingIndex(b)+1)
		return nil
	}); err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	go func() {
		for {
			fmt.Printf("committed %d\n", s.Stats().WritesCommitted)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	for i := next; i < 1<<24; i++ {
		if err := s.Put(testBinding(i)); err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		if i%100 == 0 {
			time.Sleep(time.Millisecond) // about 100,000 Puts a second
		}
	}
	os.Exit(3)
}

// TestCrashKill SIGKILLs a process that writes bindings continuously, at a
// random moment after its first commits, several times over one file. Each
// time the file must open without being moved aside, every record must
// decode, everything the child reported committed must be there, and the
// older bindings must be untouched. When every flush is one transaction
// the child's bindings must be an exact prefix of its sequence; when
// flushes are split into transactions of 50 a crash may keep part of
// the batch being committed.
func TestCrashKill(t *testing.T) {
	path := tempStore(t)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	prev := map[int]bool{}
	prevNext := 0
	rounds := 6
	if testing.Short() {
		rounds = 2
	}
	for round := range rounds {
		chunked := round%2 == 1
		maxBatch := 1 << 30
		if chunked {
			maxBatch = 50
		}
		delay := time.Duration(50+rng.IntN(250)) * time.Millisecond
		reported, out := runAndKill(t, path, maxBatch, delay)

		s, lb := openT(t, path, Options{})
		if aside := corruptFiles(t, path); len(aside) != 0 {
			t.Fatalf("round %d: store moved aside after SIGKILL: %v\nlog:\n%s", round, aside, lb)
		}
		loaded := map[int]bool{}
		skipped, err := s.Load(func(b binding.Binding) error {
			i := bindingIndex(b)
			if !equal(b, testBinding(i)) {
				t.Errorf("round %d: loaded %s, want %s", round, show(b), show(testBinding(i)))
			}
			loaded[i] = true
			return nil
		})
		if err != nil || skipped != 0 {
			t.Fatalf("round %d: Load: %v, %d skipped", round, err, skipped)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}

		var fresh []int
		for i := range loaded {
			if i >= prevNext {
				fresh = append(fresh, i)
			} else if !prev[i] {
				t.Errorf("round %d: binding %d from an earlier round appeared", round, i)
			}
		}
		for i := range prev {
			if !loaded[i] {
				t.Errorf("round %d: binding %d from an earlier round lost", round, i)
			}
		}
		if len(fresh) < reported {
			t.Errorf("round %d: child reported %d committed, store holds %d of its bindings\nchild output tail:\n%s",
				round, reported, len(fresh), out)
		}
		maxFresh := prevNext - 1
		for _, i := range fresh {
			maxFresh = max(maxFresh, i)
		}
		if !chunked && maxFresh-prevNext+1 != len(fresh) {
			t.Errorf("round %d: child's bindings %d..%d are not a prefix: %d of them stored",
				round, prevNext, maxFresh, len(fresh))
		}
		t.Logf("round %d (max batch %d): killed after %v; child reported %d committed, store holds %d new (%d in all)",
			round, maxBatch, delay, reported, len(fresh), len(loaded))
		prev, prevNext = loaded, maxFresh+1
	}
}

// runAndKill runs TestHelperProcess on path, waits for its first commit,
// then for delay, SIGKILLs it and returns the highest committed count it
// reported and the tail of its output.
func runAndKill(t *testing.T, path string, maxBatch int, delay time.Duration) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperPath+"="+path, helperMaxBatch+"="+strconv.Itoa(maxBatch))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	first := make(chan struct{})
	type result struct {
		reported int
		tail     []string
	}
	done := make(chan result)
	go func() {
		var r result
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			r.tail = append(r.tail, line)
			if len(r.tail) > 5 {
				r.tail = r.tail[1:]
			}
			if n, ok := strings.CutPrefix(line, "committed "); ok {
				v, _ := strconv.Atoi(n)
				if v > 0 && r.reported == 0 {
					close(first)
				}
				r.reported = max(r.reported, v)
			}
		}
		done <- r
	}()
	select {
	case <-first:
		time.Sleep(delay)
	case <-time.After(30 * time.Second):
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	r := <-done
	werr := cmd.Wait()
	if r.reported == 0 {
		t.Fatalf("child never committed (exit %v); stderr:\n%s\nstdout tail:\n%s",
			werr, stderr.String(), strings.Join(r.tail, "\n"))
	}
	if ws, ok := cmd.ProcessState.Sys().(interface{ Signaled() bool }); !ok || !ws.Signaled() {
		t.Fatalf("child exited by itself: %v; stderr:\n%s\nstdout tail:\n%s",
			werr, stderr.String(), strings.Join(r.tail, "\n"))
	}
	return r.reported, strings.Join(r.tail, "\n")
}
