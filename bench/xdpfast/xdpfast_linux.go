package xdpfast

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// XDP verdicts (enum xdp_action).
const (
	xdpDrop = 1
	xdpPass = 2
)

// Counter indices in the per-CPU stats array.
const (
	cForwarded = iota
	cSpoofed
	cLoop
	cPass
	nCounters
)

// Counters are the program's verdicts, summed over CPUs.
type Counters struct {
	Forwarded uint64 `json:"forwarded"`
	Spoofed   uint64 `json:"spoofed"`
	Loop      uint64 `json:"loop"`
	Pass      uint64 `json:"pass"`
}

// Frame offsets (untagged Ethernet, IPv6) and struct xdp_md fields.
const (
	offEtherType = 12
	offPayLen    = 18
	offNextHdr   = 20
	offHopLimit  = 21
	offSrc       = 22
	offDst       = 38
	offL4        = 54

	mdData           = 0
	mdDataEnd        = 4
	mdIngressIfindex = 12
)

// lpmKeySize is struct bpf_lpm_trie_key with a 16-byte address.
const lpmKeySize = 20

// nextHop is a route's value: the port it leaves by and the MAC
// addresses to write, 16 bytes.
type nextHop struct {
	Ifindex uint32
	Dst     [6]byte
	Src     [6]byte
}

// Fast is the loaded program and its maps.
type Fast struct {
	prog    *ebpf.Program
	routes  *ebpf.Map // LPM: destination prefix -> nextHop
	sources *ebpf.Map // LPM: allowed source prefix -> ifindex of its port
	ports   *ebpf.Map // hash: ifindex of a downlink -> 1 (sources checked)
	tx      *ebpf.Map // devmap hash: ifindex -> ifindex
	stats   *ebpf.Map // per-CPU array of nCounters u64
	links   []link.Link
}

// New loads the program with room for max routes and as many sources.
func New(max int) (*Fast, error) {
	f := &Fast{}
	var err error
	mk := func(name string, t ebpf.MapType, k, v, n uint32, flags uint32) *ebpf.Map {
		if err != nil {
			return nil
		}
		var m *ebpf.Map
		m, err = ebpf.NewMap(&ebpf.MapSpec{Name: name, Type: t, KeySize: k, ValueSize: v, MaxEntries: n, Flags: flags})
		if err != nil {
			err = fmt.Errorf("xdpfast: create map %s: %w", name, err)
		}
		return m
	}
	f.routes = mk("xf_routes", ebpf.LPMTrie, lpmKeySize, 16, uint32(max+1), unix.BPF_F_NO_PREALLOC)
	f.sources = mk("xf_sources", ebpf.LPMTrie, lpmKeySize, 4, uint32(max+1), unix.BPF_F_NO_PREALLOC)
	f.ports = mk("xf_ports", ebpf.Hash, 4, 4, 64, 0)
	f.tx = mk("xf_tx", ebpf.DevMapHash, 4, 4, 64, 0)
	f.stats = mk("xf_stats", ebpf.PerCPUArray, 4, 8, nCounters, 0)
	if err == nil {
		f.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
			Name: "xf_fwd", Type: ebpf.XDP, License: "Dual BSD/GPL",
			Instructions: f.insns(),
		})
		if err != nil {
			err = fmt.Errorf("xdpfast: load program: %w", err)
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// insns is the program; see the package doc for what it does.
//
// Registers: r6 ctx, r9 data (bounds-checked to the end of the fixed
// IPv6 header), r7 the ingress ifindex, then the route's next hop (r8).
func (f *Fast) insns() asm.Instructions {
	const pass = "pass"
	var p asm.Instructions
	add := func(is ...asm.Instruction) { p = append(p, is...) }
	// need jumps to pass unless data+n <= data_end.
	need := func(n int32) []asm.Instruction {
		return []asm.Instruction{asm.Mov.Reg(asm.R4, asm.R9), asm.Add.Imm(asm.R4, n), asm.JGT.Reg(asm.R4, asm.R3, pass)}
	}
	// count adds one to counter i; it clobbers r0-r5.
	count := func(i int32, sym string) []asm.Instruction {
		return []asm.Instruction{
			asm.StoreImm(asm.RFP, -48, int64(i), asm.Word).WithSymbol(sym),
			asm.LoadMapPtr(asm.R1, f.stats.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -48),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, sym+"_done"),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, 0).WithSymbol(sym + "_done"),
		}
	}
	// lpm looks the 16 bytes at data+off up in m with the key at fp+key
	// (8-byte aligned address part at fp+key+4); r0 is the value or 0.
	lpm := func(m *ebpf.Map, off int16, key int16) []asm.Instruction {
		return []asm.Instruction{
			asm.LoadMem(asm.R5, asm.R9, off, asm.DWord),
			asm.StoreMem(asm.RFP, key+4, asm.R5, asm.DWord),
			asm.LoadMem(asm.R5, asm.R9, off+8, asm.DWord),
			asm.StoreMem(asm.RFP, key+12, asm.R5, asm.DWord),
			asm.StoreImm(asm.RFP, key, 128, asm.Word),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, int32(key)),
			asm.FnMapLookupElem.Call(),
		}
	}
	add(
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R9, asm.R6, mdData, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, mdDataEnd, asm.Word),
	)
	add(need(offL4)...)
	add(
		asm.LoadMem(asm.R5, asm.R9, offEtherType, asm.Half),
		asm.HostTo(asm.BE, asm.R5, asm.Half),
		asm.JNE.Imm(asm.R5, 0x86dd, pass),
		// The frame holds the payload its IPv6 header announces.
		asm.LoadMem(asm.R5, asm.R9, offPayLen, asm.Half),
		asm.HostTo(asm.BE, asm.R5, asm.Half),
		asm.Mov.Reg(asm.R4, asm.R9),
		asm.Add.Reg(asm.R4, asm.R5),
		asm.Add.Imm(asm.R4, offL4),
		asm.JGT.Reg(asm.R4, asm.R3, pass),
		// Multicast and link-local destinations.
		asm.LoadMem(asm.R5, asm.R9, offDst, asm.Byte),
		asm.JEq.Imm(asm.R5, 0xff, pass),
		asm.JNE.Imm(asm.R5, 0xfe, "nexthdr"),
		asm.LoadMem(asm.R5, asm.R9, offDst+1, asm.Byte),
		asm.And.Imm(asm.R5, 0xc0),
		asm.JEq.Imm(asm.R5, 0x80, pass),
		asm.LoadMem(asm.R5, asm.R9, offNextHdr, asm.Byte).WithSymbol("nexthdr"),
		asm.JEq.Imm(asm.R5, 0, pass), // hop-by-hop
		asm.JEq.Imm(asm.R5, unix.IPPROTO_ICMPV6, "icmp6"),
		asm.JEq.Imm(asm.R5, unix.IPPROTO_UDP, "udp"),
		asm.Ja.Label("hoplimit"),
	)
	// Neighbour discovery and router messages, DHCPv6: the kernel's.
	add(asm.Mov.Reg(asm.R4, asm.R9).WithSymbol("icmp6"), asm.Add.Imm(asm.R4, offL4+1), asm.JGT.Reg(asm.R4, asm.R3, pass))
	add(
		asm.LoadMem(asm.R5, asm.R9, offL4, asm.Byte),
		asm.JLT.Imm(asm.R5, 133, "hoplimit"),
		asm.JGT.Imm(asm.R5, 137, "hoplimit"),
		asm.Ja.Label(pass),
	)
	add(asm.Mov.Reg(asm.R4, asm.R9).WithSymbol("udp"), asm.Add.Imm(asm.R4, offL4+4), asm.JGT.Reg(asm.R4, asm.R3, pass))
	for _, off := range []int16{offL4, offL4 + 2} {
		add(
			asm.LoadMem(asm.R5, asm.R9, off, asm.Half),
			asm.HostTo(asm.BE, asm.R5, asm.Half),
			asm.JEq.Imm(asm.R5, 546, pass),
			asm.JEq.Imm(asm.R5, 547, pass),
		)
	}
	add(
		asm.LoadMem(asm.R5, asm.R9, offHopLimit, asm.Byte).WithSymbol("hoplimit"),
		asm.JLE.Imm(asm.R5, 1, pass),
		// A downlink's frames must come from a prefix delegated on it.
		asm.LoadMem(asm.R7, asm.R6, mdIngressIfindex, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R7, asm.Word),
		asm.LoadMapPtr(asm.R1, f.ports.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "route"),
	)
	add(lpm(f.sources, offSrc, -44)...)
	add(
		asm.JEq.Imm(asm.R0, 0, "spoofed"),
		asm.LoadMem(asm.R5, asm.R0, 0, asm.Word),
		asm.JNE.Reg(asm.R5, asm.R7, "spoofed"),
	)
	route := lpm(f.routes, offDst, -20)
	route[0] = route[0].WithSymbol("route")
	add(route...)
	add(
		asm.JEq.Imm(asm.R0, 0, pass),
		asm.Mov.Reg(asm.R8, asm.R0),
		asm.LoadMem(asm.R5, asm.R8, 0, asm.Word),
		asm.JEq.Reg(asm.R5, asm.R7, "loop"),
		// Rewrite: hop limit, destination and source MAC.
		asm.LoadMem(asm.R5, asm.R9, offHopLimit, asm.Byte),
		asm.Sub.Imm(asm.R5, 1),
		asm.StoreMem(asm.R9, offHopLimit, asm.R5, asm.Byte),
		asm.LoadMem(asm.R5, asm.R8, 4, asm.Word),
		asm.StoreMem(asm.R9, 0, asm.R5, asm.Word),
		asm.LoadMem(asm.R5, asm.R8, 8, asm.Half),
		asm.StoreMem(asm.R9, 4, asm.R5, asm.Half),
		asm.LoadMem(asm.R5, asm.R8, 10, asm.Half),
		asm.StoreMem(asm.R9, 6, asm.R5, asm.Half),
		asm.LoadMem(asm.R5, asm.R8, 12, asm.Word),
		asm.StoreMem(asm.R9, 8, asm.R5, asm.Word),
		asm.LoadMem(asm.R7, asm.R8, 0, asm.Word),
	)
	add(count(cForwarded, "fwd")...)
	add(
		asm.LoadMapPtr(asm.R1, f.tx.FD()),
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnRedirectMap.Call(),
		asm.Return(),
	)
	add(count(cSpoofed, "spoofed")...)
	add(asm.Mov.Imm(asm.R0, xdpDrop), asm.Return())
	add(count(cLoop, "loop")...)
	add(asm.Mov.Imm(asm.R0, xdpDrop), asm.Return())
	add(count(cPass, pass)...)
	add(asm.Mov.Imm(asm.R0, xdpPass), asm.Return())
	return p
}

func lpmKey(p netip.Prefix) ([lpmKeySize]byte, error) {
	var k [lpmKeySize]byte
	if !p.IsValid() || !p.Addr().Is6() || p.Masked() != p {
		return k, fmt.Errorf("xdpfast: %s is not a masked IPv6 prefix", p)
	}
	binary.NativeEndian.PutUint32(k[:4], uint32(p.Bits()))
	a := p.Addr().As16()
	copy(k[4:], a[:])
	return k, nil
}

// AddPort makes ifindex a port frames can be redirected to; a downlink's
// frames also have their source checked.
func (f *Fast) AddPort(ifindex int, downlink bool) error {
	if err := f.tx.Put(uint32(ifindex), uint32(ifindex)); err != nil {
		return fmt.Errorf("xdpfast: port %d: %w", ifindex, err)
	}
	if downlink {
		if err := f.ports.Put(uint32(ifindex), uint32(1)); err != nil {
			return fmt.Errorf("xdpfast: port %d: %w", ifindex, err)
		}
	}
	return nil
}

// Route sends frames to p out of ifindex with the MAC addresses given.
func (f *Fast) Route(p netip.Prefix, ifindex int, dst, src net.HardwareAddr) error {
	k, err := lpmKey(p)
	if err != nil {
		return err
	}
	if len(dst) != 6 || len(src) != 6 {
		return fmt.Errorf("xdpfast: route %s: MAC addresses must be 6 bytes", p)
	}
	nh := nextHop{Ifindex: uint32(ifindex)}
	copy(nh.Dst[:], dst)
	copy(nh.Src[:], src)
	if err := f.routes.Put(k, nh); err != nil {
		return fmt.Errorf("xdpfast: route %s: %w", p, err)
	}
	return nil
}

// Source allows sources in p on downlink ifindex.
func (f *Fast) Source(p netip.Prefix, ifindex int) error {
	k, err := lpmKey(p)
	if err != nil {
		return err
	}
	if err := f.sources.Put(k, uint32(ifindex)); err != nil {
		return fmt.Errorf("xdpfast: source %s: %w", p, err)
	}
	return nil
}

// Attach attaches the program to ifindex in native mode, in the calling
// thread's network namespace.
func (f *Fast) Attach(ifindex int) error {
	l, err := link.AttachXDP(link.XDPOptions{Program: f.prog, Interface: ifindex, Flags: link.XDPDriverMode})
	if err != nil {
		return fmt.Errorf("xdpfast: attach to ifindex %d: %w", ifindex, err)
	}
	f.links = append(f.links, l)
	return nil
}

// Counters sums the verdict counters over the CPUs.
func (f *Fast) Counters() (Counters, error) {
	var c [nCounters]uint64
	for i := range c {
		var per []uint64
		if err := f.stats.Lookup(uint32(i), &per); err != nil {
			return Counters{}, fmt.Errorf("xdpfast: read counters: %w", err)
		}
		for _, v := range per {
			c[i] += v
		}
	}
	return Counters{Forwarded: c[cForwarded], Spoofed: c[cSpoofed], Loop: c[cLoop], Pass: c[cPass]}, nil
}

// run test-runs the program on one frame and returns the verdict and
// the frame as the program left it.
func (f *Fast) run(frame []byte, ingress int) (uint32, []byte, error) {
	out := make([]byte, len(frame)+64)
	ctx := make([]byte, 24) // struct xdp_md
	binary.NativeEndian.PutUint32(ctx[mdIngressIfindex:], uint32(ingress))
	binary.NativeEndian.PutUint32(ctx[mdDataEnd:], uint32(len(frame)))
	opts := ebpf.RunOptions{Data: frame, DataOut: out, Context: ctx}
	v, err := f.prog.Run(&opts)
	return v, opts.DataOut, err
}

// Close detaches the program and frees it and its maps.
func (f *Fast) Close() error {
	var errs []error
	for _, l := range f.links {
		errs = append(errs, l.Close())
	}
	f.links = nil
	for _, c := range []interface{ Close() error }{f.prog, f.routes, f.sources, f.ports, f.tx, f.stats} {
		if c != nil && !isNilCloser(c) {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

func isNilCloser(c interface{ Close() error }) bool {
	switch v := c.(type) {
	case *ebpf.Program:
		return v == nil
	case *ebpf.Map:
		return v == nil
	}
	return false
}
