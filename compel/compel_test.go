package compel

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (ptrace, clone3 set_tid)")
	}
}

// freePid returns a PID that is currently unused, above the last allocated one.
func freePid(t *testing.T) int {
	b, err := os.ReadFile("/proc/sys/kernel/ns_last_pid")
	if err != nil {
		t.Fatal(err)
	}
	last, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	for p := last + 500; p < last+5000; p++ {
		if _, err := os.Stat("/proc/" + strconv.Itoa(p)); errors.Is(err, os.ErrNotExist) {
			return p
		}
	}
	t.Fatal("no free pid")
	return 0
}

func TestStubCloneWithPid(t *testing.T) {
	requireRoot(t)
	tr := NewTracer()
	want := freePid(t)
	err := tr.Do(func() error {
		stub, err := tr.StartStub()
		if err != nil {
			return err
		}
		defer stub.Kill()
		got, err := stub.Syscall(unix.SYS_GETPID)
		if err != nil {
			return err
		}
		if int(got) != stub.Pid {
			t.Errorf("getpid in stub = %d, want %d", got, stub.Pid)
		}
		child, err := stub.CloneWithPid(want, unix.CLONE_PARENT)
		if err != nil {
			return err
		}
		defer child.Kill()
		got, err = child.Syscall(unix.SYS_GETPID)
		if err != nil {
			return err
		}
		if int(got) != want {
			t.Errorf("getpid in child = %d, want %d", got, want)
		}
		ppid, err := child.Syscall(unix.SYS_GETPPID)
		if err != nil {
			return err
		}
		if int(ppid) != os.Getpid() {
			t.Errorf("child's parent = %d, want lazyr itself (%d) because of CLONE_PARENT", ppid, os.Getpid())
		}
		// A failing syscall keeps its errno.
		_, err = child.Syscall(unix.SYS_CLOSE, 999)
		if !errors.Is(err, unix.EBADF) {
			t.Errorf("close(999) error = %v, want EBADF", err)
		}
		// The same PID twice must fail with EEXIST.
		_, err = stub.CloneWithPid(want, unix.CLONE_PARENT)
		if !errors.Is(err, unix.EEXIST) {
			t.Errorf("second clone with the same pid: %v, want EEXIST", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSeizeInjectDetach(t *testing.T) {
	requireRoot(t)
	cmd := exec.Command("sh", "-c", "while :; do sleep 0.05; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	time.Sleep(50 * time.Millisecond)
	tr := NewTracer()
	err := tr.Do(func() error {
		task, err := tr.Seize(cmd.Process.Pid)
		if err != nil {
			return err
		}
		if err := task.FindGadget(); err != nil {
			return err
		}
		for i := 0; i < 100; i++ {
			got, err := task.Syscall(unix.SYS_GETPID)
			if err != nil {
				return err
			}
			if int(got) != cmd.Process.Pid {
				t.Fatalf("getpid = %d", got)
			}
		}
		if _, err := task.XState(); err != nil {
			return err
		}
		return task.Release()
	})
	if err != nil {
		t.Fatal(err)
	}
	// Still alive and running.
	time.Sleep(100 * time.Millisecond)
	if err := unix.Kill(cmd.Process.Pid, 0); err != nil {
		t.Fatalf("victim gone after detach: %v", err)
	}
	st, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/status")
	if strings.Contains(string(st), "TracerPid:\t"+strconv.Itoa(os.Getpid())) {
		t.Fatal("still traced after detach")
	}
}

func TestWrongThread(t *testing.T) {
	tr := NewTracer()
	if _, err := tr.Seize(1); !errors.Is(err, ErrWrongThread) {
		t.Fatalf("Seize outside Do: %v, want ErrWrongThread", err)
	}
}

func TestBatch(t *testing.T) {
	requireRoot(t)
	tr := NewTracer()
	err := tr.Do(func() error {
		stub, err := tr.StartStub()
		if err != nil {
			return err
		}
		defer stub.Kill()
		// Executor in the stub's own (RWX) scratch: code at the start, table after it.
		s, n := stub.Scratch()
		if err := stub.InstallBatch(s, s+4096, n-4096); err != nil {
			return err
		}
		calls := []Call{NewCall(unix.SYS_GETPID), NewCall(unix.SYS_GETPPID), NewCall(unix.SYS_CLOSE, 999), NewCall(unix.SYS_GETPID)}
		err = stub.Batch(calls)
		var se *SyscallError
		if !errors.As(err, &se) || se.Index != 2 || !errors.Is(err, unix.EBADF) {
			t.Fatalf("batch error = %v, want EBADF at index 2", err)
		}
		if int(calls[0].Ret) != stub.Pid || int(calls[1].Ret) != os.Getpid() {
			t.Errorf("results %d %d, want %d %d", calls[0].Ret, calls[1].Ret, stub.Pid, os.Getpid())
		}
		many := make([]Call, 3000) // more than one table's worth
		for i := range many {
			many[i] = NewCall(unix.SYS_GETPID)
		}
		if err := stub.Batch(many); err != nil {
			return err
		}
		for _, c := range many {
			if int(c.Ret) != stub.Pid {
				t.Fatalf("batched getpid = %d", c.Ret)
			}
		}
		// Single injections still work afterwards.
		got, err := stub.Syscall(unix.SYS_GETPID)
		if err != nil || int(got) != stub.Pid {
			t.Fatalf("getpid after batch: %d %v", got, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
