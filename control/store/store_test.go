package store

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	berrors "go.etcd.io/bbolt/errors"

	"github.com/pdrelay/pdrelay/control/binding"
)

// edgeBindings are bindings with the fields at their edges.
func edgeBindings() []binding.Binding {
	var bs []binding.Binding
	for i, edit := range []func(*binding.Binding){
		func(*binding.Binding) {},
		func(b *binding.Binding) { b.MAC = [6]byte{} },
		func(b *binding.Binding) { b.ServerDUID = "" },
		func(b *binding.Binding) { b.IAID = math.MaxUint32 },
		func(b *binding.Binding) { b.Prefix = netip.MustParsePrefix("2001:db8:1:2:3:4:5:6/128") },
		func(b *binding.Binding) { b.Prefix = netip.MustParsePrefix("2001:db8:ff00::/40") },
		func(b *binding.Binding) { b.NextHop = netip.Addr{} },
		func(b *binding.Binding) { b.Updated = time.Time{} },
	} {
		b := testBinding(1000 + i)
		edit(&b)
		bs = append(bs, b)
	}
	// The same client on two ports, and one IA_PD with two prefixes.
	b := testBinding(2000)
	bs = append(bs, b)
	b.Port = "eth-other"
	bs = append(bs, b)
	b.Prefix = netip.MustParsePrefix("2001:db8:aaaa::/48")
	bs = append(bs, b)
	return bs
}

func TestRoundTripReopen(t *testing.T) {
	tests := []struct {
		name string
		bs   []binding.Binding
		opts Options
	}{
		{"empty", nil, Options{}},
		{"edges", edgeBindings(), Options{}},
		{"5000", genBindings(0, 5000), Options{}},
		{"5000 in transactions of 777", genBindings(0, 5000), Options{MaxBatch: 777}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tempStore(t)
			s, _ := openT(t, path, tt.opts)
			for _, b := range tt.bs {
				if err := s.Put(b); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s, _ = openT(t, path, tt.opts)
			got := byKey(t, loadAll(t, s))
			want := byKey(t, tt.bs)
			if len(got) != len(want) {
				t.Fatalf("loaded %d bindings, want %d", len(got), len(want))
			}
			for k, w := range want {
				if g, ok := got[k]; !ok || !equal(g, w) {
					t.Errorf("binding %x:\n got %s\nwant %s", k, show(g), show(w))
				}
			}
			if st := s.Stats(); st.CommitErrors != 0 {
				t.Errorf("commit errors: %+v", st)
			}
		})
	}
}

func genBindings(from, to int) []binding.Binding {
	bs := make([]binding.Binding, 0, to-from)
	for i := from; i < to; i++ {
		bs = append(bs, testBinding(i))
	}
	return bs
}

// op is a write in a sequence.
type op struct {
	del bool
	i   int // testBinding(i)
	exp int // for a put, Expires is moved by exp seconds
}

func TestWriteSequences(t *testing.T) {
	put := func(i int) op { return op{i: i} }
	putv := func(i, v int) op { return op{i: i, exp: v} }
	del := func(i int) op { return op{del: true, i: i} }
	flush := op{i: -1}
	reopen := op{i: -2}
	tests := []struct {
		name string
		ops  []op
		want map[int]int // index -> exp of what must be stored
	}{
		{"put", []op{put(1)}, map[int]int{1: 0}},
		{"put then delete, same batch", []op{put(1), del(1)}, map[int]int{}},
		{"delete then put, same batch", []op{del(1), put(1)}, map[int]int{1: 0}},
		{"put, flush, delete", []op{put(1), flush, del(1)}, map[int]int{}},
		{"put, reopen, delete", []op{put(1), put(2), reopen, del(1)}, map[int]int{2: 0}},
		{"delete missing", []op{del(5)}, map[int]int{}},
		{"last put wins", []op{putv(1, 1), putv(1, 2), putv(1, 3)}, map[int]int{1: 3}},
		{"update across flushes", []op{putv(1, 1), flush, putv(1, 2), flush, putv(1, 3)}, map[int]int{1: 3}},
		{"delete, flush, put", []op{put(1), flush, del(1), flush, putv(1, 9)}, map[int]int{1: 9}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tempStore(t)
			// A long interval: only Flush, Close and reopen commit.
			opts := Options{FlushInterval: time.Hour}
			s, _ := openT(t, path, opts)
			for _, o := range tt.ops {
				var err error
				switch {
				case o.i == -1:
					err = s.Flush()
				case o.i == -2:
					if err = s.Close(); err == nil {
						s, _ = openT(t, path, opts)
					}
				case o.del:
					err = s.Delete(testBinding(o.i).Key)
				default:
					b := testBinding(o.i)
					b.Expires = b.Expires.Add(time.Duration(o.exp) * time.Second)
					err = s.Put(b)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s, _ = openT(t, path, opts)
			got := loadAll(t, s)
			if len(got) != len(tt.want) {
				t.Fatalf("loaded %d bindings, want %d", len(got), len(tt.want))
			}
			for _, g := range got {
				i := bindingIndex(g)
				exp, ok := tt.want[i]
				w := testBinding(i)
				w.Expires = w.Expires.Add(time.Duration(exp) * time.Second)
				if !ok || !equal(g, w) {
					t.Errorf("loaded %s, want %s (listed %v)", show(g), show(w), ok)
				}
			}
		})
	}
}

func TestCoalescingCounts(t *testing.T) {
	s, _ := openT(t, tempStore(t), Options{FlushInterval: time.Hour})
	b := testBinding(1)
	for range 10 {
		if err := s.Put(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(b.Key); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Pending != 1 || st.Coalesced != 10 {
		t.Errorf("before flush: %+v, want 1 pending, 10 coalesced", st)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Pending != 0 || st.WritesCommitted != 1 || st.Commits != 1 || st.LastCommitDuration <= 0 {
		t.Errorf("after flush: %+v, want 0 pending, 1 write in 1 commit", st)
	}
}

func TestBackgroundFlush(t *testing.T) {
	s, _ := openT(t, tempStore(t), Options{FlushInterval: 10 * time.Millisecond})
	if err := s.Put(testBinding(1)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().WritesCommitted == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("not committed after 5 s: %+v", s.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRelayID(t *testing.T) {
	path := tempStore(t)
	s, _ := openT(t, path, Options{})
	if _, err := s.RelayID(); !errors.Is(err, ErrNoRelayID) {
		t.Fatalf("RelayID on a new store: err = %v, want ErrNoRelayID", err)
	}
	for _, bad := range [][]byte{nil, bytes.Repeat([]byte{1}, 131)} {
		if err := s.SetRelayID(bad); err == nil {
			t.Errorf("SetRelayID(%d octets) succeeded", len(bad))
		}
	}
	id := []byte{0, 1, 0, 1, 0x2e, 0x5b, 0x10, 0, 2, 0x42, 0xac, 0x11, 0, 9}
	if err := s.SetRelayID(id); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(id)
	id[0] = 0xff // the store keeps its own copy
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, _ = openT(t, path, Options{})
	got, err := s.RelayID()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("RelayID after reopen = %x, %v; want %x", got, err, want)
	}
}

func TestClosed(t *testing.T) {
	s, _ := openT(t, tempStore(t), Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for name, err := range map[string]error{
		"Put":        s.Put(testBinding(1)),
		"Delete":     s.Delete(testBinding(1).Key),
		"Flush":      s.Flush(),
		"SetRelayID": s.SetRelayID([]byte{1}),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: err = %v, want ErrClosed", name, err)
		}
	}
	if _, err := s.RelayID(); !errors.Is(err, ErrClosed) {
		t.Errorf("RelayID after Close: err = %v, want ErrClosed", err)
	}
	if _, err := s.Load(func(binding.Binding) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("Load after Close: err = %v, want ErrClosed", err)
	}
}

func TestPutInvalid(t *testing.T) {
	s, _ := openT(t, tempStore(t), Options{})
	b := testBinding(1)
	b.Prefix = netip.MustParsePrefix("10.0.0.0/8")
	if err := s.Put(b); !errors.Is(err, ErrInvalidBinding) {
		t.Errorf("Put: err = %v, want ErrInvalidBinding", err)
	}
	if err := s.Delete(b.Key); !errors.Is(err, ErrInvalidBinding) {
		t.Errorf("Delete: err = %v, want ErrInvalidBinding", err)
	}
	if st := s.Stats(); st.Pending != 0 {
		t.Errorf("invalid writes were queued: %+v", st)
	}
}

func TestLoadStopsOnError(t *testing.T) {
	s, _ := openT(t, tempStore(t), Options{})
	for _, b := range genBindings(0, 10) {
		if err := s.Put(b); err != nil {
			t.Fatal(err)
		}
	}
	stop := errors.New("stop")
	n := 0
	_, err := s.Load(func(binding.Binding) error {
		if n++; n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Errorf("Load: err = %v after %d calls, want stop after 3", err, n)
	}
}

// TestConcurrent has goroutines Put and Delete disjoint key sets while the
// background flush and explicit Flushes run; each keeps a model of what it
// wrote last, and the reopened store must hold exactly the models' union.
func TestConcurrent(t *testing.T) {
	const (
		workers = 6
		keys    = 200 // per worker
		ops     = 3000
	)
	path := tempStore(t)
	s, _ := openT(t, path, Options{FlushInterval: 2 * time.Millisecond, MaxBatch: 50})
	models := make([]map[int]int, workers)
	var wg sync.WaitGroup
	for w := range workers {
		models[w] = map[int]int{}
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for n := range ops {
				i := w*keys + rng.IntN(keys)
				var err error
				switch r := rng.IntN(1000); {
				case r < 300:
					err = s.Delete(testBinding(i).Key)
					delete(models[w], i)
				case r < 305:
					err = s.Flush()
				default:
					b := testBinding(i)
					b.Expires = b.Expires.Add(time.Duration(n) * time.Second)
					err = s.Put(b)
					models[w][i] = n
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Go(func() { // a metrics reader
		for range 100 {
			_ = s.Stats()
			time.Sleep(100 * time.Microsecond)
		}
	})
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, _ = openT(t, path, Options{})
	got := loadAll(t, s)
	want := map[int]int{}
	for _, m := range models {
		for i, n := range m {
			want[i] = n
		}
	}
	if len(got) != len(want) {
		t.Errorf("loaded %d bindings, want %d", len(got), len(want))
	}
	for _, g := range got {
		i := bindingIndex(g)
		n, ok := want[i]
		w := testBinding(i)
		w.Expires = w.Expires.Add(time.Duration(n) * time.Second)
		if !ok || !equal(g, w) {
			t.Errorf("loaded %s, want %s (in model: %v)", show(g), show(w), ok)
		}
	}
}

func TestOpenLocked(t *testing.T) {
	path := tempStore(t)
	openT(t, path, Options{})
	t0 := time.Now()
	_, err := OpenWithOptions(path, nil, Options{LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: err = %v, want ErrLocked", err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("second Open took %v", d)
	}
	if matches := corruptFiles(t, path); len(matches) != 0 {
		t.Errorf("locked file was moved aside: %v", matches)
	}
}

// TestCommitFailureRetried makes commits fail (bbolt's MaxSize: the file
// may not grow) and checks that the writes stay queued, are counted and
// logged, and are committed once the disk has room again.
func TestCommitFailureRetried(t *testing.T) {
	t.Run("flush", func(t *testing.T) {
		path := tempStore(t)
		s, _ := openT(t, path, Options{FlushInterval: time.Hour, MaxBatch: 1000})
		s.db.MaxSize = int(fileSizeT(t, path)) // set before any commit
		for _, b := range genBindings(0, 5000) {
			if err := s.Put(b); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Flush(); !errors.Is(err, berrors.ErrMaxSizeReached) {
			t.Fatalf("Flush into a full disk: err = %v, want ErrMaxSizeReached", err)
		}
		st := s.Stats()
		if st.CommitErrors != 1 || int(st.WritesCommitted)+st.Pending != 5000 {
			t.Fatalf("after a failed commit: %+v, want 1 error and every write committed or pending", st)
		}
		s.db.MaxSize = 0
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s, _ = openT(t, path, Options{})
		if got := loadAll(t, s); len(got) != 5000 {
			t.Errorf("loaded %d bindings after the retry, want 5000", len(got))
		}
	})
	t.Run("background", func(t *testing.T) {
		path := tempStore(t)
		s, lb := openT(t, path, Options{FlushInterval: time.Millisecond})
		s.db.MaxSize = int(fileSizeT(t, path)) // before any Put, so before any commit
		for _, b := range genBindings(0, 2000) {
			if err := s.Put(b); err != nil {
				t.Fatal(err)
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for s.Stats().CommitErrors < 3 {
			if time.Now().After(deadline) {
				t.Fatalf("no failed commits after 5 s: %+v", s.Stats())
			}
			time.Sleep(time.Millisecond)
		}
		if st := s.Stats(); st.Pending != 2000 {
			t.Errorf("pending %d, want 2000", st.Pending)
		}
		if err := s.Close(); !errors.Is(err, berrors.ErrMaxSizeReached) {
			t.Errorf("Close: err = %v, want ErrMaxSizeReached", err)
		}
		log := lb.String()
		if n := strings.Count(log, "commit failed"); n != 1 {
			t.Errorf("commit failure logged %d times, want once:\n%s", n, log)
		}
	})
}

func TestRequeueKeepsNewer(t *testing.T) {
	s := &Store{pending: map[string][]byte{"a": []byte("new"), "c": nil}}
	s.requeue([]write{{"a", []byte("old")}, {"b", []byte("old")}, {"c", []byte("old")}})
	want := map[string][]byte{"a": []byte("new"), "b": []byte("old"), "c": nil}
	if len(s.pending) != len(want) {
		t.Fatalf("pending = %q, want %q", s.pending, want)
	}
	for k, v := range want {
		if got, ok := s.pending[k]; !ok || !bytes.Equal(got, v) || (got == nil) != (v == nil) {
			t.Errorf("pending[%q] = %q, want %q", k, got, v)
		}
	}
}

func fileSizeT(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
