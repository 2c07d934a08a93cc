package compel

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/internal/sys"
)

// maxXState bounds the XSAVE area read through NT_X86_XSTATE; 16 KiB covers AVX-512 and AMX tiles' header.
const maxXState = 16 << 10

// XState returns the task's extended FPU state in the standard (non-compacted) XSAVE layout, as ptrace
// exposes it.
func (t *Task) XState() ([]byte, error) {
	buf := make([]byte, maxXState)
	n, err := sys.PtraceGetRegSet(t.Pid, unix.NT_X86_XSTATE, buf)
	if err != nil {
		return nil, fmt.Errorf("get xstate of %d: %w", t.Pid, err)
	}
	return buf[:n], nil
}

// SetXState writes an XSAVE area (standard layout) into the task.
func (t *Task) SetXState(b []byte) error {
	if err := sys.PtraceSetRegSet(t.Pid, unix.NT_X86_XSTATE, b); err != nil {
		return fmt.Errorf("set xstate of %d: %w", t.Pid, err)
	}
	return nil
}
