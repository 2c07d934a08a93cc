package netlock

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Offsets in struct __sk_buff (include/uapi/linux/bpf.h).
const (
	skbMark     = 8
	skbProtocol = 16
)

// skb->protocol as the program reads it: the big-endian ethertype loaded as a little-endian u32.
const (
	protoIPv4 = 0x0008 // ETH_P_IP
	protoIPv6 = 0xDD86 // ETH_P_IPV6
)

const (
	hdrStartNet = 1  // BPF_HDR_START_NET
	tcxNext     = -1 // TCX_NEXT: no verdict, let the next program (or the stack) decide
	tcxDrop     = 2  // TCX_DROP
	ipprotoTCP  = 6
)

// Stack layout (offsets from r10). key is a connKey: saddr[16] daddr[16] sport[2] dport[2], addresses in
// IPv6 form (IPv4 as v4-mapped), ports in network byte order exactly as in the packet.
const (
	stKey     = -40 // 36 bytes
	stSport   = stKey + 32
	stDport   = stKey + 34
	stHdr     = -80 // 40 bytes: the IPv4 or IPv6 header
	stPortKey = -88 // 2 bytes
	stStatKey = -92 // 4 bytes
)

// program returns the instructions of the lock for one direction. On ingress the local port is the
// destination port, on egress the source port.
func program(ingress bool, conns, ports, stats *ebpf.Map, passMark uint32) asm.Instructions {
	localPort := int16(stSport)
	if ingress {
		localPort = stDport
	}
	loadBytes := func(off asm.Register, constOff int32, dst int16, n int32) asm.Instructions {
		ins := asm.Instructions{asm.Mov.Reg(asm.R1, asm.R6)}
		if constOff >= 0 {
			ins = append(ins, asm.Mov.Imm(asm.R2, constOff))
		} else {
			ins = append(ins, asm.Mov.Reg(asm.R2, off))
		}
		return append(ins,
			asm.Mov.Reg(asm.R3, asm.R10),
			asm.Add.Imm(asm.R3, int32(dst)),
			asm.Mov.Imm(asm.R4, n),
			asm.Mov.Imm(asm.R5, hdrStartNet),
			asm.FnSkbLoadBytesRelative.Call(),
			asm.JNE.Imm(asm.R0, 0, "pass"),
		)
	}

	ins := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	if passMark != 0 {
		ins = append(ins,
			asm.LoadMem(asm.R2, asm.R6, skbMark, asm.Word),
			asm.JEq.Imm32(asm.R2, int32(passMark), "pass"),
		)
	}
	ins = append(ins,
		asm.LoadMem(asm.R2, asm.R6, skbProtocol, asm.Word),
		asm.JEq.Imm(asm.R2, protoIPv4, "ipv4"),
		asm.JEq.Imm(asm.R2, protoIPv6, "ipv6"),
		asm.Ja.Label("pass"),
	)

	// IPv4: TCP only, and not a non-first fragment (it has no TCP header).
	v4 := loadBytes(0, 0, stHdr, 20)
	v4[0] = v4[0].WithSymbol("ipv4")
	ins = append(ins, v4...)
	ins = append(ins,
		asm.LoadMem(asm.R2, asm.R10, stHdr+9, asm.Byte),
		asm.JNE.Imm(asm.R2, ipprotoTCP, "pass"),
		asm.LoadMem(asm.R2, asm.R10, stHdr+6, asm.Half),
		asm.And.Imm(asm.R2, 0xff1f), // fragment offset bits of the big-endian frag_off, read little-endian
		asm.JNE.Imm(asm.R2, 0, "pass"),
		asm.LoadMem(asm.R7, asm.R10, stHdr, asm.Byte),
		asm.And.Imm(asm.R7, 0xf),
		asm.LSh.Imm(asm.R7, 2), // IHL in bytes: the TCP header offset
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.R10, stKey, asm.R1, asm.DWord),
		asm.StoreImm(asm.R10, stKey+8, 0, asm.Half),
		asm.StoreImm(asm.R10, stKey+10, 0xffff, asm.Half),
		asm.LoadMem(asm.R2, asm.R10, stHdr+12, asm.Word),
		asm.StoreMem(asm.R10, stKey+12, asm.R2, asm.Word),
		asm.StoreMem(asm.R10, stKey+16, asm.R1, asm.DWord),
		asm.StoreImm(asm.R10, stKey+24, 0, asm.Half),
		asm.StoreImm(asm.R10, stKey+26, 0xffff, asm.Half),
		asm.LoadMem(asm.R2, asm.R10, stHdr+16, asm.Word),
		asm.StoreMem(asm.R10, stKey+28, asm.R2, asm.Word),
		asm.Ja.Label("ports"),
	)

	// IPv6: TCP directly after the fixed header; extension headers are not walked (TCP never uses them in
	// practice, and a packet with them passes).
	v6 := loadBytes(0, 0, stHdr, 40)
	v6[0] = v6[0].WithSymbol("ipv6")
	ins = append(ins, v6...)
	ins = append(ins,
		asm.LoadMem(asm.R2, asm.R10, stHdr+6, asm.Byte),
		asm.JNE.Imm(asm.R2, ipprotoTCP, "pass"),
		asm.Mov.Imm(asm.R7, 40),
	)
	for i := int16(0); i < 4; i++ {
		ins = append(ins,
			asm.LoadMem(asm.R2, asm.R10, stHdr+8+8*i, asm.DWord),
			asm.StoreMem(asm.R10, stKey+8*i, asm.R2, asm.DWord),
		)
	}

	// Ports, then the two lookups.
	p := loadBytes(asm.R7, -1, stSport, 4)
	p[0] = p[0].WithSymbol("ports")
	ins = append(ins, p...)
	ins = append(ins,
		asm.LoadMapPtr(asm.R1, conns.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, stKey),
		asm.FnMapLookupElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
		asm.LoadMem(asm.R2, asm.R10, localPort, asm.Half),
		asm.StoreMem(asm.R10, stPortKey, asm.R2, asm.Half),
		asm.LoadMapPtr(asm.R1, ports.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, stPortKey),
		asm.FnMapLookupElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),

		asm.Mov.Imm(asm.R0, tcxNext).WithSymbol("pass"),
		asm.Return(),

		// Count the drop in a per-CPU slot (no atomics needed), then drop.
		asm.StoreImm(asm.R10, stStatKey, 0, asm.Word).WithSymbol("drop"),
		asm.LoadMapPtr(asm.R1, stats.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, stStatKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "dropret"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, tcxDrop).WithSymbol("dropret"),
		asm.Return(),
	)
	return ins
}
