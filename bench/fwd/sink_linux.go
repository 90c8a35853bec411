package fwd

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/pdrelay/pdrelay/bench/lab"
)

// Counter indexes of the drop program's per-CPU array.
const (
	countLegit = 0 // UDP to PortLegit
	countSpoof = 1 // UDP to PortSpoof
)

// dropInsns is an XDP program that counts and drops the harness's UDP
// frames and passes everything else (neighbour discovery, the Bulk
// Leasequery TCP session, pings), so the host it runs on stays a host:
//
//	shorter than Ethernet + IPv6 + UDP ports ... pass
//	not IPv6, or next header not UDP ........... pass
//	UDP destination port PortLegit ............. counts[0]++, drop
//	UDP destination port PortSpoof ............. counts[1]++, drop
//	other ports ................................ pass
//
// Registers: r6 ctx, r2 data, r3 data_end, r4 and r5 scratch.
func dropInsns(counts *ebpf.Map) asm.Instructions {
	// Loads of two bytes read them in the machine's (little-endian)
	// order: 0x86dd on the wire reads as 0xdd86, port 9000 (0x2328) as
	// 0x2823.
	swap := func(v uint16) int32 { return int32(v>>8 | v<<8) }
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R6, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 14+40+4), // through the UDP destination port
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half),
		asm.JNE.Imm(asm.R5, swap(0x86dd), "pass"),
		asm.LoadMem(asm.R5, asm.R2, 14+6, asm.Byte),
		asm.JNE.Imm(asm.R5, 17, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 14+40+2, asm.Half),
		asm.Mov.Imm(asm.R4, countLegit),
		asm.JEq.Imm(asm.R5, swap(PortLegit), "count"),
		asm.Mov.Imm(asm.R4, countSpoof),
		asm.JEq.Imm(asm.R5, swap(PortSpoof), "count"),
		asm.Ja.Label("pass"),
		asm.StoreMem(asm.R10, -4, asm.R4, asm.Word).WithSymbol("count"),
		asm.LoadMapPtr(asm.R1, counts.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("drop"), // XDP_DROP
		asm.Return(),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"), // XDP_PASS
		asm.Return(),
	}
}

// DropCounter is the count-and-drop XDP program attached to one
// interface in one namespace. Its methods are safe for concurrent use.
type DropCounter struct {
	Where  string // "ns/interface"
	counts *ebpf.Map
	prog   *ebpf.Program
	link   link.Link
}

// AttachDrop loads the count-and-drop program and attaches it (native
// XDP) to interface ifname in namespace ns.
func AttachDrop(l *lab.Lab, ns, ifname string) (*DropCounter, error) {
	counts, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 2})
	if err != nil {
		return nil, fmt.Errorf("fwd: drop counter map: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "MIT", Instructions: dropInsns(counts)})
	if err != nil {
		counts.Close()
		return nil, fmt.Errorf("fwd: drop program: %w", err)
	}
	d := &DropCounter{Where: ns + "/" + ifname, counts: counts, prog: prog}
	err = l.InNS(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		d.link, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifi.Index, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		prog.Close()
		counts.Close()
		return nil, fmt.Errorf("fwd: attach the drop program to %s: %w", d.Where, err)
	}
	return d, nil
}

// Counts returns the legitimate and spoofed frames counted so far.
func (d *DropCounter) Counts() (legit, spoofed uint64, err error) {
	get := func(k uint32) (uint64, error) {
		var per []uint64
		if err := d.counts.Lookup(k, &per); err != nil {
			return 0, fmt.Errorf("fwd: read the drop counters of %s: %w", d.Where, err)
		}
		var s uint64
		for _, v := range per {
			s += v
		}
		return s, nil
	}
	if legit, err = get(countLegit); err != nil {
		return 0, 0, err
	}
	spoofed, err = get(countSpoof)
	return legit, spoofed, err
}

// Close detaches the program.
func (d *DropCounter) Close() error {
	var errs []error
	if d.link != nil {
		errs = append(errs, d.link.Close())
	}
	errs = append(errs, d.prog.Close(), d.counts.Close())
	return errors.Join(errs...)
}
