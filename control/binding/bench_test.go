package binding

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// cum[j] is how many prefixes the first j+1 clients of a cycle of 8 hold:
// client c holds 1 + c%8 prefixes (4.5 on average).
var cum = [8]int{1, 3, 6, 10, 15, 21, 28, 36}

// genLearned returns the i-th of a set of Learned values for distinct /56
// prefixes: clients with realistic 14-byte DUID-LLTs holding 1 to 8
// prefixes each, spread over 16 ports. Every value has its own DUID and
// server DUID strings, as the relay's snooper produces them (one
// allocation per IAPREFIX), so the table cannot share them by accident.
func genLearned(i int) Learned {
	r := i % cum[7]
	j := 0
	for cum[j] <= r {
		j++
	}
	client := i/cum[7]*8 + j
	nth := r
	if j > 0 {
		nth -= cum[j-1]
	}
	var duid [14]byte
	binary.BigEndian.PutUint16(duid[0:], 1)                         // DUID-LLT
	binary.BigEndian.PutUint16(duid[2:], 1)                         // hardware type Ethernet
	binary.BigEndian.PutUint32(duid[4:], 0x2e000000+uint32(client)) // time
	mac := [6]byte{0x02, 0x00, byte(client >> 24), byte(client >> 16), byte(client >> 8), byte(client)}
	copy(duid[8:], mac[:])
	srv := [14]byte{0, 1, 0, 1, 0x2e, 0, 0, 0, 0x02, 0, 0, 0, 0, 0xfe} // server DUID-LLT
	var a [16]byte                                                     // prefix i: 2001:db8::/32 + i as /56
	a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
	a[4], a[5], a[6] = byte(i>>16), byte(i>>8), byte(i)
	return Learned{
		Key: Key{
			Port:   benchPorts[client%16],
			DUID:   string(duid[:]),
			IAID:   uint32(nth / 2),
			Prefix: netip.PrefixFrom(netip.AddrFrom16(a), 56),
		},
		NextHop:    netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 8: 0x02, 12: mac[2], 13: mac[3], 14: mac[4], 15: mac[5]}),
		MAC:        mac,
		MACKnown:   true,
		Preferred:  time.Duration(3600+i%600) * time.Second,
		Valid:      time.Duration(7200+i%600) * time.Second,
		ServerDUID: string(srv[:]),
	}
}

var benchPorts = func() (p [16]string) {
	for i := range p {
		p[i] = fmt.Sprintf("ge-0/0/%d", i)
	}
	return p
}()

func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkTableMemory1M learns 1M distinct bindings and reports the heap
// the table then holds, strings included (the requirement: 1M bindings
// within 1 GiB): HeapAlloc after GC with the table, minus before it. The
// Learned values are made one at a time, so nothing else stays live. Run
// with -benchtime=1x.
func BenchmarkTableMemory1M(b *testing.B) {
	const n = 1_000_000
	b.ReportAllocs()
	for range b.N {
		b.StopTimer()
		before := heapInUse()
		b.StartTimer()
		tb := NewTable(PortLimits{MaxPerClient: 8}, nil)
		now := time.Unix(1_750_000_000, 0)
		for i := range n {
			if _, err := tb.Learn(now, genLearned(i)); err != nil {
				b.Fatal(err)
			}
			if i%4096 == 0 {
				tb.TakeChanges() // the Manager hands these to its sinks
			}
		}
		tb.TakeChanges()
		b.StopTimer()
		if tb.Len() != n {
			b.Fatalf("%d bindings", tb.Len())
		}
		after := heapInUse()
		runtime.KeepAlive(tb)
		b.ReportMetric(float64(after-before)/n, "B/binding")
		b.ReportMetric(float64(after-before)/(1<<20), "MiB")
		b.StartTimer()
	}
}

// BenchmarkLearn is the cost of one Learn with 1M bindings in the table:
// a renewal (the common case: lifetimes only), and a new binding. The
// table is filled once per sub-benchmark and kept across the b.N ramp-up.
func BenchmarkLearn(b *testing.B) {
	const n = 1_000_000
	in := make([]Learned, 2*n)
	for i := range in {
		in[i] = genLearned(i)
	}
	base, extra := in[:n], in[n:]
	fill := func(b *testing.B) (*Table, time.Time) {
		b.Helper()
		tb := NewTable(PortLimits{MaxPerClient: 8}, nil)
		now := time.Unix(1_750_000_000, 0)
		for i := range base {
			if _, err := tb.Learn(now, base[i]); err != nil {
				b.Fatal(err)
			}
			if i%4096 == 0 {
				tb.TakeChanges()
			}
		}
		tb.TakeChanges()
		return tb, now
	}
	var (
		tb   *Table
		now  time.Time
		next int // the next Learned of extra to add, across ramp-up rounds
	)
	setup := func(b *testing.B) {
		if tb == nil {
			tb, now = fill(b)
		}
		runtime.GC()
		b.ReportAllocs()
		b.ResetTimer()
	}
	b.Run("renew-1M", func(b *testing.B) {
		setup(b)
		for i := range b.N {
			now = now.Add(time.Microsecond)
			if op, err := tb.Learn(now, base[i%n]); err != nil || op != Updated {
				b.Fatal(op, err)
			}
			if i%64 == 0 {
				tb.RecycleChanges(tb.TakeChanges()) // as the Manager does, once its sinks have them
			}
		}
	})
	tb = nil
	b.Run("add-at-1M", func(b *testing.B) {
		setup(b)
		for i := range b.N {
			l := &extra[next%len(extra)]
			if next >= len(extra) {
				// Past the pre-built set: remove so this round adds again.
				b.StopTimer()
				tb.Remove(l.Key, ReasonOperator)
				b.StartTimer()
			}
			next++
			if op, err := tb.Learn(now, *l); err != nil || op != Added {
				b.Fatal(op, err)
			}
			if i%64 == 0 {
				tb.RecycleChanges(tb.TakeChanges())
			}
		}
	})
}

// BenchmarkRemoveIA is the cost of removing one IA_PD (a Release, a
// NoBinding) with 1M bindings in the table.
func BenchmarkRemoveIA(b *testing.B) {
	const n = 1_000_000
	tb := NewTable(PortLimits{MaxPerClient: 8}, nil)
	now := time.Unix(1_750_000_000, 0)
	for i := range n {
		if _, err := tb.Learn(now, genLearned(i)); err != nil {
			b.Fatal(err)
		}
		if i%4096 == 0 {
			tb.TakeChanges()
		}
	}
	tb.TakeChanges()
	runtime.GC()
	b.ReportAllocs()
	b.ResetTimer()
	removed := 0
	for i := range b.N {
		l := genLearned(i % n) // an IA_PD of 1 or 2 prefixes, or one already gone
		removed += tb.RemoveIA(l.Port, l.DUID, l.IAID, ReasonReleased)
		tb.RecycleChanges(tb.TakeChanges())
	}
	if removed == 0 {
		b.Fatal("nothing removed")
	}
}

// BenchmarkLogChange is the cost of the log line of a new binding, to a
// text handler that discards it: one line for every binding that comes
// or goes, on the Manager's goroutine.
func BenchmarkLogChange(b *testing.B) {
	m := NewManager(NewTable(PortLimits{}, nil), nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	l := genLearned(1)
	c := Change{Op: Added, RouteChanged: true, Binding: Binding{
		Key: l.Key, NextHop: l.NextHop, MAC: l.MAC, Expires: time.Unix(1_750_000_000, 0), ServerDUID: l.ServerDUID,
	}}
	b.ReportAllocs()
	for b.Loop() {
		m.logChange(&c)
	}
}
