package testutil

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// DefaultLazyrTimeout bounds one lazyr invocation when LazyrOptions.Timeout
// is zero.
const DefaultLazyrTimeout = 60 * time.Second

// LazyrOptions tune one lazyr invocation.
type LazyrOptions struct {
	// Timeout bounds the run; on timeout lazyr's process group is killed and
	// the test fails. Zero means DefaultLazyrTimeout.
	Timeout time.Duration
	// Credential, if set, runs lazyr as another user (the test must be root).
	Credential *syscall.Credential
	// Dir is the working directory; empty means a fresh t.TempDir(), or "/"
	// when Credential is set (another user cannot enter the test's 0700
	// temp dirs).
	Dir string
	// Binary overrides the lazyr binary (default: BuildLazyr).
	Binary string
}

// Lazyr runs the lazyr CLI with args and returns its stdout, stderr and exit
// code. See LazyrWith.
func Lazyr(t testing.TB, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	return LazyrWith(t, LazyrOptions{}, args...)
}

// LazyrWith runs the lazyr CLI with args. Output goes to files, not pipes: a
// process lazyr leaves behind (a restored task, a daemon) must not keep the
// harness waiting for EOF. A run that exceeds the timeout fails the test. The
// exit code is -1 if lazyr died from a signal.
func LazyrWith(t testing.TB, opts LazyrOptions, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	if err := closeInheritedOnExec(); err != nil {
		t.Fatal(err)
	}
	bin := opts.Binary
	if bin == "" {
		bin = BuildLazyr(t)
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = DefaultLazyrTimeout
	}
	tmp := t.TempDir()
	dir := opts.Dir
	if dir == "" {
		dir = tmp
		if opts.Credential != nil {
			dir = "/"
		}
	}
	outF, err := os.Create(filepath.Join(tmp, "stdout"))
	if err != nil {
		t.Fatalf("lazyr stdout file: %v", err)
	}
	defer outF.Close()
	errF, err := os.Create(filepath.Join(tmp, "stderr"))
	if err != nil {
		t.Fatalf("lazyr stderr file: %v", err)
	}
	defer errF.Close()

	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = outF
	cmd.Stderr = errF
	// Own process group, so a timeout can kill whatever lazyr started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: opts.Credential}

	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var werr error
	timedOut := false
	select {
	case werr = <-done:
	case <-time.After(timeout):
		timedOut = true
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		werr = <-done
	}
	elapsed := time.Since(start)

	ob, _ := os.ReadFile(outF.Name())
	eb, _ := os.ReadFile(errF.Name())
	stdout, stderr = string(ob), string(eb)
	cmdline := "lazyr " + strings.Join(args, " ")
	if timedOut {
		t.Fatalf("%s: timed out after %v\nstdout:\n%s\nstderr:\n%s", cmdline, timeout, Tail(stdout, 40), Tail(stderr, 40))
	}
	var ee *exec.ExitError
	if werr != nil && !errors.As(werr, &ee) {
		t.Fatalf("%s: %v", cmdline, werr)
	}
	exitCode = cmd.ProcessState.ExitCode()
	t.Logf("%s: exit %d in %v; stderr: %s", cmdline, exitCode, elapsed.Round(time.Millisecond), Tail(stderr, 10))
	return stdout, stderr, exitCode
}
