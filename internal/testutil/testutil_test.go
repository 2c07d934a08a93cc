package testutil

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) { os.Exit(CheckNoLeakedFds(m)) }

func TestModuleRoot(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"go.mod", "integration/victims/victim.h", "internal/testutil/doc.go"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("module root %s: %v", root, err)
		}
	}
}

func TestParseStatState(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want byte
		ok   bool
	}{
		{"1234 (counter) S 1 1234 1234 0 -1", 'S', true},
		{"1 (a) b) (c) R 0", 'R', true}, // comm with ") " inside
		{"7 (x y z) Z 1\n", 'Z', true},
		{"7 () t 1", 't', true},
		{"7 (x)", 0, false},
		{"7 (x) ", 0, false},
		{"7 (x)  S", 0, false},
		{"garbage", 0, false},
		{") S (", 0, false},
		{"", 0, false},
	} {
		got, err := ParseStatState([]byte(tc.in))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseStatState(%q) = %q, %v; want %q, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseStatState(f *testing.F) {
	f.Add([]byte("1234 (counter) S 1 1234 1234 0 -1"))
	f.Add([]byte("1 (a) b) (c) R 0"))
	f.Add([]byte(")"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseStatState(b)
		if err != nil {
			return
		}
		// The state is the byte right after the last ") ".
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) || b[i+2] != st || st == ' ' || st == '\n' {
			t.Fatalf("ParseStatState(%q) = %q, not the byte after the last ') '", b, st)
		}
	})
}

func TestBuildVictimIsCached(t *testing.T) {
	p1 := BuildVictim(t, "exitcode")
	if !strings.HasPrefix(p1, VictimCacheDir()+string(filepath.Separator)) {
		t.Errorf("victim %s not under %s", p1, VictimCacheDir())
	}
	if filepath.Base(p1) != "exitcode" {
		t.Errorf("victim binary %s is not named after the victim", p1)
	}
	st1, err := os.Stat(p1)
	if err != nil {
		t.Fatal(err)
	}
	// Forget the in-memory cache: the on-disk one must still avoid gcc.
	victimBuild.mu.Lock()
	victimBuild.cache = nil
	victimBuild.mu.Unlock()
	start := time.Now()
	p2 := BuildVictim(t, "exitcode")
	if p2 != p1 {
		t.Errorf("second build at %s, want cached %s", p2, p1)
	}
	st2, err := os.Stat(p2)
	if err != nil {
		t.Fatal(err)
	}
	if !st2.ModTime().Equal(st1.ModTime()) {
		t.Errorf("cached victim was rebuilt (mtime %v -> %v)", st1.ModTime(), st2.ModTime())
	}
	t.Logf("cached lookup took %v", time.Since(start))
	// Different flags are a different binary.
	p3 := BuildVictim(t, "exitcode", "-DLAZYR_TESTUTIL_FLAG=1")
	if p3 == p1 {
		t.Errorf("extra flags did not change the cache key (%s)", p3)
	}
}

func TestStartVictimExitStatus(t *testing.T) {
	v := StartVictim(t, BuildVictim(t, "exitcode"), "3")
	m := v.WaitOutput(regexp.MustCompile(`start pid=(\d+) ticks=3`), 5*time.Second)
	if m[1] != strconv.Itoa(v.Pid) {
		t.Errorf("victim reports pid %s, harness has %d", m[1], v.Pid)
	}
	v.WaitOutput(regexp.MustCompile(`(?m)^exiting 7$`), 5*time.Second)
	st, err := v.Wait(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.ExitCode() != 7 {
		t.Errorf("exit code %d, want 7", st.ExitCode())
	}
	if !v.Exited() {
		t.Error("Exited() false after Wait")
	}
	if err := WaitPidGone(v.Pid, time.Second); err != nil {
		t.Errorf("reaped victim still in /proc: %v", err)
	}
	want := "tick 0 pid=" + strconv.Itoa(v.Pid) + "\ntick 1 pid=" + strconv.Itoa(v.Pid)
	if !strings.Contains(v.Output(), want) {
		t.Errorf("output lacks %q:\n%s", want, v.Output())
	}
}

func TestStartVictimEnvironment(t *testing.T) {
	v := StartVictim(t, BuildVictim(t, "sleeper"), "5000")
	v.WaitOutput(regexp.MustCompile(`(?m)^before 0$`), 5*time.Second)
	if err := WaitProcState(v.Pid, "S", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if !PidAlive(v.Pid) || v.Exited() {
		t.Fatal("sleeping victim not alive")
	}
	sid, err := syscall.Getpgid(v.Pid)
	if err != nil || sid != v.Pid {
		t.Errorf("victim pgid %d (%v), want its own pid %d", sid, err, v.Pid)
	}
	fdDir := "/proc/" + strconv.Itoa(v.Pid) + "/fd"
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got[e.Name()] = target
	}
	want := map[string]string{"0": "/dev/null", "1": v.OutputFile, "2": v.OutputFile}
	if len(got) != len(want) {
		t.Errorf("victim fds %v, want exactly %v", got, want)
	}
	for fd, target := range want {
		if got[fd] != target {
			t.Errorf("victim fd %s -> %q, want %q", fd, got[fd], target)
		}
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(v.Pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// Field 7 (tty_nr) is 0: no controlling terminal; field 6 is the sid.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	if fields[3] != strconv.Itoa(v.Pid) || fields[4] != "0" {
		t.Errorf("victim session %s tty %s, want session %d and no tty", fields[3], fields[4], v.Pid)
	}
	v.Kill()
	if !v.Exited() {
		t.Fatal("victim not reaped after Kill")
	}
	if err := WaitPidGone(v.Pid, time.Second); err != nil {
		t.Error(err)
	}
}

func TestWaitOutputFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "out")
	if err := os.WriteFile(p, []byte("tick 1\ntick 2 sum=ab\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := WaitOutputFile(p, regexp.MustCompile(`tick (\d+) sum=(\w+)`), time.Second)
	if err != nil || m[1] != "2" || m[2] != "ab" {
		t.Errorf("match %q, %v", m, err)
	}
	start := time.Now()
	_, err = WaitOutputFile(p, regexp.MustCompile(`tick 3`), 100*time.Millisecond)
	if err == nil || time.Since(start) < 100*time.Millisecond {
		t.Errorf("no timeout error (%v after %v)", err, time.Since(start))
	}
	if err := os.WriteFile(p, []byte("tick 1\nFAIL counter page=3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = WaitOutputFile(p, regexp.MustCompile(`tick 3`), 10*time.Second)
	if !errors.Is(err, ErrFailLine) || !strings.Contains(err.Error(), "FAIL counter page=3") {
		t.Errorf("FAIL line not reported: %v", err)
	}
	if _, err := WaitOutputFile(filepath.Join(t.TempDir(), "none"), regexp.MustCompile(`x`), 20*time.Millisecond); err == nil {
		t.Error("missing file matched")
	}
}

func TestWaitPidOutputStopsWhenProcessEnds(t *testing.T) {
	v := StartVictim(t, BuildVictim(t, "exitcode"), "2")
	start := time.Now()
	_, err := WaitPidOutput(v.Pid, v.OutputFile, regexp.MustCompile(`never printed`), 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), "no longer running") {
		t.Errorf("want a 'no longer running' error, got %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("waited %v for a process that exited after ~0.2s", time.Since(start))
	}
	// A line printed just before exiting is still found.
	m, err := WaitPidOutput(v.Pid, v.OutputFile, regexp.MustCompile(`(?m)^exiting (\d)$`), time.Second)
	if err != nil || m[1] != "7" {
		t.Errorf("last line: %q, %v", m, err)
	}
}

func TestKillAtCleanup(t *testing.T) {
	v := StartVictim(t, BuildVictim(t, "sleeper"), "5000")
	v.WaitOutput(regexp.MustCompile(`(?m)^before 0$`), 5*time.Second)
	t.Run("inner", func(t *testing.T) { KillAtCleanup(t, v.Pid) })
	st, err := v.Wait(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ws := st.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("victim ended with %v, want SIGKILL", st)
	}
	// Nothing to do for a PID that is gone.
	t.Run("gone", func(t *testing.T) { KillAtCleanup(t, v.Pid) })
}

func TestUnusedPid(t *testing.T) {
	pid, err := UnusedPid()
	if err != nil {
		t.Fatal(err)
	}
	if PidExists(pid) || PidAlive(pid) {
		t.Errorf("pid %d exists", pid)
	}
	if _, err := ProcState(pid); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ProcState of unused pid: %v, want ErrNotExist", err)
	}
	if err := WaitPidGone(pid, 0); err != nil {
		t.Error(err)
	}
	if err := WaitPidGone(os.Getpid(), 20*time.Millisecond); err == nil {
		t.Error("WaitPidGone on own pid succeeded")
	}
}

func TestLazyrRunner(t *testing.T) {
	stdout, stderr, code := LazyrWith(t, LazyrOptions{Binary: "/bin/sh"}, "-c", "echo out; echo err >&2; pwd; exit 3")
	if code != 3 || stderr != "err\n" || !strings.HasPrefix(stdout, "out\n") {
		t.Errorf("got stdout %q stderr %q code %d", stdout, stderr, code)
	}
	_, _, code = LazyrWith(t, LazyrOptions{Binary: "/bin/sh"}, "-c", "kill -9 $$")
	if code != -1 {
		t.Errorf("killed run: exit code %d, want -1", code)
	}
}

func TestLazyrRunnerCredential(t *testing.T) {
	RequireRoot(t)
	stdout, stderr, code := LazyrWith(t, LazyrOptions{
		Binary:     "/bin/sh",
		Credential: &syscall.Credential{Uid: 65534, Gid: 65534},
	}, "-c", "id -u; pwd")
	if code != 0 || stdout != "65534\n/\n" {
		t.Errorf("got stdout %q stderr %q code %d", stdout, stderr, code)
	}
}

func TestLeakedFds(t *testing.T) {
	before, err := openFds()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	leaks, err := leakedFds(before)
	if err != nil {
		t.Fatal(err)
	}
	want := "fd " + strconv.Itoa(int(f.Fd())) + " -> /proc/"
	if len(leaks) != 1 || !strings.HasPrefix(leaks[0], want) {
		t.Errorf("leaks %q, want one %q...", leaks, want)
	}
	f.Close()
	if leaks, err = leakedFds(before); err != nil || len(leaks) != 0 {
		t.Errorf("after close: %q, %v", leaks, err)
	}
}
