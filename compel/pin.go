package compel

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/internal/sys"
)

// Pin binds the tracer thread to the CPU it runs on, until Unpin.
//
// Every ptrace round trip (an injected syscall, a batch) wakes the tracee and then the tracer again. On
// two CPUs each of those wake-ups may have to bring an idle CPU back, which on a virtual machine costs tens
// of microseconds; on one CPU it is a plain context switch. Measured on a 2-vCPU VM: restore's ptrace phase
// takes about half the time pinned.
//
// Tasks the tracer creates while pinned (StartStub, CloneWithPid) inherit the pin; Detach gives them the
// affinity the tracer had before Pin, which is what they would have inherited otherwise. Pinning is an
// optimisation: where the affinity cannot be changed (a restricting cpuset, say), Pin returns the error and
// everything works unpinned.
// Preconditions: called from Tracer.Do.
func (tr *Tracer) Pin() error {
	if err := tr.check(); err != nil {
		return err
	}
	if tr.pinned {
		return nil
	}
	var orig unix.CPUSet
	if err := unix.SchedGetaffinity(0, &orig); err != nil {
		return fmt.Errorf("sched_getaffinity: %w", err)
	}
	cpu, err := sys.CurrentCPU()
	if err != nil {
		return fmt.Errorf("getcpu: %w", err)
	}
	var one unix.CPUSet
	one.Set(cpu)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		return fmt.Errorf("pin tracer to cpu %d: %w", cpu, err)
	}
	tr.pinned, tr.unpinned = true, orig
	return nil
}

// Unpin gives the tracer thread its affinity from before Pin back.
// Preconditions: called from Tracer.Do.
func (tr *Tracer) Unpin() error {
	if err := tr.check(); err != nil {
		return err
	}
	if !tr.pinned {
		return nil
	}
	tr.pinned = false
	if err := unix.SchedSetaffinity(0, &tr.unpinned); err != nil {
		return fmt.Errorf("unpin tracer: %w", err)
	}
	return nil
}

// unpin gives a task created while the tracer was pinned the affinity it would have had unpinned.
func (t *Task) unpin() error {
	if !t.pinned {
		return nil
	}
	if err := unix.SchedSetaffinity(t.Pid, &t.tr.unpinned); err != nil {
		return fmt.Errorf("affinity of %d: %w", t.Pid, err)
	}
	t.pinned = false
	return nil
}
