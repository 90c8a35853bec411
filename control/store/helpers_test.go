package store

import (
	"github.com/pdrelay/pdrelay/internal/testutil"

	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/pdrelay/pdrelay/control/binding"
)

// base is a fixed instant with a nanosecond part, so that tests see any
// truncation.
var base = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

// serverDUID is a DUID-LLT, as a server would send it.
const serverDUID = "\x00\x01\x00\x01\x2e\x5b\x10\x00\x02\x42\xac\x11\x00\x02"

// mix spreads i over 32 bits so that consecutive bindings do not have
// consecutive keys.
func mix(i uint32) uint32 {
	i ^= i >> 16
	i *= 0x7feb352d
	i ^= i >> 15
	i *= 0x846ca68b
	i ^= i >> 16
	return i
}

var ports = func() (p [16]string) {
	for i := range p {
		p[i] = fmt.Sprintf("eth%d", i)
	}
	return p
}()

// testBinding returns binding number i (i < 1<<24): a DUID-LL client on one
// of 16 ports, holding one /56. Its index is recoverable by bindingIndex.
func testBinding(i int) binding.Binding {
	h := mix(uint32(i))
	mac := [6]byte{0x02, byte(h >> 24), byte(h >> 16), byte(h >> 8), byte(h), byte(i)}
	duid := append([]byte{0, 3, 0, 1}, mac[:]...) // DUID-LL, Ethernet
	var a [16]byte
	a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
	a[4], a[5], a[6] = byte(i>>16), byte(i>>8), byte(i)
	hop := [16]byte{0xfe, 0x80, 8: mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]}
	return binding.Binding{
		Key: binding.Key{
			Port:   ports[h%16],
			DUID:   string(duid),
			IAID:   h >> 28,
			Prefix: netip.PrefixFrom(netip.AddrFrom16(a), 56),
		},
		NextHop:    netip.AddrFrom16(hop),
		MAC:        mac,
		Preferred:  base.Add(time.Duration(i) * time.Millisecond).Add(30 * time.Minute),
		Expires:    base.Add(time.Duration(i) * time.Millisecond).Add(time.Hour),
		ServerDUID: serverDUID,
		Updated:    base.Add(time.Duration(i) * time.Millisecond),
	}
}

// bindingIndex recovers i from testBinding(i).
func bindingIndex(b binding.Binding) int {
	a := b.Prefix.Addr().As16()
	return int(a[4])<<16 | int(a[5])<<8 | int(a[6])
}

// equal compares bindings, times as instants.
func equal(a, b binding.Binding) bool {
	return a.Key == b.Key && a.NextHop == b.NextHop && a.MAC == b.MAC &&
		a.ServerDUID == b.ServerDUID && a.Preferred.Equal(b.Preferred) &&
		a.Expires.Equal(b.Expires) && a.Updated.Equal(b.Updated)
}

func show(b binding.Binding) string {
	return fmt.Sprintf("{%s %x %d %v hop=%v mac=%x pref=%v exp=%v srv=%x upd=%v}",
		b.Port, b.DUID, b.IAID, b.Prefix, b.NextHop, b.MAC,
		b.Preferred.UTC(), b.Expires.UTC(), b.ServerDUID, b.Updated.UTC())
}

func newLogger(w *testutil.SyncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// openT opens a store and closes it at the end of the test.
func openT(t testing.TB, path string, opts Options) (*Store, *testutil.SyncBuffer) {
	t.Helper()
	lb := new(testutil.SyncBuffer)
	s, err := OpenWithOptions(path, newLogger(lb), opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, lb
}

// loadAll loads every binding, failing the test on error or skipped
// records.
func loadAll(t testing.TB, s *Store) []binding.Binding {
	t.Helper()
	var got []binding.Binding
	skipped, err := s.Load(func(b binding.Binding) error {
		got = append(got, b)
		return nil
	})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if skipped != 0 {
		t.Fatalf("load skipped %d records", skipped)
	}
	return got
}

// byKey indexes bindings by their encoded key.
func byKey(t testing.TB, bs []binding.Binding) map[string]binding.Binding {
	t.Helper()
	m := make(map[string]binding.Binding, len(bs))
	for _, b := range bs {
		k, err := encodeKey(b.Key)
		if err != nil {
			t.Fatalf("encode key %s: %v", show(b), err)
		}
		m[string(k)] = b
	}
	return m
}

func tempStore(t testing.TB) string {
	return filepath.Join(t.TempDir(), "state", "bindings.db")
}
