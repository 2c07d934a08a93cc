package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pollInterval is how often the wait helpers look at /proc and output files.
const pollInterval = 5 * time.Millisecond

// ProcState returns the state letter of /proc/PID/stat ('R', 'S', 'D', 'Z',
// 't', 'T', ...). The error wraps fs.ErrNotExist when the PID does not exist.
func ProcState(pid int) (byte, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	st, err := ParseStatState(b)
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	return st, nil
}

// ParseStatState extracts the state letter from the content of a
// /proc/PID/stat file. The command name in parentheses may itself contain
// spaces and ')' (a process chooses its own comm), so the state is found after
// the LAST ')'.
func ParseStatState(stat []byte) (byte, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || bytes.IndexByte(stat, '(') < 0 || bytes.IndexByte(stat, '(') > i {
		return 0, errors.New("malformed stat: no (comm)")
	}
	rest := stat[i+1:]
	if len(rest) < 2 || rest[0] != ' ' || rest[1] == ' ' || rest[1] == '\n' {
		return 0, errors.New("malformed stat: no state after (comm)")
	}
	return rest[1], nil
}

// PidExists reports whether /proc/PID exists at all (zombies included).
func PidExists(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

// PidAlive reports whether PID exists and is not a zombie (or dead).
func PidAlive(pid int) bool {
	st, err := ProcState(pid)
	return err == nil && st != 'Z' && st != 'X' && st != 'x'
}

// WaitPidGone waits until /proc/PID no longer exists: the process has exited
// AND been reaped. A process killed by a dump whose parent is init stays a
// zombie for a second or more on this machine (init reaps slowly), and its PID
// cannot be restored before it is gone.
func WaitPidGone(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if !PidExists(pid) {
			return nil
		}
		if time.Now().After(deadline) {
			st, err := ProcState(pid)
			if err != nil {
				return fmt.Errorf("pid %d still exists after %v", pid, timeout)
			}
			return fmt.Errorf("pid %d still exists after %v (state %c)", pid, timeout, st)
		}
		time.Sleep(pollInterval)
	}
}

// WaitProcState waits until PID is in one of the given states.
func WaitProcState(pid int, states string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := ProcState(pid)
		if err != nil {
			return err
		}
		if bytes.IndexByte([]byte(states), st) >= 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d in state %c, not in [%s], after %v", pid, st, states, timeout)
		}
		time.Sleep(pollInterval)
	}
}

// KillAtCleanup makes sure the process PID (typically a restored process,
// which is not a child of the test) is killed when the test ends. It holds a
// pidfd from now on, so the signal at cleanup can only reach this very
// process even if the PID were reused meanwhile. If PID does not exist now,
// there is nothing to do.
func KillAtCleanup(t testing.TB, pid int) {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return
		}
		t.Fatalf("pidfd_open(%d): %v", pid, err)
	}
	t.Cleanup(func() {
		defer unix.Close(fd)
		if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			t.Errorf("kill pid %d: %v", pid, err)
			return
		}
		// A pidfd turns readable when the process has exited; reaping is
		// the job of its parent (init), which we do not wait for.
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			n, err := unix.Poll(fds, 100)
			if err != nil && !errors.Is(err, unix.EINTR) {
				t.Errorf("poll pidfd of %d: %v", pid, err)
				return
			}
			if n > 0 {
				return
			}
		}
		t.Errorf("pid %d did not exit within 10s of SIGKILL", pid)
	})
}

// UnusedPid returns a PID that no process or thread uses right now, from the
// top of the PID space where the kernel allocates last.
func UnusedPid() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		return 0, fmt.Errorf("read pid_max: %w", err)
	}
	max, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil {
		return 0, fmt.Errorf("parse pid_max: %w", err)
	}
	for pid := max - 1; pid > max/2; pid-- {
		if !PidExists(pid) {
			return pid, nil
		}
	}
	return 0, errors.New("no unused pid found")
}
