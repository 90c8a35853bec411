package store

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/pdrelay/pdrelay/control/binding"
)

func corruptFiles(t testing.TB, path string) []string {
	t.Helper()
	m, err := filepath.Glob(path + ".corrupt-*")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// realStore writes n bindings to a new store at path and closes it.
func realStore(t testing.TB, path string, n int) {
	t.Helper()
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range genBindings(0, n) {
		if err := s.Put(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetRelayID([]byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// rawBolt edits the bbolt file at path directly.
func rawBolt(t testing.TB, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(uint64(n), 2))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func truncateTo(size func(int64) int64) func(t testing.TB, path string) {
	return func(t testing.TB, path string) {
		realStore(t, path, 5000)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, size(fi.Size())); err != nil {
			t.Fatal(err)
		}
	}
}

func writeFile(data []byte) func(t testing.TB, path string) {
	return func(t testing.TB, path string) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// overwrite writes data at off into a real store. A last transaction that
// changes no binding makes both meta pages describe all 5000 bindings.
func overwrite(off int64, data []byte) func(t testing.TB, path string) {
	return func(t testing.TB, path string) {
		realStore(t, path, 5000)
		rawBolt(t, path, func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put([]byte("test"), []byte{1})
		})
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if off < 0 {
			fi, _ := f.Stat()
			off += fi.Size()
		}
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenUnreadable(t *testing.T) {
	page := int64(os.Getpagesize())
	tests := []struct {
		name  string
		setup func(t testing.TB, path string)
		cause string // in the log line
	}{
		{"100 garbage octets", writeFile(randomBytes(100)), "meta"},
		{"3000 garbage octets", writeFile(randomBytes(3000)), "meta"},
		{"64 KiB garbage", writeFile(randomBytes(64 << 10)), "bad magic"},
		{"64 KiB zeros", writeFile(make([]byte, 64<<10)), "bad magic"},
		{"text file", writeFile([]byte(strings.Repeat("state_dir: /var/lib/pdrelay\n", 1000))), "bad magic"},
		{"truncated to half", truncateTo(func(n int64) int64 { return n / 2 }), "truncated"},
		{"last used page cut off", func(t testing.TB, path string) {
			realStore(t, path, 5000)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			m0, m1 := parseMeta(data), parseMeta(data[page:])
			if m0.err != nil || m1.err != nil {
				t.Fatal(m0.err, m1.err)
			}
			hwm := max(m0.hwm, m1.hwm)
			if err := os.Truncate(path, int64(hwm-1)*page); err != nil {
				t.Fatal(err)
			}
		}, "truncated"},
		{"truncated inside page 1", truncateTo(func(int64) int64 { return page + 100 }), "meta"},
		{"truncated to 100 octets", truncateTo(func(int64) int64 { return 100 }), "meta"},
		{"both meta pages damaged", func(t testing.TB, path string) {
			overwrite(0, randomBytes(int(2*page)))(t, path)
		}, "both meta pages invalid"},
		{"data pages overwritten", overwrite(2*page, bytes.Repeat([]byte{0xab}, int(64*page))), "corrupt"},
		{"foreign bbolt file", func(t testing.TB, path string) {
			writeFile(nil)(t, path)
			rawBolt(t, path, func(tx *bolt.Tx) error {
				_, err := tx.CreateBucket([]byte("something-else"))
				return err
			})
		}, `bucket \"meta\" missing`},
		{"newer schema", func(t testing.TB, path string) {
			realStore(t, path, 10)
			rawBolt(t, path, func(tx *bolt.Tx) error {
				return tx.Bucket(bucketMeta).Put(keySchema, []byte{2})
			})
		}, "schema version 02"},
		{"schema version missing", func(t testing.TB, path string) {
			realStore(t, path, 10)
			rawBolt(t, path, func(tx *bolt.Tx) error {
				return tx.Bucket(bucketMeta).Delete(keySchema)
			})
		}, "schema version , want 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tempStore(t)
			tt.setup(t, path)
			orig, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			s, lb := openT(t, path, Options{})
			aside := corruptFiles(t, path)
			if len(aside) != 1 {
				t.Fatalf("files moved aside: %v, want one; log:\n%s", aside, lb)
			}
			if moved, err := os.ReadFile(aside[0]); err != nil || !bytes.Equal(moved, orig) {
				t.Errorf("moved-aside file differs from the original (%v)", err)
			}
			log := lb.String()
			for _, want := range []string{"level=ERROR", "moved aside", "path=" + path, aside[0], tt.cause} {
				if !strings.Contains(log, want) {
					t.Errorf("log lacks %q:\n%s", want, log)
				}
			}
			// The fresh store works and survives a reopen.
			if got := loadAll(t, s); len(got) != 0 {
				t.Errorf("fresh store holds %d bindings", len(got))
			}
			if _, err := s.RelayID(); !errors.Is(err, ErrNoRelayID) {
				t.Errorf("fresh store RelayID: %v", err)
			}
			if err := s.Put(testBinding(1)); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s, _ = openT(t, path, Options{})
			if got := loadAll(t, s); len(got) != 1 || !equal(got[0], testBinding(1)) {
				t.Errorf("after reopen: %d bindings", len(got))
			}
			if aside2 := corruptFiles(t, path); len(aside2) != 1 {
				t.Errorf("reopen moved the fresh store aside too: %v", aside2)
			}
		})
	}
}

// TestOpenReadable covers files that look odd but must be used as they
// are, not moved aside.
func TestOpenReadable(t *testing.T) {
	page := int64(os.Getpagesize())
	tests := []struct {
		name  string
		setup func(t testing.TB, path string)
		want  int // bindings Load returns
	}{
		{"no file", func(testing.TB, string) {}, 0},
		{"empty file", writeFile(nil), 0},
		{"bbolt file without buckets", func(t testing.TB, path string) {
			writeFile(nil)(t, path)
			rawBolt(t, path, func(*bolt.Tx) error { return nil })
		}, 0},
		{"meta page 0 damaged", overwrite(boltPageHeader, randomBytes(32)), 5000},
		{"meta page 1 damaged", overwrite(page+boltPageHeader, randomBytes(32)), 5000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tempStore(t)
			tt.setup(t, path)
			s, lb := openT(t, path, Options{})
			if aside := corruptFiles(t, path); len(aside) != 0 {
				t.Fatalf("moved aside: %v; log:\n%s", aside, lb)
			}
			got := loadAll(t, s)
			if len(got) != tt.want {
				t.Errorf("loaded %d bindings, want %d", len(got), tt.want)
			}
		})
	}
}

func TestOpenDirectory(t *testing.T) {
	path := tempStore(t)
	if err := os.MkdirAll(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, nil); err == nil {
		t.Fatal("Open of a directory succeeded")
	}
	if aside := corruptFiles(t, path); len(aside) != 0 {
		t.Errorf("directory moved aside: %v", aside)
	}
}

func TestLoadSkipsUndecodable(t *testing.T) {
	path := tempStore(t)
	realStore(t, path, 100)
	rawBolt(t, path, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBindings)
		if err := b.Put([]byte("not a key"), []byte{1, 2, 3}); err != nil {
			return err
		}
		k, v, _ := encodeRecord(&binding.Binding{Key: testBinding(500).Key})
		v[0] = 9 // a value version from the future
		if err := b.Put(k, v); err != nil {
			return err
		}
		_, err := b.CreateBucket([]byte("nested"))
		return err
	})
	s, lb := openT(t, path, Options{})
	if aside := corruptFiles(t, path); len(aside) != 0 {
		t.Fatalf("moved aside: %v", aside)
	}
	n := 0
	skipped, err := s.Load(func(b binding.Binding) error {
		if !equal(b, testBinding(bindingIndex(b))) {
			t.Errorf("loaded %s", show(b))
		}
		n++
		return nil
	})
	if err != nil || skipped != 3 || n != 100 {
		t.Errorf("Load = %d skipped, %v, %d loaded; want 3, nil, 100", skipped, err, n)
	}
	if log := lb.String(); !strings.Contains(log, "skipped=3") || !strings.Contains(log, "level=WARN") {
		t.Errorf("log lacks the skipped count:\n%s", log)
	}
}
