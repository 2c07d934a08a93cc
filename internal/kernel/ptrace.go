package kernel

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// ProbePtrace seizes a child with PTRACE_SEIZE, stops it with
// PTRACE_INTERRUPT, waits for the PTRACE_EVENT_STOP and detaches: the exact
// sequence compel uses to freeze a task without sending it a signal.
func ProbePtrace() error {
	errc := make(chan error, 1)
	go func() {
		// ptrace requests are only accepted from the tracer thread. The
		// thread is not unlocked: it exits with this goroutine, so no
		// other goroutine ever runs on a thread with tracer state.
		runtime.LockOSThread()
		errc <- probePtrace()
	}()
	return <-errc
}

// Preconditions: runs on a locked OS thread.
func probePtrace() error {
	cmd, err := startChild()
	if err != nil {
		return fmt.Errorf("ptrace: %w", err)
	}
	defer stopChild(cmd)
	pid := cmd.Process.Pid

	if err := unix.PtraceSeize(pid); err != nil {
		return missing("ptrace: PTRACE_SEIZE of a child (needs CAP_SYS_PTRACE or yama ptrace_scope < 3)", err)
	}
	if err := unix.PtraceInterrupt(pid); err != nil {
		unix.PtraceDetach(pid)
		return missing("ptrace: PTRACE_INTERRUPT", err)
	}
	var ws unix.WaitStatus
	for {
		_, err = unix.Wait4(pid, &ws, unix.WALL, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		unix.PtraceDetach(pid)
		return fmt.Errorf("ptrace: wait for the interrupt stop: %w", err)
	}
	if !ws.Stopped() || ws.TrapCause() != unix.PTRACE_EVENT_STOP {
		unix.PtraceDetach(pid)
		return missing(fmt.Sprintf("ptrace: PTRACE_INTERRUPT gave wait status %#x, not PTRACE_EVENT_STOP", uint32(ws)), nil)
	}
	if err := unix.PtraceDetach(pid); err != nil {
		return fmt.Errorf("ptrace: PTRACE_DETACH: %w", err)
	}
	return nil
}
