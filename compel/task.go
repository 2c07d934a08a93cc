package compel

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/internal/sys"
)

// ErrExited means the task exited (or was killed) while we waited for it to stop.
var ErrExited = errors.New("task exited")

// Task is one traced thread.
type Task struct {
	Pid int
	tr  *Tracer

	// saved holds the registers captured when the task stopped; injection restores them.
	saved unix.PtraceRegs
	// origMask is the signal mask found at seize time; signals are blocked while we inject.
	origMask    uint64
	maskChanged bool
	// gadget is the address of a `syscall` instruction mapped executable in the task.
	gadget uint64
	// scratch is a writable area inside the task for injected syscalls' in/out arguments.
	scratch    uint64
	scratchLen uint64
	// batch executor (see batch.go)
	batchCode, batchTable, batchTableSize uint64
	// pinned: created while the tracer was pinned, so bound to its CPU until Detach (pin.go).
	pinned bool
}

// Options applied to every seized or auto-attached task: die with the tracer, report forks, and
// PTRACE_O_TRACESYSGOOD so syscall stops are distinguishable.
const traceOptions = unix.PTRACE_O_EXITKILL | unix.PTRACE_O_TRACESYSGOOD |
	unix.PTRACE_O_TRACEFORK | unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_TRACEVFORK

// Seize attaches to pid with PTRACE_SEIZE and stops it with PTRACE_INTERRUPT.
// Preconditions: called from Tracer.Do.
func (tr *Tracer) Seize(pid int) (*Task, error) {
	if err := tr.check(); err != nil {
		return nil, err
	}
	// No EXITKILL for a dump: if lazyr dies, the original must go on running.
	if err := sys.PtraceSeize(pid, unix.PTRACE_O_TRACESYSGOOD); err != nil {
		return nil, fmt.Errorf("ptrace seize %d: %w", pid, err)
	}
	t := &Task{Pid: pid, tr: tr}
	if err := unix.PtraceInterrupt(pid); err != nil {
		_ = unix.PtraceDetach(pid)
		return nil, fmt.Errorf("ptrace interrupt %d: %w", pid, err)
	}
	if _, err := t.waitStop(); err != nil {
		_ = unix.PtraceDetach(pid)
		return nil, err
	}
	if err := t.refreshRegs(); err != nil {
		_ = unix.PtraceDetach(pid)
		return nil, err
	}
	// Block every signal while we work in the task, so that a signal arriving meanwhile stays pending
	// instead of interrupting an injected syscall; Release puts the original mask back.
	m, err := t.SigMask()
	if err != nil {
		_ = unix.PtraceDetach(pid)
		return nil, err
	}
	t.origMask = m
	if err := t.SetSigMask(^uint64(0)); err != nil {
		_ = unix.PtraceDetach(pid)
		return nil, err
	}
	t.maskChanged = true
	return t, nil
}

// OrigSigMask returns the blocked signal mask the task had when it was seized.
func (t *Task) OrigSigMask() uint64 { return t.origMask }

// Release undoes everything compel changed (registers, signal mask) and detaches: the task continues
// exactly as it was, including a system call it was interrupted in.
func (t *Task) Release() error {
	if err := t.RestoreRegs(); err != nil {
		return err
	}
	if t.maskChanged {
		if err := t.SetSigMask(t.origMask); err != nil {
			return err
		}
	}
	return t.Detach()
}

func (t *Task) refreshRegs() error {
	if err := unix.PtraceGetRegs(t.Pid, &t.saved); err != nil {
		return fmt.Errorf("getregs %d: %w", t.Pid, err)
	}
	return nil
}

// waitStop waits for the task's next stop. Exits are reported as ErrExited (wrapping the status).
func (t *Task) waitStop() (unix.WaitStatus, error) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(t.Pid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return ws, fmt.Errorf("wait %d: %w", t.Pid, err)
		}
		break
	}
	switch {
	case ws.Exited():
		return ws, fmt.Errorf("task %d exited with status %d: %w", t.Pid, ws.ExitStatus(), ErrExited)
	case ws.Signaled():
		return ws, fmt.Errorf("task %d killed by %v: %w", t.Pid, ws.Signal(), ErrExited)
	}
	return ws, nil
}

// Regs returns the registers captured at the last stop (a copy).
func (t *Task) Regs() unix.PtraceRegs { return t.saved }

// SetRegs replaces the registers the task will resume with (also used as the base for injection).
func (t *Task) SetRegs(r unix.PtraceRegs) error {
	if err := unix.PtraceSetRegs(t.Pid, &r); err != nil {
		return fmt.Errorf("setregs %d: %w", t.Pid, err)
	}
	t.saved = r
	return nil
}

// RestoreRegs writes back the registers captured at the stop (undoing injections).
func (t *Task) RestoreRegs() error {
	if err := unix.PtraceSetRegs(t.Pid, &t.saved); err != nil {
		return fmt.Errorf("setregs %d: %w", t.Pid, err)
	}
	return nil
}

// SigMask returns the task's blocked signal mask.
func (t *Task) SigMask() (uint64, error) {
	m, err := sys.PtraceGetSigMask(t.Pid)
	if err != nil {
		return 0, fmt.Errorf("get sigmask %d: %w", t.Pid, err)
	}
	return m, nil
}

// SetSigMask sets the task's blocked signal mask.
func (t *Task) SetSigMask(m uint64) error {
	if err := sys.PtraceSetSigMask(t.Pid, m); err != nil {
		return fmt.Errorf("set sigmask %d: %w", t.Pid, err)
	}
	return nil
}

// Rseq returns the task's rseq registration (AbiPointer 0 when none).
func (t *Task) Rseq() (sys.RseqConfig, error) {
	c, err := sys.PtraceGetRseqConfig(t.Pid)
	if err != nil {
		return c, fmt.Errorf("get rseq configuration %d: %w", t.Pid, err)
	}
	return c, nil
}

// Detach lets the task run on from the registers set last.
func (t *Task) Detach() error {
	if err := t.unpin(); err != nil {
		return err
	}
	if err := unix.PtraceDetach(t.Pid); err != nil {
		return fmt.Errorf("detach %d: %w", t.Pid, err)
	}
	return nil
}

// ContinueWithSignal resumes the stopped task with sig delivered to it (PTRACE_CONT with a signal).
// Preconditions: called from Tracer.Do.
func (t *Task) ContinueWithSignal(sig unix.Signal) error {
	if err := unix.PtraceCont(t.Pid, int(sig)); err != nil {
		return fmt.Errorf("continue %d with %v: %w", t.Pid, sig, err)
	}
	return nil
}

// Kill sends SIGKILL and reaps the ptrace exit notification so that the real parent can reap the task.
func (t *Task) Kill() error {
	if err := unix.Kill(t.Pid, unix.SIGKILL); err != nil && err != unix.ESRCH {
		return fmt.Errorf("kill %d: %w", t.Pid, err)
	}
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(t.Pid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || ws.Exited() || ws.Signaled() {
			return nil
		}
		// A stop reported before the kill took effect: let it go on to die.
		_ = unix.PtraceCont(t.Pid, 0)
	}
}

// ReapAll collects the ptrace exit notification of every task of a killed set, in whatever order the
// tasks end. A fixed order can wait forever: the last thread of a PID namespace's init to exit waits in
// the kernel (zap_pid_ns_processes) until every other task of the namespace is released, and a traced
// thread that has exited is released only once its tracer has collected it; a thread group leader is
// reported only once its other threads are gone. (Seen with a multi-threaded Go program migrated as its
// namespace's init.)
// Preconditions: called from Tracer.Do; every task was sent SIGKILL.
func ReapAll(tasks []*Task) {
	left := slices.Clone(tasks)
	for len(left) > 0 {
		progress := false
		for i := 0; i < len(left); {
			tid := left[i].Pid
			var ws unix.WaitStatus
			got, err := unix.Wait4(tid, &ws, unix.WALL|unix.WNOHANG, nil)
			switch {
			case err == unix.EINTR:
				continue
			case err != nil || (got == tid && (ws.Exited() || ws.Signaled())):
				// Gone (ECHILD: reaped, or no longer ours).
				left = slices.Delete(left, i, i+1)
				progress = true
				continue
			case got == tid:
				// A stop on the way out: let it go on dying.
				_ = unix.PtraceCont(tid, 0)
				progress = true
			}
			i++
		}
		if !progress {
			time.Sleep(100 * time.Microsecond)
		}
	}
}

// Reap collects the exit notification of a task that died with its thread group (after a Kill of the
// leader), so that it does not linger as a traced zombie.
func (t *Task) Reap() error {
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(t.Pid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || ws.Exited() || ws.Signaled() {
			return nil
		}
		_ = unix.PtraceCont(t.Pid, 0)
	}
}
