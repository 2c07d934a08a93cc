package dump

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/compel"
)

// A lazy dump keeps the tree frozen for as long as the destination needs, seconds or minutes, and lazyr
// may be killed meanwhile (SIGKILL, OOM) with no chance to release anything. The kernel then detaches
// the tasks itself, without what PTRACE_DETACH does: it does not turn single-stepping off (after
// compel's injected syscalls the trap flag stays forced on) and does not cancel the SIGTRAP of the
// last single-step stop. A task let go like that dies of SIGTRAP at once. So before serving, every
// thread is parked: resumed once with PTRACE_CONT (which turns single-stepping off and drops the
// SIGTRAP) into a pause() at the syscall gadget, interrupted there, and given its dumped registers
// back in that interrupt stop. This is the state PTRACE_SEIZE + PTRACE_INTERRUPT left it in: a
// detach, a release or lazyr's death resumes it through the signal code, which restarts the system
// call it was in exactly as before the dump. The thread runs no instruction of its own in between:
// it goes from the gadget's syscall instruction into pause(), and every signal but SIGKILL is still
// blocked, so only the interrupt ends the pause.
//
// This belongs in compel (a Task method); it is here until compel has one.

const eflagsTF = 0x100 // x86 trap flag

// park leaves t in a clean interrupt stop with its registers as dumped (see above).
// Preconditions: called from Tracer.Do; t is stopped, with a gadget set and all signals blocked.
func park(t *compel.Task) error {
	saved := t.Regs()
	r := saved
	r.Rip = t.Gadget()
	r.Rax = unix.SYS_PAUSE
	r.Orig_rax = ^uint64(0) // no restart of whatever it was in: it is interrupted in pause()
	r.Eflags &^= eflagsTF
	if err := unix.PtraceSetRegs(t.Pid, &r); err != nil {
		return fmt.Errorf("park %d: setregs: %w", t.Pid, err)
	}
	if err := unix.PtraceCont(t.Pid, 0); err != nil {
		return fmt.Errorf("park %d: cont: %w", t.Pid, err)
	}
	if err := unix.PtraceInterrupt(t.Pid); err != nil {
		return fmt.Errorf("park %d: interrupt: %w", t.Pid, err)
	}
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(t.Pid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("park %d: wait: %w", t.Pid, err)
		}
		if ws.Exited() || ws.Signaled() {
			return fmt.Errorf("park %d: the task ended (%#x): %w", t.Pid, uint32(ws), unix.ESRCH)
		}
		if ws.Stopped() && ws.TrapCause() == unix.PTRACE_EVENT_STOP {
			break
		}
		// Nothing else can stop it: every signal but SIGKILL is blocked and it runs no code of its own.
		return fmt.Errorf("park %d: unexpected stop %#x", t.Pid, uint32(ws))
	}
	if err := unix.PtraceSetRegs(t.Pid, &saved); err != nil {
		return fmt.Errorf("park %d: setregs: %w", t.Pid, err)
	}
	return nil
}
