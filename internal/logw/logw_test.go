package logw

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// calls records each Write it is given.
type calls struct {
	mu  sync.Mutex
	got []string
}

func (c *calls) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, string(p))
	return len(p), nil
}

func TestPassThrough(t *testing.T) {
	var c calls
	w := New(&c)
	fmt.Fprint(w, "a\n")
	fmt.Fprint(w, "b\n")
	if want := []string{"a\n", "b\n"}; fmt.Sprint(c.got) != fmt.Sprint(want) {
		t.Errorf("writes %q, want %q", c.got, want)
	}
}

func TestHoldRelease(t *testing.T) {
	var c calls
	w := New(&c)
	fmt.Fprint(w, "before\n")
	w.Hold()
	w.Hold() // nested
	for i := range 3 {
		fmt.Fprintf(w, "line %d\n", i)
	}
	w.Release()
	if len(c.got) != 1 {
		t.Fatalf("inner Release wrote: %q", c.got)
	}
	w.Release()
	want := []string{"before\n", "line 0\nline 1\nline 2\n"}
	if fmt.Sprint(c.got) != fmt.Sprint(want) {
		t.Errorf("writes %q, want %q", c.got, want)
	}
	w.Release() // an extra Release is harmless
	fmt.Fprint(w, "after\n")
	if c.got[len(c.got)-1] != "after\n" {
		t.Errorf("not passed through after the last Release: %q", c.got)
	}
}

// TestOverflow: past MaxHeld the kept bytes go out, in order, before the
// Write that would pass it.
func TestOverflow(t *testing.T) {
	var c calls
	w := New(&c)
	w.Hold()
	line := strings.Repeat("x", 1023) + "\n"
	n := MaxHeld/len(line) + 3
	for range n {
		w.Write([]byte(line))
	}
	if len(c.got) == 0 {
		t.Fatal("nothing written past MaxHeld")
	}
	w.Release()
	var all bytes.Buffer
	for _, g := range c.got {
		if len(g) > MaxHeld+len(line) {
			t.Errorf("a write of %d bytes", len(g))
		}
		all.WriteString(g)
	}
	if all.String() != strings.Repeat(line, n) {
		t.Errorf("%d bytes written in %d calls, want %d lines in order", all.Len(), len(c.got), n)
	}
}

// TestConcurrent: Writes from other goroutines during a Hold are kept
// whole, and nothing is lost.
func TestConcurrent(t *testing.T) {
	var c calls
	w := New(&c)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				if i%50 == 0 {
					w.Hold()
					defer w.Release()
				}
				fmt.Fprintf(w, "g%d i%d\n", g, i)
			}
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(strings.Join(c.got, ""), "\n"), "\n")
	if len(lines) != 800 {
		t.Fatalf("%d lines, want 800", len(lines))
	}
	next := map[string]int{}
	for _, l := range lines {
		var g, i int
		if _, err := fmt.Sscanf(l, "g%d i%d", &g, &i); err != nil {
			t.Fatalf("line %q torn", l)
		}
		k := fmt.Sprint(g)
		if i != next[k] {
			t.Fatalf("goroutine %d: line %d after %d", g, i, next[k]-1)
		}
		next[k]++
	}
}
