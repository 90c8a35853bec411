package fib

import (
	"cmp"
	"math/bits"
	"net/netip"
	"slices"
)

// The region filter. A delegation plan carves each prefix length out of
// its own pools (/56s from one pool, /48s from another), and the pools
// lie inside the operator's few allocations. The filter lists the regions
// (the /44s, the top regionBits bits of an address) that hold entries,
// merged into sorted ranges of adjacent regions with the same lengths in
// use, and for each range the lengths to probe. A lookup finds its range
// by binary search: outside every range (most upstream traffic, and
// unused parts of the pools) it ends there; inside one it probes only the
// exact tables of the lengths in use in that range, usually one.
//
// Prefixes shorter than a region (a /40 delegation, an allowed /32 of
// sources) are laid over the regions they cover. Past maxOuter ranges,
// neighbouring ranges merge across their gaps (see coalesce). The filter
// is off (every lookup probes every length) only while there are more
// than maxShort prefixes shorter than a region.

const (
	regionBits = 44   // a region is a /44
	maxOuter   = 1024 // most ranges the filter lists
	maxShort   = 64   // most prefixes shorter than a region it lays over
)

// outerEnt is one range of the filter: the regions lo to hi (top
// regionBits bits of an address), the fast tables holding entries there
// and whether bart may.
type outerEnt struct {
	lo, hi uint64
	fast   uint8 // bit i set: fast[i] has entries in the range
	slow   bool  // bart has entries in the range
}

// region returns the region of an address's top 64 bits.
func region(hi uint64) uint64 { return hi >> (64 - regionBits) }

// findOuter returns the range holding region x, if any.
func findOuter(outer []outerEnt, x uint64) (outerEnt, bool) {
	if len(outer) == 0 {
		return outerEnt{}, false
	}
	// The last range with lo <= x, by a binary search whose steps do not
	// branch on the data: lastAtMost written out, since a call to it
	// makes findOuter too costly to inline (90 against the budget of 80;
	// written out, 77), and it runs twice for each frame.
	// TestHotHelpersInline checks that it stays inlined.
	base, n := 0, len(outer)
	for n > 1 {
		half := n / 2
		// base += half if outer[base+half].lo <= x, in arithmetic: the
		// compiler makes the if a branch, which in a plan of several
		// pools mispredicts at every other step (6 ns a lookup).
		_, below := bits.Sub64(x, outer[base+half].lo, 0)
		base += half &^ -int(below)
		n -= half
	}
	if o := outer[base]; o.lo <= x && x <= o.hi {
		return o, true
	}
	return outerEnt{}, false
}

// sorted is an element of a list sorted by a key that lastAtMost finds.
type sorted interface{ sortKey() uint64 }

// lastAtMost returns the index of the last element of xs, a non-empty
// list sorted by key, whose key is at most x, or 0 if there is none (the
// caller checks the element). It is a binary search whose steps do not
// branch on the data (see findOuter).
func lastAtMost[T sorted](xs []T, x uint64) int {
	base, n := 0, len(xs)
	for n > 1 {
		half := n / 2
		_, below := bits.Sub64(x, xs[base+half].sortKey(), 0)
		base += half &^ -int(below)
		n -= half
	}
	return base
}

// count adds d to the entries of p (masked), for the filter.
func (w *lpmWriter[P]) count(p netip.Prefix, d int) {
	var used bool
	if p.Bits() < regionBits {
		used = addCount(w.short, p, int32(d))
	} else {
		hi, _ := split128(p.Addr())
		used = addCount(w.regions, region(hi)<<8|uint64(p.Bits()), int32(d))
	}
	if used {
		w.outerDirty = true // a length came into use in the region or went out
	}
}

// addCount adds d to m[k], deleting the key at zero, and reports whether
// the count went from zero or to it.
func addCount[K comparable](m map[K]int32, k K, d int32) bool {
	n := m[k] + d
	if n == 0 {
		delete(m, k)
	} else {
		m[k] = n
	}
	return n == 0 || n == d
}

// lenMask returns the filter bits of a prefix length: its fast table, or
// bart.
func (w *lpmWriter[P]) lenMask(bits int) (uint8, bool) {
	if i := w.fastIndex(bits); i >= 0 {
		return 1 << i, false
	}
	return 0, true
}

// buildOuter returns the filter for the current entries and fast lengths,
// and false if it is off.
func (w *lpmWriter[P]) buildOuter() ([]outerEnt, bool) {
	if len(w.short) > maxShort {
		return nil, false
	}
	out := make([]outerEnt, 0, len(w.regions))
	for k := range w.regions {
		f, s := w.lenMask(int(k & 0xff))
		out = append(out, outerEnt{lo: k >> 8, hi: k >> 8, fast: f, slow: s})
	}
	slices.SortFunc(out, func(a, b outerEnt) int { return cmp.Compare(a.lo, b.lo) })
	out = mergeOuter(out)
	for p := range w.short {
		hi, _ := split128(p.Addr())
		lo := region(hi)
		f, s := w.lenMask(p.Bits())
		out = mergeOuter(overlay(out, outerEnt{lo: lo, hi: lo | (1<<(regionBits-p.Bits()) - 1), fast: f, slow: s}))
	}
	if len(out) > maxOuter {
		out = coalesce(out)
	}
	return out, true
}

// coalesce merges neighbouring ranges, gaps and all, until at most
// maxOuter remain: first those with the same lengths, then those under
// the same /40, /36, ... with the lengths of both. A lookup in a gap
// taken in probes tables and misses, as it would without the filter.
func coalesce(out []outerEnt) []outerEnt {
	out = mergeGaps(out, func(a, b *outerEnt) bool { return a.fast == b.fast && a.slow == b.slow })
	for shift := 4; len(out) > maxOuter; shift += 4 {
		out = mergeGaps(out, func(a, b *outerEnt) bool { return a.lo>>shift == b.lo>>shift })
	}
	return out
}

// mergeGaps merges, in place, each range into the one before it when
// join says so.
func mergeGaps(out []outerEnt, join func(a, b *outerEnt) bool) []outerEnt {
	k := 0
	for i := 1; i < len(out); i++ {
		if join(&out[k], &out[i]) {
			out[k].hi = out[i].hi
			out[k].fast |= out[i].fast
			out[k].slow = out[k].slow || out[i].slow
			continue
		}
		k++
		out[k] = out[i]
	}
	return out[:min(k+1, len(out))]
}

// mergeOuter merges, in place, the entries of a sorted list that are the
// same range, then the ranges that are adjacent with the same lengths.
func mergeOuter(out []outerEnt) []outerEnt {
	k := -1
	for _, o := range out {
		if k >= 0 && o.lo == out[k].lo && o.hi == out[k].hi {
			out[k].fast |= o.fast
			out[k].slow = out[k].slow || o.slow
			continue
		}
		k++
		out[k] = o
	}
	out = out[:k+1]
	k = -1
	for _, o := range out {
		if k >= 0 && o.lo == out[k].hi+1 && o.fast == out[k].fast && o.slow == out[k].slow {
			out[k].hi = o.hi
			continue
		}
		k++
		out[k] = o
	}
	return out[:k+1]
}

// overlay returns the sorted, disjoint ranges of out with the lengths of
// s added over s's regions.
func overlay(out []outerEnt, s outerEnt) []outerEnt {
	res := make([]outerEnt, 0, len(out)+3)
	next := s.lo              // the first region of s not yet in res
	fill := func(to uint64) { // s alone over next..to
		if next <= to && next <= s.hi {
			res = append(res, outerEnt{lo: next, hi: min(to, s.hi), fast: s.fast, slow: s.slow})
			next = min(to, s.hi) + 1
		}
	}
	for _, o := range out {
		if o.hi < s.lo || o.lo > s.hi {
			if o.lo > s.hi {
				fill(s.hi)
			}
			res = append(res, o)
			continue
		}
		if o.lo < s.lo {
			res = append(res, outerEnt{lo: o.lo, hi: s.lo - 1, fast: o.fast, slow: o.slow})
		}
		if o.lo > next {
			fill(o.lo - 1)
		}
		lo, hi := max(o.lo, s.lo), min(o.hi, s.hi)
		res = append(res, outerEnt{lo: lo, hi: hi, fast: o.fast | s.fast, slow: o.slow || s.slow})
		next = hi + 1
		if o.hi > s.hi {
			res = append(res, outerEnt{lo: s.hi + 1, hi: o.hi, fast: o.fast, slow: o.slow})
		}
	}
	fill(s.hi)
	return res
}
