package compel

import (
	"fmt"
	"os"

	"github.com/lazyr/lazyr/internal/sys"
)

// ReadMem copies task memory at addr into buf (process_vm_readv).
func (t *Task) ReadMem(addr uint64, buf []byte) error {
	if _, err := sys.ReadRemote(t.Pid, addr, buf); err != nil {
		return fmt.Errorf("read %d bytes at %#x in %d: %w", len(buf), addr, t.Pid, err)
	}
	return nil
}

// WriteMem copies buf into task memory at addr (process_vm_writev: the range must be writable).
func (t *Task) WriteMem(addr uint64, buf []byte) error {
	if _, err := sys.WriteRemote(t.Pid, addr, buf); err != nil {
		return fmt.Errorf("write %d bytes at %#x in %d: %w", len(buf), addr, t.Pid, err)
	}
	return nil
}

// PokeMem writes through /proc/PID/mem, which, like a debugger's breakpoint, also writes read-only
// private mappings (the kernel uses FOLL_FORCE there).
func (t *Task) PokeMem(addr uint64, buf []byte) error {
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", t.Pid), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open mem of %d: %w", t.Pid, err)
	}
	defer f.Close()
	if _, err := f.WriteAt(buf, int64(addr)); err != nil {
		return fmt.Errorf("poke %d bytes at %#x in %d: %w", len(buf), addr, t.Pid, err)
	}
	return nil
}

// Scratch returns the task's scratch area (address, size) set with SetScratch.
func (t *Task) Scratch() (uint64, uint64) { return t.scratch, t.scratchLen }

// SetScratch records a writable area inside the task used for injected syscalls' arguments.
func (t *Task) SetScratch(addr, size uint64) { t.scratch, t.scratchLen = addr, size }

// WriteScratch copies b into the scratch area at offset off and returns its address in the task.
func (t *Task) WriteScratch(off uint64, b []byte) (uint64, error) {
	if t.scratch == 0 || off+uint64(len(b)) > t.scratchLen {
		return 0, fmt.Errorf("compel: %d bytes at scratch offset %d do not fit (scratch %d bytes)", len(b), off, t.scratchLen)
	}
	return t.scratch + off, t.WriteMem(t.scratch+off, b)
}

// ReadScratch reads n bytes from the scratch area at offset off.
func (t *Task) ReadScratch(off uint64, n int) ([]byte, error) {
	if t.scratch == 0 || off+uint64(n) > t.scratchLen {
		return nil, fmt.Errorf("compel: %d bytes at scratch offset %d outside scratch (%d bytes)", n, off, t.scratchLen)
	}
	b := make([]byte, n)
	return b, t.ReadMem(t.scratch+off, b)
}
