package xsk

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Windows: a bitmap in front of the route hash for dense pools.
//
// A hash lookup costs a cache miss or two (the bucket, the element) once
// the flows' prefixes outgrow the caches: with 100k delegated /56s and
// 10k flows it took about half a microsecond a frame, on the core that
// receives the frame, and cut the downstream rate by a third. Delegated
// prefixes come from pools: a /40 pool holds 2^16 /56s. A window is one
// such range of 2^winBits prefixes of one length L (L <= 64); its bitmap
// holds a bit per prefix, set when that prefix is in the map, so a pool
// of a million /56s is 128 KiB of bits, not 1M hash elements.
//
// The program tries the windows of the winLens most used lengths, up to
// winPerLen each. When the destination falls in one, the bit decides for
// that length; otherwise the hash does, as before. The hash always holds
// every prefix, so a range without a window, a length with too many
// windows, or a length not among the most used still gets the right
// answer, from the hash.
//
// A range gets a window when its first prefix arrives and a slot is
// free; a range that already has prefixes in the hash alone never gets
// one (its bits would have to be rebuilt from the hash). A window is
// freed when its last prefix goes. A bit is set after its prefix is in
// the hash and cleared before it leaves, and a window is published (in
// routeLens) only with its bits set, so a set bit always has its prefix
// in the hash.
const (
	winBits   = 20 // a window covers 2^20 prefixes of one length
	winWords  = 1 << winBits / 64
	winSlots  = 8 // windows in the bitmap map (winSlots * 128 KiB)
	winPerLen = 4 // windows the program tries for one length
	winLens   = 2 // lengths (the most used) whose windows it tries
	// winDescSize is sizeof(struct win { u64 mask; u64 base; u32 shift;
	// u32 first; }): the destination's first 64 bits (host order) AND
	// mask equal base in the window; its index is those bits >> shift,
	// its first word in the bitmap map is first.
	winDescSize = 24
	winMinLen   = winBits
	winMaxLen   = 64
)

// winKey names a range: a length and the first len-winBits bits of its
// prefixes (the first 64 bits, masked).
type winKey struct {
	plen int
	base uint64
}

// rangeOf returns p's range and its index in it; ok is false when p's
// length has no windows.
func rangeOf(p netip.Prefix) (k winKey, idx uint32, ok bool) {
	l := p.Bits()
	if l < winMinLen || l > winMaxLen {
		return winKey{}, 0, false
	}
	a := p.Addr().As16()
	hi := binary.BigEndian.Uint64(a[:8])
	return winKey{l, hi & winMask(l)}, uint32(hi>>(64-l)) & (1<<winBits - 1), true
}

// winMask is the mask of a length-l window's base: its first l-winBits
// bits.
func winMask(l int) uint64 { return ^uint64(0) << (64 - (l - winBits)) }

// winSlot is a window slot: its range, if used. A retired slot's window
// is gone (Delete) but the program may still read it until the next
// publish, which frees the slot.
type winSlot struct {
	used, retired bool
	key           winKey
}

// setBit sets or clears bit idx of slot's bitmap in the mapped array:
// the word is read and written back as an aligned 8-byte copy (one
// store on amd64 and arm64), so a program reads the old word or the new
// one. Only this process writes the array, under mu.
func (r *Routes) setBit(slot int, idx uint32, on bool) error {
	off := int64(slot*winWords+int(idx/64)) * 8
	var b [8]byte
	if _, err := r.mem.ReadAt(b[:], off); err != nil {
		return fmt.Errorf("xsk: route window bits: %w", err)
	}
	old := binary.NativeEndian.Uint64(b[:])
	v := old
	if on {
		v |= 1 << (idx % 64)
	} else {
		v &^= 1 << (idx % 64)
	}
	if v == old {
		return nil
	}
	binary.NativeEndian.PutUint64(b[:], v)
	if _, err := r.mem.WriteAt(b[:], off); err != nil {
		return fmt.Errorf("xsk: route window bits: %w", err)
	}
	return nil
}

// freeSlot returns a free window slot, or -1.
func (r *Routes) freeSlot() int {
	for i, w := range r.slots {
		if !w.used {
			return i
		}
	}
	return -1
}

// putWindows writes the windows of length l into e, a struct routeLen:
// up to winPerLen, those with the most prefixes first.
func (r *Routes) putWindows(e []byte, l int) {
	var ws []int
	for i, w := range r.slots {
		if w.used && w.key.plen == l {
			ws = append(ws, i)
		}
	}
	slices.SortFunc(ws, func(a, b int) int {
		return cmp.Compare(r.ranges[r.slots[b].key], r.ranges[r.slots[a].key])
	})
	ws = ws[:min(len(ws), winPerLen)]
	binary.NativeEndian.PutUint32(e[20:24], uint32(len(ws)))
	for j, slot := range ws {
		d := e[24+j*winDescSize:]
		k := r.slots[slot].key
		binary.NativeEndian.PutUint64(d[0:8], winMask(k.plen))
		binary.NativeEndian.PutUint64(d[8:16], k.base)
		binary.NativeEndian.PutUint32(d[16:20], uint32(64-k.plen))
		binary.NativeEndian.PutUint32(d[20:24], uint32(slot*winWords))
	}
}

// windowChecks is the program's window test for the length at off in
// routeLens (r8), entry i: for each of its windows, if the destination's
// first 64 bits (fp-56) fall in it, its bit sends the frame to redirect
// (set) or to next (clear); no window holding it goes on to hash. r9 is
// free by now (the payload length was checked) and holds the bit number
// across the bitmap lookup.
func windowChecks(bits *ebpf.Map, off int16, i int, hash, next string) asm.Instructions {
	is := asm.Instructions{asm.LoadMem(asm.R1, asm.R8, off+20, asm.Word)}
	for w := range winPerLen {
		d := off + 24 + int16(w*winDescSize)
		miss := hash
		if w+1 < winPerLen {
			miss = fmt.Sprintf("rt%d_w%d", i, w+1)
		}
		first := asm.JLE.Imm(asm.R1, int32(w), hash)
		if w > 0 {
			first = first.WithSymbol(fmt.Sprintf("rt%d_w%d", i, w))
		}
		is = append(is,
			first,
			asm.LoadMem(asm.R2, asm.RFP, -56, asm.DWord),
			asm.LoadMem(asm.R3, asm.R8, d, asm.DWord),
			asm.And.Reg(asm.R2, asm.R3),
			asm.LoadMem(asm.R3, asm.R8, d+8, asm.DWord),
			asm.JNE.Reg(asm.R2, asm.R3, miss),
			// In the window: bit (first 64 bits >> shift) mod 2^winBits.
			asm.LoadMem(asm.R2, asm.RFP, -56, asm.DWord),
			asm.LoadMem(asm.R3, asm.R8, d+16, asm.Word),
			asm.And.Imm(asm.R3, 63),
			asm.RSh.Reg(asm.R2, asm.R3),
			asm.And.Imm(asm.R2, 1<<winBits-1),
			asm.Mov.Reg(asm.R9, asm.R2),
			asm.And.Imm(asm.R9, 63),
			asm.RSh.Imm(asm.R2, 6),
			asm.LoadMem(asm.R3, asm.R8, d+20, asm.Word),
			asm.Add.Reg(asm.R2, asm.R3),
			asm.StoreMem(asm.RFP, -60, asm.R2, asm.Word),
		)
		is = append(is, lookup(bits, -60)...)
		is = append(is,
			asm.JEq.Imm(asm.R0, 0, next),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
			asm.RSh.Reg(asm.R1, asm.R9),
			asm.And.Imm(asm.R1, 1),
			asm.JNE.Imm(asm.R1, 0, "redirect"),
			asm.Ja.Label(next),
		)
	}
	return is
}

// Windows returns how many windows are in use and how many prefixes they
// hold (the rest are found by the hash alone), for the log.
func (r *Routes) Windows() (windows, prefixes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.wins {
		windows++
		prefixes += r.ranges[k]
	}
	return windows, prefixes
}
