package xsk

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// XDP verdicts (enum xdp_action) the program returns.
const (
	xdpAborted  = 0
	xdpPass     = 2
	xdpRedirect = 4
)

// Slots of the program's per-CPU verdict counters (ProgramStats).
const (
	slotRedirect = iota // bpf_redirect_map gave XDP_REDIRECT
	slotPass            // a pass rule sent the frame to the kernel
	slotNoSocket        // redirect fell back to XDP_PASS: no socket on the queue
	slotAborted         // redirect gave anything else: the frame is lost
	numSlots
)

// Offsets into an untagged Ethernet frame carrying IPv6.
const (
	offEtherType = 12
	offIP6       = 14
	offPayLen    = offIP6 + 4
	offNextHdr   = offIP6 + 6
	offHopLimit  = offIP6 + 7
	offDst       = offIP6 + 24
	offL4        = offIP6 + 40 // 54: first byte after the fixed header
)

// struct xdp_md field offsets.
const (
	mdData         = 0
	mdDataEnd      = 4
	mdRxQueueIndex = 16
)

// programInsns returns the XDP program. Every frame goes to the kernel
// (XDP_PASS) except IPv6 that the dataplane forwards, which goes to the
// AF_XDP socket registered for the receiving queue:
//
//	not IPv6 (incl. VLAN-tagged) ............................ pass
//	shorter than its IPv6 payload length says ................ pass
//	dst ff00::/8 or fe80::/10 ................................ pass
//	next header hop-by-hop (MLD, router alert) ............... pass
//	ICMPv6 type 133..137 (RS, RA, NS, NA, Redirect) .......... pass
//	UDP with source or destination port 546 or 547 ........... pass
//	ICMPv6 or UDP header cut short by the payload length ..... pass
//	hop limit <= 1 (the kernel sends Time Exceeded) .......... pass
//	dst in the local-address map (the relay itself) .......... pass
//	routes set and dst in none of its prefixes ............... pass
//	otherwise ........ bpf_redirect_map(xsks, rx_queue_index, XDP_PASS)
//
// Every frame is counted once in the per-CPU array verdicts (slot*
// constants): redirected, passed by a rule, fell back to the kernel
// because the queue has no socket registered, or aborted (the redirect
// returned anything else, which loses the frame). The program returns the
// verdict it counted.
//
// routes (a Routes: a hash map per prefix length in use) may be nil:
// the program then has no route lookup at all (downlink ports). With it, a destination no delegated
// prefix holds goes to the kernel (the uplink's no_route: pass).
//
// The XDP_PASS in the redirect's flags makes a queue with no socket
// registered fall back to the kernel. Other next headers (TCP, other
// extension headers) are redirected without looking further: the
// dataplane forwards by addresses.
//
// Registers: r6 ctx, r2 data, r3 data_end, r9 payload length, r7 next
// header (then the verdict, at the end), r8 hop limit; r4 and r5
// scratch.
func programInsns(xsks, locals *ebpf.Map, routes *Routes, verdicts *ebpf.Map) asm.Instructions {
	const pass = "pass"
	// need jumps to pass unless data+n <= data_end; it is the bounds
	// check the verifier wants before any load below data+n. sym labels
	// its first instruction, if not empty.
	need := func(n int32, sym string) asm.Instructions {
		first := asm.Mov.Reg(asm.R4, asm.R2)
		if sym != "" {
			first = first.WithSymbol(sym)
		}
		return asm.Instructions{
			first,
			asm.Add.Imm(asm.R4, n),
			asm.JGT.Reg(asm.R4, asm.R3, pass),
		}
	}
	var p asm.Instructions
	add := func(is ...asm.Instruction) { p = append(p, is...) }
	add(
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, mdData, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, mdDataEnd, asm.Word),
	)
	// Ethernet: type 0x86dd, read in network order.
	add(need(offIP6, "")...)
	add(
		asm.LoadMem(asm.R5, asm.R2, offEtherType, asm.Half),
		asm.HostTo(asm.BE, asm.R5, asm.Half),
		asm.JNE.Imm(asm.R5, 0x86dd, pass),
	)
	// The fixed IPv6 header, then the frame must hold the payload its
	// payload length announces (a truncated frame is the kernel's to
	// drop and count). Ethernet padding may make it longer, never
	// shorter.
	add(need(offL4, "")...)
	add(
		asm.LoadMem(asm.R9, asm.R2, offPayLen, asm.Half),
		asm.HostTo(asm.BE, asm.R9, asm.Half),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Reg(asm.R4, asm.R9),
		asm.Add.Imm(asm.R4, offL4),
		asm.JGT.Reg(asm.R4, asm.R3, pass),
	)
	// Destination scope: multicast ff00::/8, link-local fe80::/10.
	add(
		asm.LoadMem(asm.R5, asm.R2, offDst, asm.Byte),
		asm.JEq.Imm(asm.R5, 0xff, pass),
		asm.JNE.Imm(asm.R5, 0xfe, "nexthdr"),
		asm.LoadMem(asm.R5, asm.R2, offDst+1, asm.Byte),
		asm.And.Imm(asm.R5, 0xc0),
		asm.JEq.Imm(asm.R5, 0x80, pass),
	)
	// Next header, checked only when it directly follows the fixed
	// header. The ICMPv6 and UDP fields read must lie within the payload
	// length (r9), not in Ethernet padding, and within the frame (the
	// verifier's check).
	add(
		asm.LoadMem(asm.R7, asm.R2, offNextHdr, asm.Byte).WithSymbol("nexthdr"),
		asm.JEq.Imm(asm.R7, 0, pass), // hop-by-hop options
		asm.JEq.Imm(asm.R7, unix.IPPROTO_ICMPV6, "icmp6"),
		asm.JEq.Imm(asm.R7, unix.IPPROTO_UDP, "udp"),
		asm.Ja.Label("hoplimit"),
	)
	// ICMPv6: neighbour discovery and router messages stay in the kernel.
	add(need(offL4+1, "icmp6")...)
	add(
		asm.JLT.Imm(asm.R9, 1, pass),
		asm.LoadMem(asm.R5, asm.R2, offL4, asm.Byte),
		asm.JLT.Imm(asm.R5, 133, "hoplimit"),
		asm.JGT.Imm(asm.R5, 137, "hoplimit"),
		asm.Ja.Label(pass),
	)
	// UDP: DHCPv6 (546 client, 547 server/relay) either way.
	add(need(offL4+4, "udp")...)
	add(asm.JLT.Imm(asm.R9, 4, pass))
	for _, off := range []int16{offL4, offL4 + 2} {
		add(
			asm.LoadMem(asm.R5, asm.R2, off, asm.Half),
			asm.HostTo(asm.BE, asm.R5, asm.Half),
			asm.JEq.Imm(asm.R5, 546, pass),
			asm.JEq.Imm(asm.R5, 547, pass),
		)
	}
	// Hop limit <= 1: the kernel answers with Time Exceeded.
	add(
		asm.LoadMem(asm.R8, asm.R2, offHopLimit, asm.Byte).WithSymbol("hoplimit"),
		asm.JLE.Imm(asm.R8, 1, pass),
	)
	// Local addresses: copy the destination to the stack as the key.
	// (data+38 is 8-byte aligned under NET_IP_ALIGN, so even strict
	// alignment accepts these loads.)
	add(
		asm.LoadMem(asm.R5, asm.R2, offDst, asm.DWord),
		asm.StoreMem(asm.RFP, -16, asm.R5, asm.DWord),
		asm.LoadMem(asm.R5, asm.R2, offDst+8, asm.DWord),
		asm.StoreMem(asm.RFP, -8, asm.R5, asm.DWord),
	)
	add(lookup(locals, -16)...)
	add(asm.JNE.Imm(asm.R0, 0, pass))
	// Delegated prefixes (Routes): for each length in use, the key
	// (struct routeKey: u32 plen, then the destination masked to plen
	// bits) is built at fp-44 from the destination at fp-16 and the
	// length's mask, and looked up; a hit goes to the socket, a miss on
	// every length to the kernel. r8 holds the lengths (struct
	// routeLens), r7 how many there are; the lookups are unrolled, one
	// block per possible length.
	//
	// Before its hash lookup, each of the winLens most used lengths
	// tries its windows (routewin_linux.go): if the destination's first
	// 64 bits, in host order at fp-56, fall in one, its bit in the
	// window's bitmap decides for that length, and the hash is not read.
	if routes != nil {
		add(asm.StoreImm(asm.RFP, -48, 0, asm.Word))
		add(lookup(routes.lens, -48)...)
		add(
			asm.JEq.Imm(asm.R0, 0, pass),
			asm.Mov.Reg(asm.R8, asm.R0),
			asm.LoadMem(asm.R7, asm.R8, 0, asm.Word),
			asm.LoadMem(asm.R1, asm.RFP, -16, asm.DWord),
			asm.HostTo(asm.BE, asm.R1, asm.DWord),
			asm.StoreMem(asm.RFP, -56, asm.R1, asm.DWord),
		)
		for i := range routeLensMax {
			off := int16(routeLensHdr + i*routeLenSize)
			next := fmt.Sprintf("rt%d", i+1)
			add(asm.JLE.Imm(asm.R7, int32(i), pass).WithSymbol(fmt.Sprintf("rt%d", i)))
			hash := fmt.Sprintf("rt%d_hash", i)
			if i < winLens {
				add(windowChecks(routes.bits, off, i, hash, next)...)
			}
			add(
				asm.LoadMem(asm.R1, asm.R8, off, asm.DWord).WithSymbol(hash),
				asm.LoadMem(asm.R2, asm.RFP, -16, asm.DWord),
				asm.And.Reg(asm.R2, asm.R1),
				asm.StoreMem(asm.RFP, -40, asm.R2, asm.DWord),
				asm.LoadMem(asm.R1, asm.R8, off+8, asm.DWord),
				asm.LoadMem(asm.R2, asm.RFP, -8, asm.DWord),
				asm.And.Reg(asm.R2, asm.R1),
				asm.StoreMem(asm.RFP, -32, asm.R2, asm.DWord),
				asm.LoadMem(asm.R1, asm.R8, off+16, asm.Word),
				asm.StoreMem(asm.RFP, -44, asm.R1, asm.Word),
			)
			add(lookup(routes.m, -44)...)
			add(asm.JNE.Imm(asm.R0, 0, "redirect"))
		}
		add(asm.Ja.Label(pass).WithSymbol(fmt.Sprintf("rt%d", routeLensMax)))
	}
	// To the socket of this queue, or to the kernel if it has none. The
	// verdict goes to r7 and its counter slot to r1.
	add(
		asm.LoadMapPtr(asm.R1, xsks.FD()).WithSymbol("redirect"),
		asm.LoadMem(asm.R2, asm.R6, mdRxQueueIndex, asm.Word),
		asm.Mov.Imm(asm.R3, xdpPass),
		asm.FnRedirectMap.Call(),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.Mov.Imm(asm.R1, slotRedirect),
		asm.JEq.Imm(asm.R0, xdpRedirect, "count"),
		asm.Mov.Imm(asm.R1, slotNoSocket),
		asm.JEq.Imm(asm.R0, xdpPass, "count"),
		asm.Mov.Imm(asm.R1, slotAborted),
		asm.Ja.Label("count"),
	)
	add(
		asm.Mov.Imm(asm.R7, xdpPass).WithSymbol(pass),
		asm.Mov.Imm(asm.R1, slotPass),
	)
	// Count: verdicts[r1] += 1 on this CPU, then return r7.
	add(asm.StoreMem(asm.RFP, -24, asm.R1, asm.Word).WithSymbol("count"))
	add(lookup(verdicts, -24)...)
	add(
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R0, asm.R7).WithSymbol("out"),
		asm.Return(),
	)
	return p
}

// lookup calls bpf_map_lookup_elem(m, fp+off): the key is on the stack
// at off. The value's address, or 0, is in r0.
func lookup(m *ebpf.Map, off int16) asm.Instructions {
	return asm.Instructions{
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(off)),
		asm.FnMapLookupElem.Call(),
	}
}

// LocalAddrs is the BPF hash map of the relay's own addresses: frames to
// them go to the kernel. One LocalAddrs may serve the programs of every
// port. Its methods are safe for concurrent use (each is one system
// call).
type LocalAddrs struct {
	m *ebpf.Map
}

// NewLocalAddrs creates an empty map of up to max addresses (0:
// DefaultLocalMax).
func NewLocalAddrs(max int) (*LocalAddrs, error) {
	if max <= 0 {
		max = DefaultLocalMax
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "pdr_local",
		Type:       ebpf.Hash,
		KeySize:    16,
		ValueSize:  1,
		MaxEntries: uint32(max),
	})
	if err != nil {
		return nil, fmt.Errorf("xsk: create local-address map: %w", explainBPF(err))
	}
	return &LocalAddrs{m: m}, nil
}

func addrKey(a netip.Addr) ([16]byte, error) {
	if !a.Is6() || a.Is4In6() {
		return [16]byte{}, fmt.Errorf("xsk: local address %s is not IPv6", a)
	}
	return a.As16(), nil
}

// Add puts a into the map (its zone, if any, is ignored).
func (l *LocalAddrs) Add(a netip.Addr) error {
	k, err := addrKey(a)
	if err != nil {
		return err
	}
	if err := l.m.Put(k, uint8(1)); err != nil {
		return fmt.Errorf("xsk: add local address %s: %w", a, err)
	}
	return nil
}

// Delete removes a; removing an absent address is not an error.
func (l *LocalAddrs) Delete(a netip.Addr) error {
	k, err := addrKey(a)
	if err != nil {
		return err
	}
	if err := l.m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("xsk: delete local address %s: %w", a, err)
	}
	return nil
}

// Contains reports whether a is in the map.
func (l *LocalAddrs) Contains(a netip.Addr) (bool, error) {
	k, err := addrKey(a)
	if err != nil {
		return false, err
	}
	var v uint8
	err = l.m.Lookup(k, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	}
	return err == nil, err
}

// Close frees the map (once no program uses it: programs hold their own
// reference).
func (l *LocalAddrs) Close() error { return l.m.Close() }

// Routes holds the prefixes the relay routes (the delegated prefixes)
// for the XDP program: a program given one (ProgramConfig.Routes)
// passes frames whose destination none of them holds to the kernel. One
// Routes may serve several programs. Its methods are safe for
// concurrent use.
//
// The prefixes are in a BPF hash map keyed by length and masked address
// (struct routeKey), and the lengths in use are in a one-element array
// (struct routeLens): the program masks the destination to each length
// in turn and looks it up, one hash lookup per length in use. An edge
// delegates a few lengths (often one), so this costs far less than a
// longest-prefix-match trie, whose lookup walks a node per bit that
// branches (BenchmarkProgram: 100k /56s). Nothing needs the longest
// match here: any prefix holding the destination sends the frame to the
// plane, which does its own lookup.
//
// When a length comes into use or goes out of it, the lengths are
// rewritten in one map update; a frame that reads them during that
// update may miss a prefix of the length changing, and goes to the
// kernel as it did before the prefix was added or would after it is
// removed.
type Routes struct {
	m    *ebpf.Map // routeKey -> 1
	lens *ebpf.Map // 0 -> routeLens
	bits *ebpf.Map // word -> u64: the windows' bitmaps (routewin_linux.go)
	mem  *ebpf.Memory
	mu   sync.Mutex
	n    int
	per  [routeLensMax]int // prefixes by length
	// ranges counts the prefixes of each range of the lengths that may
	// have windows; wins names the ranges that have one, and slots the
	// windows by slot.
	ranges map[winKey]int
	wins   map[winKey]int
	slots  [winSlots]winSlot
}

// routeKeySize is sizeof(struct routeKey { u32 plen; u8 addr[16]; }):
// the address masked to plen bits.
const routeKeySize = 4 + 16

// routeLens is the array value naming the lengths in use, most used
// first:
//
//	struct routeLens {
//		u32 n; u32 pad;
//		struct {
//			u8 mask[16]; u32 plen;
//			u32 nwin; struct win win[winPerLen];
//		} len[129];
//	};
//
// mask is plen one-bits in network order: the program ANDs the
// destination with it, 8 bytes at a time, with no byte swapping. nwin
// and win are the length's windows (routewin_linux.go).
const (
	routeLensMax     = 129 // every IPv6 prefix length, so none can overflow
	routeLenSize     = 16 + 8 + winPerLen*winDescSize
	routeLensHdr     = 8
	routeLensValSize = routeLensHdr + routeLensMax*routeLenSize
)

// NewRoutes creates an empty route map of up to max prefixes (0:
// DefaultRouteMax).
func NewRoutes(max int) (*Routes, error) {
	if max <= 0 {
		max = DefaultRouteMax
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "pdr_routes",
		Type:       ebpf.Hash,
		KeySize:    routeKeySize,
		ValueSize:  1,
		MaxEntries: uint32(max),
		Flags:      unix.BPF_F_NO_PREALLOC, // memory for the prefixes there, not for max
	})
	if err != nil {
		return nil, fmt.Errorf("xsk: create route map: %w", explainBPF(err))
	}
	lens, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "pdr_route_lens",
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  routeLensValSize,
		MaxEntries: 1,
	})
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("xsk: create route length map: %w", explainBPF(err))
	}
	// The bitmaps are mapped into this process: a bit changes with a
	// store, not a system call (a restart fills a million prefixes).
	bits, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "pdr_route_bits",
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: winSlots * winWords,
		Flags:      unix.BPF_F_MMAPABLE,
	})
	if err != nil {
		m.Close()
		lens.Close()
		return nil, fmt.Errorf("xsk: create route window map: %w", explainBPF(err))
	}
	mem, err := bits.Memory()
	if err != nil {
		m.Close()
		lens.Close()
		bits.Close()
		return nil, fmt.Errorf("xsk: map route windows: %w", err)
	}
	return &Routes{m: m, lens: lens, bits: bits, mem: mem, ranges: map[winKey]int{}, wins: map[winKey]int{}}, nil
}

// routeKey is the map key of a's first bits bits.
func routeKey(a netip.Addr, bits int) [routeKeySize]byte {
	var k [routeKeySize]byte
	binary.NativeEndian.PutUint32(k[:4], uint32(bits))
	p, _ := a.Prefix(bits)
	a16 := p.Addr().As16()
	copy(k[4:], a16[:])
	return k
}

func prefixKey(p netip.Prefix) ([routeKeySize]byte, error) {
	switch {
	case !p.IsValid():
		return [routeKeySize]byte{}, fmt.Errorf("xsk: invalid route prefix %s", p)
	case !p.Addr().Is6():
		return [routeKeySize]byte{}, fmt.Errorf("xsk: route prefix %s is not IPv6", p)
	case p.Masked() != p:
		return [routeKeySize]byte{}, fmt.Errorf("xsk: route prefix %s has host bits set (want %s)", p, p.Masked())
	}
	return routeKey(p.Addr(), p.Bits()), nil
}

// lengths returns the lengths in use, most used first (then longest).
// Call with mu held.
func (r *Routes) lengths() []int {
	var ls []int
	for l, n := range r.per {
		if n > 0 {
			ls = append(ls, l)
		}
	}
	slices.SortFunc(ls, func(a, b int) int {
		if c := cmp.Compare(r.per[b], r.per[a]); c != 0 {
			return c
		}
		return cmp.Compare(b, a)
	})
	return ls
}

// publishLengths writes the lengths in use for the program. Call with
// mu held.
func (r *Routes) publishLengths() error {
	var v [routeLensValSize]byte
	ls := r.lengths()
	binary.NativeEndian.PutUint32(v[:4], uint32(len(ls)))
	for i, l := range ls {
		e := v[routeLensHdr+i*routeLenSize:]
		for b := range l {
			e[b/8] |= 0x80 >> (b % 8)
		}
		binary.NativeEndian.PutUint32(e[16:20], uint32(l))
		if i < winLens {
			r.putWindows(e, l)
		}
	}
	if err := r.lens.Update(uint32(0), v[:], ebpf.UpdateAny); err != nil {
		return fmt.Errorf("xsk: route lengths: %w", err)
	}
	// Windows retired (Delete) are out of the program's sight now.
	for i, w := range r.slots {
		if w.retired {
			r.slots[i] = winSlot{}
		}
	}
	return nil
}

// Add puts p, an IPv6 prefix with no host bits set, into the map.
// Adding a prefix already there is not an error. A full map fails.
func (r *Routes) Add(p netip.Prefix) error {
	k, err := prefixKey(p)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	err = r.m.Update(k, uint8(1), ebpf.UpdateNoExist)
	switch {
	case errors.Is(err, ebpf.ErrKeyExist):
		return nil
	case err != nil:
		return fmt.Errorf("xsk: add route %s: %w", p, err)
	}
	if err := r.added(p); err != nil {
		_ = r.m.Delete(k)
		return fmt.Errorf("xsk: add route %s: %w", p, err)
	}
	return nil
}

// added counts p, now in the hash, and sets its window bit: in a new
// window if p is its range's first prefix and a slot is free. A new
// length or window is published. On error nothing has changed but the
// hash. Call with mu held.
func (r *Routes) added(p netip.Prefix) error {
	wk, idx, windowed := rangeOf(p)
	slot, newWin := -1, false
	if windowed {
		var ok bool
		if slot, ok = r.wins[wk]; !ok {
			slot = -1
			if r.ranges[wk] == 0 {
				slot = r.freeSlot()
				newWin = slot >= 0
			}
		}
		if slot >= 0 {
			if err := r.setBit(slot, idx, true); err != nil {
				return err
			}
		}
		if newWin {
			r.slots[slot] = winSlot{used: true, key: wk}
			r.wins[wk] = slot
		}
		r.ranges[wk]++
	}
	r.n++
	r.per[p.Bits()]++
	if r.per[p.Bits()] > 1 && !newWin {
		return nil
	}
	// A new length or window: the program looks for it from now on.
	if err := r.publishLengths(); err != nil {
		r.n--
		r.per[p.Bits()]--
		if windowed {
			if r.ranges[wk]--; r.ranges[wk] == 0 {
				delete(r.ranges, wk)
			}
			if slot >= 0 {
				_ = r.setBit(slot, idx, false)
			}
			if newWin {
				r.slots[slot] = winSlot{}
				delete(r.wins, wk)
			}
		}
		return err
	}
	return nil
}

// Delete removes p (exactly that prefix, not the prefixes inside it);
// removing an absent prefix is not an error.
func (r *Routes) Delete(p netip.Prefix) error {
	k, err := prefixKey(p)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	wk, idx, windowed := rangeOf(p)
	slot, inWin := r.wins[wk]
	inWin = windowed && inWin
	if inWin {
		// The bit first: no frame finds it set once p leaves the hash.
		if err := r.setBit(slot, idx, false); err != nil {
			return fmt.Errorf("xsk: delete route %s: %w", p, err)
		}
	}
	err = r.m.Delete(k)
	switch {
	case errors.Is(err, ebpf.ErrKeyNotExist):
		return nil
	case err != nil:
		// Still in the hash, its bit clear: frames to it go to the
		// kernel, as they will once it is gone.
		return fmt.Errorf("xsk: delete route %s: %w", p, err)
	}
	r.n--
	r.per[p.Bits()]--
	freed := false
	if windowed {
		if r.ranges[wk]--; r.ranges[wk] == 0 {
			delete(r.ranges, wk)
			if inWin {
				// Its bits are all clear; the slot is reused only once
				// the program no longer reads it (after the publish).
				delete(r.wins, wk)
				r.slots[slot].retired = true
				freed = true
			}
		}
	}
	if r.per[p.Bits()] > 0 && !freed {
		return nil
	}
	// Its length's last prefix, or its window's: the program stops
	// looking for it. A failure here leaves a length with no prefix,
	// which costs a lookup and changes no verdict, or a window whose
	// bits are clear, which the slot keeps until a later publish.
	if err := r.publishLengths(); err != nil {
		return fmt.Errorf("xsk: delete route %s: %w", p, err)
	}
	return nil
}

// Contains reports whether a prefix in the map holds a: the lookups the
// program makes, done from user space. False for a non-IPv6 address or
// when the lookups fail.
func (r *Routes) Contains(a netip.Addr) bool {
	if !a.Is6() {
		return false
	}
	r.mu.Lock()
	ls := r.lengths()
	r.mu.Unlock()
	var v uint8
	for _, l := range ls {
		if r.m.Lookup(routeKey(a, l), &v) == nil {
			return true
		}
	}
	return false
}

// Len returns the number of prefixes in the map.
func (r *Routes) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// Close frees the maps (once no program uses them: programs hold their
// own references).
func (r *Routes) Close() error { return errors.Join(r.m.Close(), r.lens.Close(), r.bits.Close()) }

// Program is the XDP program of one port with its XSKMAP. The XSKMAP is
// indexed by receive queue, and queue numbers are per interface, so each
// interface gets its own Program; they may share one LocalAddrs.
//
// Attach, Detach, Register, Unregister and Close must not race each
// other; Register and Unregister are safe while traffic flows.
type Program struct {
	prog      *ebpf.Program
	xsks      *ebpf.Map
	verdicts  *ebpf.Map // per-CPU verdict counters (ProgramStats)
	locals    *LocalAddrs
	ownLocals bool
	routes    *Routes
	queues    int

	link    link.Link
	ifindex int
	mode    Mode
}

// NewProgram loads the XDP program. It needs CAP_BPF and CAP_NET_ADMIN
// (root).
func NewProgram(cfg ProgramConfig) (*Program, error) {
	q := cfg.Queues
	if q <= 0 {
		q = DefaultQueues
	}
	xsks, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "pdr_xsks",
		Type:       ebpf.XSKMap,
		KeySize:    4,
		ValueSize:  4,
		MaxEntries: uint32(q),
	})
	if err != nil {
		return nil, fmt.Errorf("xsk: create xskmap: %w", explainBPF(err))
	}
	p := &Program{xsks: xsks, locals: cfg.Locals, routes: cfg.Routes, queues: q}
	p.verdicts, err = ebpf.NewMap(&ebpf.MapSpec{
		Name:       "pdr_verdicts",
		Type:       ebpf.PerCPUArray,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: numSlots,
	})
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("xsk: create verdict counters: %w", explainBPF(err))
	}
	if p.locals == nil {
		if p.locals, err = NewLocalAddrs(0); err != nil {
			p.Close()
			return nil, err
		}
		p.ownLocals = true
	}
	p.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "pdr_xdp",
		Type:         ebpf.XDP,
		License:      "Dual BSD/GPL", // bpf_redirect_map is not GPL-only; any string would do
		Instructions: programInsns(xsks, p.locals.m, p.routes, p.verdicts),
	})
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("xsk: load xdp program: %w", explainBPF(err))
	}
	return p, nil
}

// Locals returns the program's local-address map.
func (p *Program) Locals() *LocalAddrs { return p.locals }

// Routes returns the route map given in ProgramConfig, nil if none.
func (p *Program) Routes() *Routes { return p.routes }

// Attach attaches the program to an interface (in the calling thread's
// network namespace) and returns the mode it got. ModeAuto tries native
// and falls back to generic (not after a permission error, or when
// another program holds the interface). On error the mode returned is
// ModeAuto. The attachment is a BPF link: it holds
// while this process holds it, and ends with Detach, Close or the
// process. The error names the cause (permission, driver, another
// program already there).
func (p *Program) Attach(ifindex int, mode Mode) (Mode, error) {
	if p.prog == nil {
		return ModeAuto, ErrClosed
	}
	if p.link != nil {
		return ModeAuto, fmt.Errorf("xsk: program already attached to %s", ifName(p.ifindex))
	}
	// The kernel answers EINVAL, not ENODEV, for a missing interface.
	if _, err := net.InterfaceByIndex(ifindex); err != nil {
		return ModeAuto, fmt.Errorf("xsk: attach xdp to ifindex %d: no such interface in this network namespace: %w", ifindex, err)
	}
	try := func(m Mode) error {
		flags := link.XDPDriverMode
		if m == ModeGeneric {
			flags = link.XDPGenericMode
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: p.prog, Interface: ifindex, Flags: flags})
		if err != nil {
			return fmt.Errorf("xsk: attach xdp to %s in %s mode: %w", ifName(ifindex), m, explainAttach(err, m))
		}
		p.link, p.ifindex, p.mode = l, ifindex, m
		return nil
	}
	switch mode {
	case ModeNative, ModeGeneric:
		if err := try(mode); err != nil {
			return ModeAuto, err
		}
		return mode, nil
	case ModeAuto:
		nerr := try(ModeNative)
		if nerr == nil {
			return ModeNative, nil
		}
		if errors.Is(nerr, os.ErrPermission) || errors.Is(nerr, unix.EBUSY) {
			return ModeAuto, nerr
		}
		if gerr := try(ModeGeneric); gerr != nil {
			return ModeAuto, fmt.Errorf("%w; and %w", nerr, gerr)
		}
		return ModeGeneric, nil
	}
	return ModeAuto, fmt.Errorf("xsk: bad attach mode %v", mode)
}

// Mode returns the mode of the current attachment (ModeAuto if none).
func (p *Program) Mode() Mode {
	if p.link == nil {
		return ModeAuto
	}
	return p.mode
}

// Ifindex returns the interface attached to, 0 if none.
func (p *Program) Ifindex() int {
	if p.link == nil {
		return 0
	}
	return p.ifindex
}

// Detach removes the program from its interface by closing the BPF
// link: synchronous in both modes, and idempotent. Sockets stay
// registered and the program can be attached again.
func (p *Program) Detach() error {
	if p.link == nil {
		return nil
	}
	err := p.link.Close()
	p.link, p.ifindex = nil, 0
	if err != nil {
		return fmt.Errorf("xsk: detach xdp: %w", err)
	}
	return nil
}

// Register makes frames the program redirects on queue go to s. s must
// be bound to this program's interface and that queue: the kernel drops
// (does not pass) a redirected frame whose socket is bound elsewhere.
func (p *Program) Register(queue int, s *Socket) error {
	if p.xsks == nil {
		return ErrClosed
	}
	if s.fd < 0 {
		return ErrClosed
	}
	if queue < 0 || queue >= p.queues {
		return fmt.Errorf("xsk: register queue %d: xskmap has %d slots", queue, p.queues)
	}
	if s.info.Queue != queue || (p.link != nil && s.info.Ifindex != p.ifindex) {
		return fmt.Errorf("xsk: register socket of ifindex %d queue %d on queue %d of ifindex %d",
			s.info.Ifindex, s.info.Queue, queue, p.ifindex)
	}
	if err := p.xsks.Put(uint32(queue), uint32(s.fd)); err != nil {
		return fmt.Errorf("xsk: register socket on queue %d: %w", queue, err)
	}
	return nil
}

// Unregister sends queue's frames back to the kernel. Closing a socket
// unregisters it by itself.
func (p *Program) Unregister(queue int) error {
	if p.xsks == nil {
		return ErrClosed
	}
	if err := p.xsks.Delete(uint32(queue)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("xsk: unregister queue %d: %w", queue, err)
	}
	return nil
}

// Close detaches the program and frees it, its XSKMAP and its own
// LocalAddrs (not one given in ProgramConfig). Idempotent.
func (p *Program) Close() error {
	err := p.Detach()
	if p.prog != nil {
		p.prog.Close()
		p.prog = nil
	}
	if p.xsks != nil {
		p.xsks.Close()
		p.xsks = nil
	}
	if p.verdicts != nil {
		p.verdicts.Close()
		p.verdicts = nil
	}
	if p.ownLocals && p.locals != nil {
		p.locals.Close()
	}
	p.locals = nil
	p.routes = nil
	return err
}

// Stats returns the program's verdict counters, summed over the CPUs.
// Safe to call from any goroutine while traffic flows, not after Close.
func (p *Program) Stats() (ProgramStats, error) {
	if p.verdicts == nil {
		return ProgramStats{}, ErrClosed
	}
	var sums [numSlots]uint64
	var per []uint64
	for slot := range uint32(numSlots) {
		if err := p.verdicts.Lookup(slot, &per); err != nil {
			return ProgramStats{}, fmt.Errorf("xsk: read verdict counter %d: %w", slot, err)
		}
		for _, n := range per {
			sums[slot] += n
		}
	}
	return ProgramStats{Redirected: sums[slotRedirect], Passed: sums[slotPass],
		NoSocket: sums[slotNoSocket], Aborted: sums[slotAborted]}, nil
}

// run test-runs the program on one frame (BPF_PROG_TEST_RUN) and returns
// its verdict. The kernel refuses frames shorter than 14 bytes.
func (p *Program) run(frame []byte) (uint32, error) {
	return p.prog.Run(&ebpf.RunOptions{Data: frame})
}

func ifName(ifindex int) string {
	if ifi, err := net.InterfaceByIndex(ifindex); err == nil {
		return fmt.Sprintf("%s (ifindex %d)", ifi.Name, ifindex)
	}
	return fmt.Sprintf("ifindex %d", ifindex)
}

func explainBPF(err error) error {
	if errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("permission denied (needs root, or CAP_BPF and CAP_NET_ADMIN): %w", err)
	}
	return err
}

func explainAttach(err error, m Mode) error {
	var hint string
	switch {
	case errors.Is(err, os.ErrPermission):
		hint = "permission denied (needs root, or CAP_BPF and CAP_NET_ADMIN)"
	case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, ebpf.ErrNotSupported):
		if m == ModeNative {
			hint = "the driver does not support native XDP (use generic mode)"
		} else {
			hint = "XDP not supported"
		}
	case errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST):
		hint = "another XDP program is already attached to the interface"
	case errors.Is(err, unix.ENODEV):
		hint = "no such interface in this network namespace"
	case errors.Is(err, unix.ERANGE):
		hint = "MTU too large for native XDP on this driver (veth: about 3500 with 4 KiB pages)"
	case errors.Is(err, unix.ENOSPC) && m == ModeNative:
		hint = "the driver refused native XDP (veth: fewer rx queues than its peer has tx queues)"
	case errors.Is(err, unix.EINVAL) && m == ModeNative:
		hint = "the driver refused native XDP"
	default:
		return err
	}
	return fmt.Errorf("%s: %w", hint, err)
}
