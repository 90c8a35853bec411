package store

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
)

const million = 1_000_000

// writeN fills a new store at path with testBinding(0..n-1) through the
// public API (Put, then Flush) and closes it. It returns the time spent in
// the Puts (including making the bindings) and in Flush and Close.
func writeN(b *testing.B, path string, n int, opts Options) (put, flush time.Duration) {
	s, err := OpenWithOptions(path, nil, opts)
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	for i := range n {
		if err := s.Put(testBinding(i)); err != nil {
			b.Fatal(err)
		}
	}
	t1 := time.Now()
	if err := s.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	return t1.Sub(t0), time.Since(t1)
}

func fileSize(b *testing.B, path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	return fi.Size()
}

// BenchmarkPut is the caller's cost of a Put: encoding and queueing.
func BenchmarkPut(b *testing.B) {
	s, _ := openT(b, filepath.Join(b.TempDir(), "b.db"), Options{FlushInterval: time.Hour})
	bs := genBindings(0, 1<<16)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := s.Put(bs[i&(1<<16-1)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWrite1M puts a million bindings into a new store and flushes
// them (in transactions of Options.MaxBatch), then closes it.
func BenchmarkWrite1M(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts Options
	}{
		{"batch=100k", Options{FlushInterval: time.Hour}},
		{"batch=1M", Options{FlushInterval: time.Hour, MaxBatch: million}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var (
				size       int64
				put, flush time.Duration
			)
			for range b.N {
				path := filepath.Join(b.TempDir(), "b.db")
				p, f := writeN(b, path, million, bc.opts)
				put, flush = put+p, flush+f
				size = fileSize(b, path)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/million, "ns/binding")
			b.ReportMetric(float64(put.Nanoseconds())/float64(b.N)/million, "put-ns/binding")
			b.ReportMetric(float64(flush.Nanoseconds())/float64(b.N)/million, "flush-ns/binding")
			b.ReportMetric(float64(size), "file-bytes")
			b.ReportMetric(float64(size)/million, "file-bytes/binding")
		})
	}
}

// BenchmarkLoad1M measures the restart path over a store of a million
// bindings: "load" is Load alone, "open+load" also opens the file
// (including the verifying scan) and closes it.
func BenchmarkLoad1M(b *testing.B) {
	path := filepath.Join(b.TempDir(), "b.db")
	writeN(b, path, million, Options{FlushInterval: time.Hour})
	size := fileSize(b, path)
	load := func(b *testing.B, s *Store) {
		n := 0
		skipped, err := s.Load(func(binding.Binding) error { n++; return nil })
		if err != nil || skipped != 0 || n != million {
			b.Fatalf("Load: %d bindings, %d skipped, %v", n, skipped, err)
		}
	}
	report := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/million, "ns/binding")
		b.ReportMetric(float64(size), "file-bytes")
	}
	b.Run("load", func(b *testing.B) {
		s, err := Open(path, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			load(b, s)
		}
		report(b)
	})
	for _, bc := range []struct {
		name string
		opts Options
	}{
		{"open+load", Options{}},
		{"open+load/noverify", Options{SkipVerify: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				s, err := OpenWithOptions(path, nil, bc.opts)
				if err != nil {
					b.Fatal(err)
				}
				load(b, s)
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
			}
			report(b)
		})
	}
}

// BenchmarkCommitInto1M is one background flush in steady state: 1,000
// changed bindings committed into a store of a million.
func BenchmarkCommitInto1M(b *testing.B) {
	path := filepath.Join(b.TempDir(), "b.db")
	writeN(b, path, million, Options{FlushInterval: time.Hour})
	s, _ := openT(b, path, Options{FlushInterval: time.Hour})
	b.ResetTimer()
	for n := range b.N {
		for j := range 1000 {
			bd := testBinding(int(mix(uint32(n*1000+j)) % million))
			bd.Expires = bd.Expires.Add(time.Duration(n) * time.Second)
			if err := s.Put(bd); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Flush(); err != nil {
			b.Fatal(err)
		}
	}
}
