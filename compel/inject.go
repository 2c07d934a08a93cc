package compel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// syscallInsn is the x86-64 `syscall` instruction.
var syscallInsn = []byte{0x0f, 0x05}

// eflagsTF is the trap flag; it must not leak into the registers a task resumes with.
const eflagsTF = 0x100

// SetGadget sets the address of a `syscall` instruction used for injection.
func (t *Task) SetGadget(addr uint64) { t.gadget = addr }

// Gadget returns the injection address in use.
func (t *Task) Gadget() uint64 { return t.gadget }

// FindGadget looks for a `syscall` instruction inside the task's vDSO and uses it for injection, so the
// task's own code is never modified.
func (t *Task) FindGadget() error {
	start, end, err := vdsoRange(t.Pid)
	if err != nil {
		return err
	}
	buf := make([]byte, end-start)
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", t.Pid))
	if err != nil {
		return fmt.Errorf("open mem of %d: %w", t.Pid, err)
	}
	defer mem.Close()
	if _, err := mem.ReadAt(buf, int64(start)); err != nil {
		return fmt.Errorf("read vdso of %d: %w", t.Pid, err)
	}
	i := bytes.Index(buf, syscallInsn)
	if i < 0 {
		return fmt.Errorf("no syscall instruction in the vdso of %d", t.Pid)
	}
	t.gadget = start + uint64(i)
	return nil
}

func vdsoRange(pid int) (uint64, uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasSuffix(line, "[vdso]") {
			continue
		}
		r, _, _ := strings.Cut(line, " ")
		a, b, _ := strings.Cut(r, "-")
		s, err1 := strconv.ParseUint(a, 16, 64)
		e, err2 := strconv.ParseUint(b, 16, 64)
		if err1 != nil || err2 != nil {
			break
		}
		return s, e, nil
	}
	return 0, 0, fmt.Errorf("task %d has no [vdso] mapping to inject syscalls through", pid)
}

// SyscallError is a negative result of an injected syscall.
type SyscallError struct {
	Nr    uintptr
	Errno unix.Errno
	Index int // position in a Batch
}

func (e *SyscallError) Error() string {
	return fmt.Sprintf("injected syscall %d: %v", e.Nr, e.Errno)
}

func (e *SyscallError) Unwrap() error { return e.Errno }

// Syscall runs system call nr with up to six arguments in the task and returns its result.
// A result in [-4095, -1] comes back as a *SyscallError wrapping the errno.
// Preconditions: called from Tracer.Do; the task is stopped.
func (t *Task) Syscall(nr uintptr, args ...uint64) (uint64, error) {
	ret, err := t.SyscallRaw(nr, nil, args...)
	if err != nil {
		return 0, err
	}
	if int64(ret) < 0 && int64(ret) >= -4095 {
		return ret, &SyscallError{Nr: nr, Errno: unix.Errno(-int64(ret))}
	}
	return ret, nil
}

// SyscallRaw is Syscall without errno decoding. onEvent, if set, is called for every ptrace event stop
// (fork/clone) met while the syscall runs, with the event and its message (the new pid).
func (t *Task) SyscallRaw(nr uintptr, onEvent func(event int, msg uint) error, args ...uint64) (uint64, error) {
	if err := t.tr.check(); err != nil {
		return 0, err
	}
	if t.gadget == 0 {
		return 0, errors.New("compel: no syscall gadget set for task")
	}
	var a [6]uint64
	copy(a[:], args)
	r := t.saved
	r.Rax = uint64(nr)
	r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	r.Rip = t.gadget
	r.Orig_rax = ^uint64(0) // no syscall restart on resume: see package doc
	r.Eflags &^= eflagsTF
	if err := unix.PtraceSetRegs(t.Pid, &r); err != nil {
		return 0, fmt.Errorf("setregs %d: %w", t.Pid, err)
	}
	if err := unix.PtraceSingleStep(t.Pid); err != nil {
		return 0, fmt.Errorf("singlestep %d: %w", t.Pid, err)
	}
	for {
		ws, err := t.waitStop()
		if err != nil {
			return 0, err
		}
		if !ws.Stopped() {
			return 0, fmt.Errorf("task %d: unexpected wait status %#x", t.Pid, uint32(ws))
		}
		if ev := ws.TrapCause(); ev > 0 {
			msg, _ := unix.PtraceGetEventMsg(t.Pid)
			if onEvent != nil {
				if err := onEvent(ev, msg); err != nil {
					return 0, err
				}
			}
			if err := unix.PtraceSingleStep(t.Pid); err != nil {
				return 0, fmt.Errorf("singlestep %d: %w", t.Pid, err)
			}
			continue
		}
		if ws.StopSignal() != unix.SIGTRAP {
			// All catchable signals are blocked while we inject; anything else is a bug or a
			// synchronous fault of the gadget itself.
			return 0, fmt.Errorf("task %d stopped by %v while running injected syscall %d", t.Pid, ws.StopSignal(), nr)
		}
		break
	}
	var out unix.PtraceRegs
	if err := unix.PtraceGetRegs(t.Pid, &out); err != nil {
		return 0, fmt.Errorf("getregs %d: %w", t.Pid, err)
	}
	if out.Rip != t.gadget+uint64(len(syscallInsn)) {
		return 0, fmt.Errorf("task %d: injected syscall %d stopped at %#x, not after the gadget %#x", t.Pid, nr, out.Rip, t.gadget)
	}
	return out.Rax, nil
}
