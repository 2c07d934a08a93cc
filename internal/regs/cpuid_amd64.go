package regs

import "sync"

func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)

// xstateOffsets are the standard-format offsets of XSAVE components 2..9 as this CPU reports them in
// CPUID leaf 0xD (EBX of sub-leaf i). They differ between vendors: AMD CPUs without MPX do not leave
// room for it, so the AVX-512 components start earlier than on Intel.
var xstateOffsets = sync.OnceValue(func() map[int]int {
	offs := map[int]int{}
	for comp := uint32(2); comp <= 9; comp++ {
		size, off, _, _ := cpuid(0xd, comp)
		if size != 0 {
			offs[int(comp)] = int(off)
		}
	}
	return offs
})

// componentOffset returns the offset of XSAVE component comp on this CPU, or -1 if it has none.
func componentOffset(comp int) int {
	if off, ok := xstateOffsets()[comp]; ok {
		return off
	}
	return -1
}
