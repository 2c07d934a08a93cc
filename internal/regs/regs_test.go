package regs

import (
	"bytes"
	"math/rand"
	"testing"

	"golang.org/x/sys/unix"
)

func TestGPRoundTrip(t *testing.T) {
	r := unix.PtraceRegs{R15: 1, Rax: 2, Rip: 0x401000, Rsp: 0x7ffd0000, Fs_base: 0x7f0000001000, Orig_rax: 35}
	if got := FromImage(ToImage(&r)); got != r {
		t.Fatalf("round trip: got %+v want %+v", got, r)
	}
}

func TestXSaveRoundTrip(t *testing.T) {
	x := make([]byte, 4096) // larger than any area this CPU has
	rand.New(rand.NewSource(1)).Read(x)
	base := make([]byte, len(x))
	copy(base[swReservedAt:legacySize], x[swReservedAt:legacySize]) // kernel-owned bytes come from the base
	e, err := FPUToImage(x)
	if err != nil {
		t.Fatal(err)
	}
	got, err := FPUFromImage(e, base)
	if err != nil {
		t.Fatal(err)
	}
	// Everything CRIU records must come back; the reserved header bytes are zero by design.
	le.PutUint64(x[offXCompBV:], 0)
	check := func(name string, off, n int) {
		if !bytes.Equal(got[off:off+n], x[off:off+n]) {
			t.Errorf("%s differs after round trip", name)
		}
	}
	check("legacy", 0, legacySize)
	check("xstate_bv", offXStateBV, 16)
	for _, c := range []struct {
		name       string
		comp, size int
	}{{"ymmh", compAVX, 256}, {"opmask", compOpmask, 64}, {"zmm_hi256", compZMMHi, 512}, {"hi16_zmm", compHi16ZMM, 1024}, {"pkru", compPKRU, 8}} {
		if off := componentOffset(c.comp); off >= 0 {
			check(c.name, off, c.size)
		}
	}
	if componentOffset(compAVX) != 576 {
		t.Errorf("AVX state at %d, architecturally 576", componentOffset(compAVX))
	}
}

func TestPrepareResume(t *testing.T) {
	r := unix.PtraceRegs{Orig_rax: unix.SYS_READ, Rax: ^uint64(errRestartSys - 1), Rip: 0x1002, Eflags: 0x346}
	got := PrepareResume(r)
	if got.Rax != unix.SYS_READ || got.Rip != 0x1000 || got.Orig_rax != ^uint64(0) || got.Eflags&0x100 != 0 {
		t.Fatalf("restart not prepared: %+v", got)
	}
	r = unix.PtraceRegs{Orig_rax: ^uint64(0), Rax: 5, Rip: 0x2000}
	if got := PrepareResume(r); got.Rax != 5 || got.Rip != 0x2000 {
		t.Fatalf("non-syscall state changed: %+v", got)
	}
}
