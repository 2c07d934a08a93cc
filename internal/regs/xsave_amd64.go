package regs

import (
	"encoding/binary"
	"fmt"

	core_x86 "github.com/checkpoint-restore/go-criu/v8/crit/images/core-x86"
	"google.golang.org/protobuf/proto"
)

// Fixed parts of the standard XSAVE layout (Intel SDM vol. 1, 13.4). The extended components' offsets
// come from CPUID (componentOffset): AVX state, MPX BNDREGS (4 x 16 bytes) and BNDCSR, AVX-512 opmask
// k0-k7 (8 x 8), ZMM_Hi256 (upper halves of zmm0-15, 16 x 32), Hi16_ZMM (zmm16-31, 16 x 64), PKRU (8).
const (
	offXStateBV  = 512
	offXCompBV   = 520
	legacySize   = 512
	swReservedAt = 464 // fx_sw_bytes: kernel-owned, never taken from an image
)

// XSAVE component numbers.
const (
	compAVX     = 2
	compBndReg  = 3
	compBndCSR  = 4
	compOpmask  = 5
	compZMMHi   = 6
	compHi16ZMM = 7
	compPKRU    = 9
)

var le = binary.LittleEndian

func u32s(b []byte, off, n int) []uint32 {
	if off < 0 || off+4*n > len(b) {
		return nil
	}
	out := make([]uint32, n)
	for i := range out {
		out[i] = le.Uint32(b[off+4*i:])
	}
	return out
}

func u64s(b []byte, off, n int) []uint64 {
	if off < 0 || off+8*n > len(b) {
		return nil
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = le.Uint64(b[off+8*i:])
	}
	return out
}

func put32s(b []byte, off int, v []uint32) {
	if off < 0 {
		return
	}
	for i, x := range v {
		if off+4*i+4 > len(b) {
			return
		}
		le.PutUint32(b[off+4*i:], x)
	}
}

func put64s(b []byte, off int, v []uint64) {
	if off < 0 {
		return
	}
	for i, x := range v {
		if off+8*i+8 > len(b) {
			return
		}
		le.PutUint64(b[off+8*i:], x)
	}
}

// FPUToImage converts an XSAVE area into CRIU's user_x86_fpregs_entry (with its xsave extension).
func FPUToImage(x []byte) (*core_x86.UserX86FpregsEntry, error) {
	if len(x) < legacySize {
		return nil, fmt.Errorf("xsave area too short: %d bytes", len(x))
	}
	e := &core_x86.UserX86FpregsEntry{
		Cwd:       proto.Uint32(uint32(le.Uint16(x[0:]))),
		Swd:       proto.Uint32(uint32(le.Uint16(x[2:]))),
		Twd:       proto.Uint32(uint32(le.Uint16(x[4:]))),
		Fop:       proto.Uint32(uint32(le.Uint16(x[6:]))),
		Rip:       proto.Uint64(le.Uint64(x[8:])),
		Rdp:       proto.Uint64(le.Uint64(x[16:])),
		Mxcsr:     proto.Uint32(le.Uint32(x[24:])),
		MxcsrMask: proto.Uint32(le.Uint32(x[28:])),
		StSpace:   u32s(x, 32, 32),
		XmmSpace:  u32s(x, 160, 64),
		Padding:   u32s(x, 416, 24),
	}
	if len(x) >= offXStateBV+64 {
		xs := &core_x86.UserX86XsaveEntry{
			XstateBv:    proto.Uint64(le.Uint64(x[offXStateBV:])),
			YmmhSpace:   u32s(x, componentOffset(compAVX), 64),
			BndregState: u64s(x, componentOffset(compBndReg), 8),
			BndcsrState: u64s(x, componentOffset(compBndCSR), 2),
			OpmaskReg:   u64s(x, componentOffset(compOpmask), 8),
			ZmmUpper:    u64s(x, componentOffset(compZMMHi), 64),
			Hi16Zmm:     u64s(x, componentOffset(compHi16ZMM), 128),
			Pkru:        u32s(x, componentOffset(compPKRU), 2),
		}
		e.Xsave = xs
	}
	return e, nil
}

// FPUFromImage writes the state in e over base, an XSAVE area read from the task being restored (so
// its size and kernel-owned bytes are right for this machine), and returns the result.
func FPUFromImage(e *core_x86.UserX86FpregsEntry, base []byte) ([]byte, error) {
	if len(base) < legacySize {
		return nil, fmt.Errorf("xsave area too short: %d bytes", len(base))
	}
	x := append([]byte(nil), base...)
	le.PutUint16(x[0:], uint16(e.GetCwd()))
	le.PutUint16(x[2:], uint16(e.GetSwd()))
	le.PutUint16(x[4:], uint16(e.GetTwd()))
	le.PutUint16(x[6:], uint16(e.GetFop()))
	le.PutUint64(x[8:], e.GetRip())
	le.PutUint64(x[16:], e.GetRdp())
	le.PutUint32(x[24:], e.GetMxcsr())
	le.PutUint32(x[28:], e.GetMxcsrMask())
	put32s(x, 32, e.GetStSpace())
	put32s(x, 160, e.GetXmmSpace())
	if p := e.GetPadding(); len(p) > 0 {
		n := (swReservedAt - 416) / 4
		if len(p) < n {
			n = len(p)
		}
		put32s(x, 416, p[:n])
	}
	xs := e.GetXsave()
	if xs == nil || len(x) < offXStateBV+64 {
		return x, nil
	}
	le.PutUint64(x[offXStateBV:], xs.GetXstateBv())
	le.PutUint64(x[offXCompBV:], 0) // standard format
	put32s(x, componentOffset(compAVX), xs.GetYmmhSpace())
	put64s(x, componentOffset(compBndReg), xs.GetBndregState())
	put64s(x, componentOffset(compBndCSR), xs.GetBndcsrState())
	put64s(x, componentOffset(compOpmask), xs.GetOpmaskReg())
	put64s(x, componentOffset(compZMMHi), xs.GetZmmUpper())
	put64s(x, componentOffset(compHi16ZMM), xs.GetHi16Zmm())
	put32s(x, componentOffset(compPKRU), xs.GetPkru())
	return x, nil
}
