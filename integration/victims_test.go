package integration

// These tests need no lazyr: they check that the victims run as the
// restore tests expect and, above all, that they notice lost state, so that
// a restore test passing means the state really came back.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/internal/testutil"
)

func TestVictimsStandalone(t *testing.T) {
	testutil.RequireRoot(t)
	t.Run("counter", func(t *testing.T) {
		v := testutil.StartVictim(t, testutil.BuildVictim(t, "counter"), "4")
		v.WaitOutput(lineRe(`^tick 2 sum=[0-9a-f]{16} pid=%d$`, v.Pid), outputTimeout)
		requireCounterOutput(t, v, v.Output(), 3)
	})
	t.Run("sleeper", func(t *testing.T) {
		v := testutil.StartVictim(t, testutil.BuildVictim(t, "sleeper"), "50")
		m := v.WaitOutput(lineRe(`^after 2 elapsed_ms=(\d+) pid=%d$`, v.Pid), outputTimeout)
		if el, _ := strconv.Atoi(m[1]); el < 49 {
			t.Errorf("50 ms sleep took %d ms", el)
		}
	})
	t.Run("piperead", func(t *testing.T) {
		v := testutil.StartVictim(t, testutil.BuildVictim(t, "piperead"))
		m := v.WaitOutput(regexp.MustCompile(`ready rfd=(\d+) wfd=(\d+)`), outputTimeout)
		f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%s", v.Pid, m[2]), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		// Two lines in one write, the second one split across writes.
		for _, s := range []string{"one\ntw", "o\n"} {
			if _, err := f.WriteString(s); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		v.WaitOutput(lineRe(`^got one\npending pending-data-123\ngot two\npending pending-data-124$`), outputTimeout)
	})
	t.Run("fpu", func(t *testing.T) {
		if !cpuHasFlag(t, "avx2") {
			t.Skip("CPU lacks AVX2")
		}
		v := testutil.StartVictim(t, testutil.BuildVictim(t, "fpu"), "20")
		v.WaitOutput(lineRe(`^fpu ok 4 kind=`), outputTimeout)
		out := v.Output()
		if cpuHasFlag(t, "avx512f") && !strings.Contains(out, "kind=avx512") {
			t.Errorf("AVX-512 CPU but no avx512 round:\n%s", out)
		}
	})
	t.Run("files", func(t *testing.T) {
		dir := t.TempDir()
		var data strings.Builder
		for i := range 100 {
			fmt.Fprintf(&data, "%06d\n", i)
		}
		dataPath := filepath.Join(dir, "data")
		if err := os.WriteFile(dataPath, []byte(data.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		logPath := filepath.Join(dir, "log")
		// Something already in the log: the victim must append after it.
		if err := os.WriteFile(logPath, []byte("earlier\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		v := testutil.StartVictim(t, testutil.BuildVictim(t, "files"), logPath, dataPath)
		v.WaitOutput(lineRe(`^tick 2 `), outputTimeout)
		b, _ := os.ReadFile(logPath)
		if !strings.HasPrefix(string(b), "earlier\nlog 0\nlog 1\nlog 2\n") {
			t.Errorf("log content:\n%s", b)
		}
	})
	t.Run("files-detects-gap", func(t *testing.T) {
		dir := t.TempDir()
		dataPath := filepath.Join(dir, "data")
		if err := os.WriteFile(dataPath, []byte("000000\n000001\n000003\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		v := testutil.StartVictim(t, testutil.BuildVictim(t, "files"), filepath.Join(dir, "log"), dataPath)
		requireVictimFails(t, v, `FAIL line got 3 want 2`)
	})
	t.Run("threads", func(t *testing.T) {
		v := testutil.StartVictim(t, testutil.BuildVictim(t, "threads"))
		m := v.WaitOutput(regexp.MustCompile(`threads ready pid=\d+ tid=(\d+)`), outputTimeout)
		if !testutil.PidExists(atoi(t, m[1])) {
			t.Errorf("second thread %s not in /proc", m[1])
		}
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", v.Pid))
		if err != nil || len(tasks) != 2 {
			t.Errorf("%d tasks (%v), want 2", len(tasks), err)
		}
	})
	for kind, prefix := range map[string]string{"udp": "socket:", "eventfd": "anon_inode:[eventfd]"} {
		t.Run("socket-"+kind, func(t *testing.T) {
			v := testutil.StartVictim(t, testutil.BuildVictim(t, "socket"), kind)
			m := v.WaitOutput(regexp.MustCompile(`socket kind=\w+ fd=(\d+)`), outputTimeout)
			v.WaitOutput(lineRe(`^tick 1 `), outputTimeout)
			target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", v.Pid, m[1]))
			if err != nil || !strings.HasPrefix(target, prefix) {
				t.Errorf("fd %s -> %q (%v), want %s...", m[1], target, err, prefix)
			}
		})
	}
	t.Run("exitcode", func(t *testing.T) {
		v := testutil.StartVictim(t, testutil.BuildVictim(t, "exitcode"), "2")
		st, err := v.Wait(outputTimeout)
		if err != nil {
			t.Fatal(err)
		}
		if st.ExitCode() != 7 || v.Output() != fmt.Sprintf("start pid=%d ticks=2\ntick 0 pid=%[1]d\ntick 1 pid=%[1]d\nexiting 7\n", v.Pid) {
			t.Errorf("exit %d, output:\n%s", st.ExitCode(), v.Output())
		}
	})
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// requireVictimFails waits for the victim to print a FAIL line matching
// want and exit with status 1.
func requireVictimFails(t *testing.T, v *testutil.Victim, want string) {
	t.Helper()
	st, err := v.Wait(outputTimeout)
	if err != nil {
		t.Fatalf("victim did not notice: %v\n%s", err, testutil.Tail(v.Output(), 5))
	}
	f := testutil.FailLine.FindString(v.Output())
	if st.ExitCode() != 1 || !regexp.MustCompile(want).MatchString(f) {
		t.Errorf("exit %d, FAIL line %q; want exit 1 and %q", st.ExitCode(), f, want)
	}
}

// TestCounterDetectsCorruption flips one word of the counter's memory behind
// its back: the next verification must report it.
func TestCounterDetectsCorruption(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "counter"), "4")
	m := v.WaitOutput(regexp.MustCompile(`start pid=\d+ mib=4 addr=0x([0-9a-f]+)`), outputTimeout)
	addr, _ := strconv.ParseUint(m[1], 16, 64)
	v.WaitOutput(lineRe(`^verified 1$`), outputTimeout)
	// Page 777 is never rewritten in the first ticks of a 4 MiB area (window
	// 12 of 16), so the corruption stays until verified.
	target := addr + 777*4096 + 8*100
	mem, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", v.Pid), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	if _, err := mem.WriteAt([]byte{0xde, 0xad, 0xbe, 0xef}, int64(target)); err != nil {
		t.Fatal(err)
	}
	requireVictimFails(t, v, fmt.Sprintf(`FAIL counter tick=\d+ page=777 word=100 addr=0x%x `, target))
}

// TestFpuDetectsRegisterCorruption changes one register the asm loop keeps
// live (r9, the increment of r8) through ptrace while the victim is inside
// the loop: the round's check must report it. This is what a restore that
// puts back wrong registers looks like.
func TestFpuDetectsRegisterCorruption(t *testing.T) {
	testutil.RequireRoot(t)
	if !cpuHasFlag(t, "avx2") {
		t.Skip("CPU lacks AVX2")
	}
	// Not StartVictim: its reaper would collect the ptrace stops (wait
	// reports a tracee's stops to any thread of the tracer's process).
	bin := testutil.BuildVictim(t, "fpu")
	outPath := filepath.Join(t.TempDir(), "fpu.out")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "100")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	out.Close()
	if err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	done := false
	t.Cleanup(func() {
		if !done {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	m, err := testutil.WaitOutputFile(outPath, regexp.MustCompile(`loop2=0x([0-9a-f]+)-0x([0-9a-f]+) loop512=0x([0-9a-f]+)-0x([0-9a-f]+)`), outputTimeout)
	if err != nil {
		t.Fatal(err)
	}
	var b [4]uint64
	for i := range b {
		b[i], _ = strconv.ParseUint(m[1+i], 16, 64)
	}

	// Every ptrace request must come from the thread that attached.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	corrupted := false
	for attempt := 0; attempt < 500 && !corrupted; attempt++ {
		if err := unix.PtraceSeize(pid); err != nil {
			t.Fatalf("PTRACE_SEIZE: %v", err)
		}
		if err := unix.PtraceInterrupt(pid); err != nil {
			t.Fatalf("PTRACE_INTERRUPT: %v", err)
		}
		var ws unix.WaitStatus
		if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != nil || !ws.Stopped() {
			t.Fatalf("wait for the ptrace stop: %v (status %#x)", err, ws)
		}
		var regs unix.PtraceRegs
		if err := unix.PtraceGetRegs(pid, &regs); err != nil {
			t.Fatalf("PTRACE_GETREGS: %v", err)
		}
		if (regs.Rip >= b[0] && regs.Rip < b[1]) || (regs.Rip >= b[2] && regs.Rip < b[3]) {
			regs.R9 ^= 1 << 40
			if err := unix.PtraceSetRegs(pid, &regs); err != nil {
				t.Fatalf("PTRACE_SETREGS: %v", err)
			}
			corrupted = true
			t.Logf("changed r9 at ip %#x on attempt %d", regs.Rip, attempt)
		}
		if err := unix.PtraceDetach(pid); err != nil {
			t.Fatalf("PTRACE_DETACH: %v", err)
		}
		if !corrupted {
			time.Sleep(3 * time.Millisecond)
		}
	}
	if !corrupted {
		t.Fatal("never caught the victim inside its asm loop")
	}
	err = cmd.Wait()
	done = true
	f := testutil.FailLine.FindString(testutil.ReadOutput(outPath))
	if cmd.ProcessState.ExitCode() != 1 || !regexp.MustCompile(`^FAIL fpu round=\d+ kind=avx(2|512) reg=r(8|9) `).MatchString(f) {
		t.Errorf("victim exit %v (%v), FAIL line %q; want exit 1 and a FAIL on r8/r9", cmd.ProcessState, err, f)
	}
}
