package dump

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/compel"
)

// scratchSize is the size of the temporary mapping injected into the task for syscall arguments.
const scratchSize = 64 << 10

// injected is what only the process itself can tell us, read through injected syscalls.
type injected struct {
	sigactions    [][4]uint64 // index sig-1: handler, flags, restorer, mask
	itimers       [3][4]uint64
	brk           uint64
	subreaper     bool
	securebits    uint32
	dumpable      int32
	thpDisabled   bool
	scratchMapped [2]uint64 // start, end of our own mapping, to leave out of the dump
}

// threadInjected is what only a thread itself can tell us.
type threadInjected struct {
	altstack  [3]uint64 // sp, flags, size
	pdeathSig uint32
	clearTid  uint64
}

// withScratch maps a scratch area in the process through its thread t, runs f, and unmaps it again.
// Every thread of the process can use the area (t.SetScratch).
// Preconditions: called from Tracer.Do; t is seized and has a gadget.
func withScratch(t *compel.Task, f func(addr uint64) error) (err error) {
	addr, err := t.Syscall(unix.SYS_MMAP, 0, scratchSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		return fmt.Errorf("map scratch area in %d: %w", t.Pid, err)
	}
	t.SetScratch(addr, scratchSize)
	defer func() {
		if _, uerr := t.Syscall(unix.SYS_MUNMAP, addr, scratchSize); uerr != nil && err == nil {
			err = fmt.Errorf("unmap scratch area in %d: %w", t.Pid, uerr)
		}
		t.SetScratch(0, 0)
	}()
	return f(addr)
}

// scratchWords reads n 64-bit words from the start of t's scratch area.
func scratchWords(t *compel.Task, n int) ([]uint64, error) {
	b, err := t.ReadScratch(0, 8*n)
	if err != nil {
		return nil, err
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return out, nil
}

// queryThread reads the per-thread state only the thread can tell (sigaltstack, parent-death signal,
// clear_tid address). Preconditions: t has a gadget and a scratch area.
func queryThread(t *compel.Task) (*threadInjected, error) {
	addr, _ := t.Scratch()
	ti := &threadInjected{}
	if _, err := t.Syscall(unix.SYS_SIGALTSTACK, 0, addr); err != nil {
		return nil, fmt.Errorf("read sigaltstack of %d: %w", t.Pid, err)
	}
	w, err := scratchWords(t, 3)
	if err != nil {
		return nil, err
	}
	ti.altstack = [3]uint64{w[0], w[1] & 0xffffffff, w[2]}
	if _, err := t.Syscall(unix.SYS_PRCTL, unix.PR_GET_PDEATHSIG, addr); err != nil {
		return nil, fmt.Errorf("read pdeath signal of %d: %w", t.Pid, err)
	}
	if w, err = scratchWords(t, 1); err != nil {
		return nil, err
	}
	ti.pdeathSig = uint32(w[0])
	if _, err := t.Syscall(unix.SYS_PRCTL, unix.PR_GET_TID_ADDRESS, addr); err != nil {
		return nil, fmt.Errorf("read clear_tid address of %d: %w", t.Pid, err)
	}
	if w, err = scratchWords(t, 1); err != nil {
		return nil, err
	}
	ti.clearTid = w[0]
	return ti, nil
}

// query runs the read-only syscalls about the whole process through its thread t.
// Preconditions: called from Tracer.Do; t is seized, has a gadget and a scratch area (withScratch).
func query(t *compel.Task) (inj *injected, err error) {
	addr, size := t.Scratch()
	inj = &injected{scratchMapped: [2]uint64{addr, addr + size}}
	words := func(n int) ([]uint64, error) { return scratchWords(t, n) }
	for sig := 1; sig <= 64; sig++ {
		var sa [4]uint64
		if sig != int(unix.SIGKILL) && sig != int(unix.SIGSTOP) {
			if _, err := t.Syscall(unix.SYS_RT_SIGACTION, uint64(sig), 0, addr, 8); err != nil {
				return nil, fmt.Errorf("read sigaction %d: %w", sig, err)
			}
			w, err := words(4)
			if err != nil {
				return nil, err
			}
			copy(sa[:], w)
		}
		inj.sigactions = append(inj.sigactions, sa)
	}
	for which := 0; which < 3; which++ {
		if _, err := t.Syscall(unix.SYS_GETITIMER, uint64(which), addr); err != nil {
			return nil, fmt.Errorf("read itimer %d: %w", which, err)
		}
		w, err := words(4)
		if err != nil {
			return nil, err
		}
		copy(inj.itimers[which][:], w)
	}
	if _, err := t.Syscall(unix.SYS_PRCTL, unix.PR_GET_CHILD_SUBREAPER, addr); err != nil {
		return nil, fmt.Errorf("read child subreaper: %w", err)
	}
	w, err := words(1)
	if err != nil {
		return nil, err
	}
	inj.subreaper = uint32(w[0]) != 0
	v, err := t.Syscall(unix.SYS_PRCTL, unix.PR_GET_SECUREBITS)
	if err != nil {
		return nil, fmt.Errorf("read securebits: %w", err)
	}
	inj.securebits = uint32(v)
	if v, err = t.Syscall(unix.SYS_PRCTL, unix.PR_GET_DUMPABLE); err != nil {
		return nil, fmt.Errorf("read dumpable: %w", err)
	}
	inj.dumpable = int32(v)
	if v, err = t.Syscall(unix.SYS_PRCTL, unix.PR_GET_THP_DISABLE); err != nil {
		return nil, fmt.Errorf("read THP disable: %w", err)
	}
	inj.thpDisabled = v != 0
	if inj.brk, err = t.Syscall(unix.SYS_BRK, 0); err != nil {
		return nil, fmt.Errorf("read brk: %w", err)
	}
	return inj, nil
}
