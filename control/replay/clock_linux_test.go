package replay

import (
	"runtime"
	"slices"
	"testing"
	"time"
)

// BenchmarkClockWait measures how late preciseClock.waitUntil returns
// for deadlines 0.5 to 4.5 ms ahead, with and without SCHED_FIFO
// (--realtime), and how late a bare sleep of the same length wakes: the
// reason for spinLast. Figures in bench/results/issue15-replay.txt.
//
//	go test -run '^$' -bench ClockWait -benchtime 2000x ./control/replay/
func BenchmarkClockWait(b *testing.B) {
	for _, c := range []struct {
		name     string
		realtime bool
		spin     bool
	}{{"sleep-only", false, false}, {"waitUntil", false, true}, {"waitUntil-realtime", true, true}} {
		b.Run(c.name, func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			clk, err := newPreciseClock(c.realtime, true)
			if err != nil {
				b.Skip(err)
			}
			defer clk.close()
			late := make([]time.Duration, 0, b.N)
			for i := 0; i < b.N; i++ {
				d := int64(500+i%9*500) * int64(time.Microsecond)
				t := clk.now() + d
				if c.spin {
					clk.waitUntil(t)
				} else {
					time.Sleep(time.Duration(d))
				}
				late = append(late, time.Duration(clk.now()-t))
			}
			slices.Sort(late)
			q := func(p float64) float64 { return float64(late[int(p*float64(len(late)-1))]) / 1e3 }
			b.ReportMetric(q(0.5), "p50-µs")
			b.ReportMetric(q(0.99), "p99-µs")
			b.ReportMetric(q(1), "max-µs")
		})
	}
}
