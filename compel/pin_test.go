package compel

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestPin: tasks created while the tracer is pinned share its one CPU, and get the tracer's old affinity
// back (as Detach does) before they run; the tracer gets it back on Unpin.
func TestPin(t *testing.T) {
	requireRoot(t)
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	if all.Count() < 2 {
		t.Skipf("one CPU only: pinning changes nothing")
	}
	affinity := func(pid int) unix.CPUSet {
		var s unix.CPUSet
		if err := unix.SchedGetaffinity(pid, &s); err != nil {
			t.Fatalf("sched_getaffinity(%d): %v", pid, err)
		}
		return s
	}
	tr := NewTracer()
	err := tr.Do(func() error {
		if err := tr.Pin(); err != nil {
			return err
		}
		if pinned := affinity(0); pinned.Count() != 1 {
			t.Errorf("pinned tracer may run on %d CPUs", pinned.Count())
		}
		stub, err := tr.StartStub()
		if err != nil {
			return err
		}
		defer stub.Kill()
		child, err := stub.CloneWithPid(freePid(t), unix.CLONE_PARENT)
		if err != nil {
			return err
		}
		defer child.Kill()
		for _, task := range []*Task{stub, child} {
			if got := affinity(task.Pid); got != affinity(0) {
				t.Errorf("task %d created while pinned has affinity %v, want the tracer's", task.Pid, got)
			}
		}
		if err := child.unpin(); err != nil {
			return err
		}
		if got := affinity(child.Pid); got != all {
			t.Errorf("unpinned task has affinity with %d CPUs, want %d", got.Count(), all.Count())
		}
		if err := tr.Unpin(); err != nil {
			return err
		}
		if got := affinity(0); got != all {
			t.Errorf("unpinned tracer has affinity with %d CPUs, want %d", got.Count(), all.Count())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
