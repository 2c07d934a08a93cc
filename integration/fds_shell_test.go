package integration

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/internal/testutil"
)

// openTestPty opens a pty pair in the test process; what is written to the terminal is read away so that
// it never blocks the writer.
func openTestPty(t *testing.T) (master, slave *os.File, name string) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	name = "/dev/pts/" + strconv.Itoa(n)
	s, err := os.OpenFile(name, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	go func() { _, _ = io.Copy(io.Discard, m) }()
	return m, s, name
}

// startOnTerminal starts bin with args as a session leader whose controlling terminal (and stdin) is
// slave, as a login shell runs; stdout and stderr go to out (the terminal if out is nil).
func startOnTerminal(t *testing.T, slave, out *os.File, bin string, args ...string) *exec.Cmd {
	t.Helper()
	// As testutil does for its own children: fds this test binary inherited must not leak into the
	// process (a dump would see them).
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	if out != nil {
		cmd.Stdout, cmd.Stderr = out, out
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	return cmd
}

// TestShellJob: a job started by a shell on one terminal is dumped with --shell-job and restored with
// --shell-job by a lazyr running on another terminal: the job then reads that terminal, in the
// foreground, in lazyr's session. Without the flag the dump and the restore are refused.
func TestShellJob(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildVictim(t, "fd_shell")
	m1, s1, _ := openTestPty(t)
	out := filepath.Join(t.TempDir(), "job.out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	startOnTerminal(t, s1, f, bin, "shell")
	f.Close()
	m, err := testutil.WaitOutputFile(out, regexp.MustCompile(`ready job pid=(\d+) pgid=(\d+) sid=(\d+)`), outputTimeout)
	if err != nil {
		t.Fatal(err)
	}
	job, _ := strconv.Atoi(m[1])
	testutil.KillAtCleanup(t, job)
	if _, err := testutil.WaitPidOutput(job, out, lineRe(`^tick \d+ fg=1 sid=%s$`, m[3]), outputTimeout); err != nil {
		t.Fatal(err)
	}
	if _, err := m1.WriteString("hello\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := testutil.WaitPidOutput(job, out, lineRe(`^got hello$`), outputTimeout); err != nil {
		t.Fatal(err)
	}

	_, stderr, code := testutil.Lazyr(t, "dump", "-t", strconv.Itoa(job), "-D", t.TempDir())
	requireFailure(t, "dump of a shell job without --shell-job", stderr, code, regexp.MustCompile(`--shell-job`))
	last := lastNumber(t, testutil.ReadOutput(out), tickRe)
	if _, err := testutil.WaitPidOutput(job, out, lineRe(`^tick %d fg=1 `, last+2), outputTimeout); err != nil {
		t.Fatalf("after the refused dump: %v", err)
	}

	dir := t.TempDir()
	dump(t, job, dir, "--shell-job")
	if err := testutil.WaitPidGone(job, goneTimeout); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = testutil.Lazyr(t, "restore", "-D", dir, "-d")
	requireFailure(t, "restore of a shell job without --shell-job", stderr, code, regexp.MustCompile(`--shell-job`))
	requireNoProcess(t, job)

	before := testutil.ReadOutput(out)
	last = lastNumber(t, before, tickRe)
	m2, s2, name2 := openTestPty(t)
	log := filepath.Join(t.TempDir(), "restore.log")
	lazyr := startOnTerminal(t, s2, nil, testutil.BuildLazyr(t), "restore", "-D", dir, "--shell-job", "-o", log, "-v", "4")
	if _, err := testutil.WaitOutputFile(out, lineRe(`^tick %d fg=1 sid=%d$`, last+2, lazyr.Process.Pid), outputTimeout); err != nil {
		t.Fatalf("restored job: %v\nlog:\n%s", err, logTail(log))
	}
	if _, err := m2.WriteString("after\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := testutil.WaitPidOutput(job, out, lineRe(`^got after$`), outputTimeout); err != nil {
		t.Fatal(err)
	}
	if tty, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/0", job)); err != nil || tty != name2 {
		t.Errorf("restored job's fd 0 is %q (%v), want lazyr's terminal %s", tty, err, name2)
	}
	requireNoFail(t, testutil.ReadOutput(out))
	requireConsecutive(t, "tick", numbers(t, testutil.ReadOutput(out), tickRe), 0, last+3)
}
