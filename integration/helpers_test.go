package integration

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazyr/lazyr/internal/testutil"
)

const (
	// outputTimeout bounds a wait for a victim line; victims print every
	// ~100 ms, so this only matters when something is broken.
	outputTimeout = 10 * time.Second
	// goneTimeout bounds the wait for a PID to disappear; init on this
	// machine takes up to ~1.7 s to reap a killed orphan.
	goneTimeout = 10 * time.Second
)

// tickRe matches every victim's "tick <n> ..." line; group 1 is n.
var tickRe = regexp.MustCompile(`(?m)^tick (\d+)\b`)

// lineRe builds a multi-line regexp from a format.
func lineRe(format string, args ...any) *regexp.Regexp {
	return regexp.MustCompile("(?m)" + fmt.Sprintf(format, args...))
}

// logTail returns the end of a lazyr log file for failure messages.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return testutil.Tail(string(b), 40)
}

// dump runs `lazyr dump -t PID -D dir` with a verbose log and fails the test
// if it fails.
func dump(t *testing.T, pid int, dir string, extra ...string) {
	t.Helper()
	log := filepath.Join(t.TempDir(), "dump.log")
	args := append([]string{"dump", "-t", strconv.Itoa(pid), "-D", dir, "-o", log, "-v", "4"}, extra...)
	_, stderr, code := testutil.Lazyr(t, args...)
	if code != 0 {
		t.Fatalf("lazyr dump of pid %d: exit %d\nstderr:\n%s\nlog:\n%s", pid, code, stderr, logTail(log))
	}
}

// dumpKill dumps the victim (a child of the test) without --leave-running,
// then checks that the dump killed it and waits until its PID is free.
func dumpKill(t *testing.T, v *testutil.Victim, dir string) {
	t.Helper()
	dump(t, v.Pid, dir)
	st, err := v.Wait(goneTimeout)
	if err != nil {
		t.Fatalf("after dump: %v", err)
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("victim %d ended with %v after the dump; want it killed by a signal", v.Pid, st)
	}
	if err := testutil.WaitPidGone(v.Pid, goneTimeout); err != nil {
		t.Fatal(err)
	}
}

// dumpKillRestored dumps a restored process (not a child of the test) and
// waits until init has reaped it.
func dumpKillRestored(t *testing.T, pid int, dir string) {
	t.Helper()
	dump(t, pid, dir)
	if err := testutil.WaitPidGone(pid, goneTimeout); err != nil {
		t.Fatalf("after dump: %v", err)
	}
}

// restoreDetached runs `lazyr restore -D dir -d --pidfile F` and checks that
// the victim's process is back: the pidfile names the victim's PID, the
// process runs the victim's binary, and it will be killed at test cleanup.
func restoreDetached(t *testing.T, dir string, v *testutil.Victim) {
	t.Helper()
	tmp := t.TempDir()
	pidfile := filepath.Join(tmp, "restore.pid")
	log := filepath.Join(tmp, "restore.log")
	_, stderr, code := testutil.Lazyr(t, "restore", "-D", dir, "-d", "--pidfile", pidfile, "-o", log, "-v", "4")
	if code != 0 {
		t.Fatalf("lazyr restore -d: exit %d\nstderr:\n%s\nlog:\n%s", code, stderr, logTail(log))
	}
	testutil.KillAtCleanup(t, v.Pid)
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatalf("pidfile: %v", err)
	}
	if got := strings.TrimSpace(string(b)); got != strconv.Itoa(v.Pid) {
		t.Fatalf("pidfile says %q, want the dumped pid %d", got, v.Pid)
	}
	if !testutil.PidAlive(v.Pid) {
		t.Fatalf("restored pid %d is not running; output:\n%s", v.Pid, testutil.Tail(v.Output(), 20))
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", v.Pid))
	if err != nil {
		t.Fatalf("restored exe: %v", err)
	}
	if want, _ := filepath.EvalSymlinks(v.Bin); exe != want {
		t.Errorf("restored pid %d runs %q, want %q", v.Pid, exe, want)
	}
}

// waitRestored waits for re in the victim's output, written by the restored
// process; it fails as soon as that process is gone or prints FAIL.
func waitRestored(t *testing.T, v *testutil.Victim, re *regexp.Regexp) []string {
	t.Helper()
	m, err := testutil.WaitPidOutput(v.Pid, v.OutputFile, re, outputTimeout)
	if err != nil {
		t.Fatalf("restored %s: %v", filepath.Base(v.Bin), err)
	}
	return m
}

// numbers returns group 1 of every match of re in out, as ints.
func numbers(t *testing.T, out string, re *regexp.Regexp) []int {
	t.Helper()
	var ns []int
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		n, err := strconv.Atoi(m[1])
		if err != nil {
			t.Fatalf("bad number in %q: %v", m[0], err)
		}
		ns = append(ns, n)
	}
	return ns
}

// lastNumber is the last number numbers would return, or -1.
func lastNumber(t *testing.T, out string, re *regexp.Regexp) int {
	t.Helper()
	ns := numbers(t, out, re)
	if len(ns) == 0 {
		return -1
	}
	return ns[len(ns)-1]
}

// requireConsecutive fails unless ns is first, first+1, ..., with at least
// atLeast elements: no gap (lost progress), no repeat (a restart or a replay).
func requireConsecutive(t *testing.T, what string, ns []int, first, atLeast int) {
	t.Helper()
	if len(ns) < atLeast {
		t.Errorf("%s: %d lines, want at least %d", what, len(ns), atLeast)
	}
	for i, n := range ns {
		if n != first+i {
			t.Errorf("%s: line %d is %d, want %d (sequence %v)", what, i, n, first+i, around(ns, i))
			return
		}
	}
}

// around returns a few elements of ns around index i.
func around(ns []int, i int) []int {
	lo, hi := max(0, i-3), min(len(ns), i+4)
	return ns[lo:hi]
}

// requireNoFail fails the test if out holds a FAIL line.
func requireNoFail(t *testing.T, out string) {
	t.Helper()
	if f := testutil.FailLine.FindString(out); f != "" {
		t.Fatalf("victim reported: %s\n%s", f, testutil.Tail(out, 20))
	}
}

// cpuHasFlag reports whether /proc/cpuinfo lists flag for the first CPU.
func cpuHasFlag(t *testing.T, flag string) bool {
	t.Helper()
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "flags" {
			for _, fl := range strings.Fields(v) {
				if fl == flag {
					return true
				}
			}
			return false
		}
	}
	t.Fatalf("no flags line in /proc/cpuinfo: %v", sc.Err())
	return false
}

// procStatusField returns a field of /proc/PID/status ("TracerPid", ...).
func procStatusField(t *testing.T, pid int, name string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("status of %d: %v", pid, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == name {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", name, pid)
	return ""
}

// requireUndisturbed checks that a victim whose dump was refused (or that was
// dumped with --leave-running) runs on exactly as before: not traced, not
// stopped, and still printing ticks.
func requireUndisturbed(t *testing.T, v *testutil.Victim) {
	t.Helper()
	last := lastNumber(t, v.Output(), tickRe)
	v.WaitOutput(lineRe(`^tick %d\b`, last+3), outputTimeout)
	if v.Exited() {
		t.Fatalf("victim %d exited", v.Pid)
	}
	if tp := procStatusField(t, v.Pid, "TracerPid"); tp != "0" {
		t.Errorf("victim %d still traced by %s", v.Pid, tp)
	}
	if st, err := testutil.ProcState(v.Pid); err != nil || st == 't' || st == 'T' {
		t.Errorf("victim %d state %c (%v), want running", v.Pid, st, err)
	}
	requireNoFail(t, v.Output())
	requireConsecutive(t, "tick", numbers(t, v.Output(), tickRe), 0, last+4)
}

// requireNoProcess checks that no process holds pid once a failed restore
// returned: not running now, and gone entirely within goneTimeout (a
// half-created task may stay a zombie until init reaps it).
func requireNoProcess(t *testing.T, pid int) {
	t.Helper()
	if testutil.PidAlive(pid) {
		testutil.KillAtCleanup(t, pid)
		t.Fatalf("a process with pid %d is running after the failed restore", pid)
	}
	if err := testutil.WaitPidGone(pid, goneTimeout); err != nil {
		t.Fatalf("after the failed restore: %v", err)
	}
}
