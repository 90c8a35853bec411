package dataplane

import (
	"bytes"
	"maps"
	"math/rand/v2"
	"testing"

	"github.com/pdrelay/pdrelay/fib"
)

// TestForwardBatch: ForwardBatch answers every frame of a batch as Forward
// answers it alone, rewrites it the same way and counts the same, for
// batches longer than one round of lookups, mixing every case of
// forwardCases (each sent in on every port, and again with a partial
// checksum), with and without a default route and with no table, with
// checksum completion off and on on every port.
func TestForwardBatch(t *testing.T) {
	snaps := map[string]*fib.Snapshot{"default": testSnapshot(t, true), "no default": testSnapshot(t, false), "no table": nil}
	r := rand.New(rand.NewPCG(1, 1))
	for name, snap := range snaps {
		for _, cf := range []struct{ icmp, csum bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
			cfg := testConfig(cf.icmp)
			for i := range cfg.Ports {
				cfg.Ports[i].CompleteChecksums = cf.csum
			}
			one, batch := newForwarder(t, cfg), newForwarder(t, cfg)
			for _, in := range fuzzPorts {
				var frames, singles [][]byte
				for range 3 {
					for _, c := range forwardCases {
						fr := c.pkt.frame(t)
						if c.patch != nil {
							c.patch(fr)
						}
						frames = append(frames, append(make([]byte, 0, 2048), fr...))
						frames = append(frames, append(make([]byte, 0, 2048), partial(fr)...))
					}
				}
				r.Shuffle(len(frames), func(i, j int) { frames[i], frames[j] = frames[j], frames[i] })
				for _, fr := range frames {
					singles = append(singles, append(make([]byte, 0, 2048), fr...))
				}
				if len(frames) <= batchMax {
					t.Fatalf("%d frames: not more than one round", len(frames))
				}
				res := make([]Result, len(frames)+1)
				res[len(frames)] = Result{Verdict: Forward, Len: -7} // past the batch: untouched
				now := int64(len(frames)) * 1e9
				batch.ForwardBatch(snap, in, frames, now, res)
				if res[len(frames)].Len != -7 {
					t.Fatal("ForwardBatch wrote past its batch")
				}
				for i, fr := range singles {
					v, rs, out, n := one.Forward(snap, in, fr, now)
					want := Result{v, rs, out, n}
					if res[i] != want {
						t.Fatalf("%s %+v port %d frame %d: batch %+v, alone %+v", name, cf, in, i, res[i], want)
					}
					if !bytes.Equal(frames[i][:max(n, len(frames[i]))], fr[:max(n, len(fr))]) {
						t.Fatalf("%s %+v port %d frame %d (%v): frames differ", name, cf, in, i, want)
					}
				}
			}
			if got, want := totals(t, batch), totals(t, one); !maps.Equal(got, want) {
				t.Errorf("%s %+v: batch counted %v, alone %v", name, cf, got, want)
			}
		}
	}
}
