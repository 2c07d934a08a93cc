package testutil

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Victim is a victim program started by StartVictim: a child of the test
// process, reaped by a goroutine as soon as it exits.
type Victim struct {
	// Pid is the victim's PID (also the PID a restore must bring back).
	Pid int
	// Bin is the path of the victim binary.
	Bin string
	// OutputFile receives the victim's stdout and stderr. It outlives the
	// victim: a restored process keeps writing to it.
	OutputFile string

	t    testing.TB
	cmd  *exec.Cmd
	done chan struct{} // closed once the victim is reaped

	mu      sync.Mutex
	state   *os.ProcessState
	waitErr error
}

// StartVictim starts bin with args in a new session (no controlling
// terminal), stdin from /dev/null, stdout and stderr to a fresh file in
// t.TempDir(), and its working directory in that same folder. It is killed
// at test cleanup if still running.
func StartVictim(t testing.TB, bin string, args ...string) *Victim {
	t.Helper()
	if err := closeInheritedOnExec(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, filepath.Base(bin)+".out")
	// These become the victim's own fds 1 and 2: a plain regular file a
	// checkpoint can describe and a restore can reopen.
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatalf("victim output file: %v", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdin = nil // exec opens /dev/null
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.Dir = dir
	// No Pdeathsig: it is task state a dump records and a restore brings
	// back, and the restored task would then die with whatever process
	// happened to create it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	_ = f.Close()
	if err != nil {
		t.Fatalf("start victim %s: %v", bin, err)
	}
	v := &Victim{
		Pid:        cmd.Process.Pid,
		Bin:        bin,
		OutputFile: out,
		t:          t,
		cmd:        cmd,
		done:       make(chan struct{}),
	}
	go func() {
		err := cmd.Wait()
		v.mu.Lock()
		v.state, v.waitErr = cmd.ProcessState, err
		v.mu.Unlock()
		close(v.done)
	}()
	t.Cleanup(v.Kill)
	return v
}

// Output returns everything the victim (or a process restored from it)
// wrote so far.
func (v *Victim) Output() string { return ReadOutput(v.OutputFile) }

// Exited reports whether the victim has exited and been reaped.
func (v *Victim) Exited() bool {
	select {
	case <-v.done:
		return true
	default:
		return false
	}
}

// Wait waits up to timeout for the victim to exit and returns its state.
func (v *Victim) Wait(timeout time.Duration) (*os.ProcessState, error) {
	select {
	case <-v.done:
	case <-time.After(timeout):
		return nil, fmt.Errorf("victim %d still running after %v", v.Pid, timeout)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	var ee *exec.ExitError
	if v.waitErr != nil && !errors.As(v.waitErr, &ee) {
		return v.state, fmt.Errorf("wait victim %d: %w", v.Pid, v.waitErr)
	}
	return v.state, nil
}

// Kill kills the original victim process (never a process restored from it:
// the signal goes through the pidfd Go holds for the original) and waits
// until it is reaped.
func (v *Victim) Kill() {
	if v.Exited() {
		return
	}
	if err := v.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		v.t.Errorf("kill victim %d: %v", v.Pid, err)
	}
	select {
	case <-v.done:
	case <-time.After(10 * time.Second):
		v.t.Errorf("victim %d not reaped 10s after SIGKILL", v.Pid)
	}
}

// WaitOutput waits until re matches the victim's output and returns the
// first match. It fails the test on timeout, on a FAIL line, or when the
// victim exits without printing a match. Use it only from the test
// goroutine; for a restored process use WaitPidOutput.
func (v *Victim) WaitOutput(re *regexp.Regexp, timeout time.Duration) []string {
	v.t.Helper()
	m, err := waitOutput(v.OutputFile, re, timeout, func() error {
		if v.Exited() {
			v.mu.Lock()
			defer v.mu.Unlock()
			return fmt.Errorf("victim %d exited (%v)", v.Pid, v.state)
		}
		return nil
	})
	if err != nil {
		v.t.Fatalf("victim %s: %v", filepath.Base(v.Bin), err)
	}
	return m
}
