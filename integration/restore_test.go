package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	criustats "github.com/checkpoint-restore/go-criu/v8/stats"

	"github.com/lazyr/lazyr/internal/testutil"
)

// counterTickRe matches counter's tick lines: group 1 tick, group 2 pid.
var counterTickRe = regexp.MustCompile(`(?m)^tick (\d+) sum=[0-9a-f]{16} pid=(\d+)$`)

// requireCounterOutput checks a counter victim's whole output: ticks and
// verifications consecutive from 0 (nothing lost, nothing replayed), every
// tick printed by the victim's PID, no FAIL.
func requireCounterOutput(t *testing.T, v *testutil.Victim, out string, atLeast int) {
	t.Helper()
	requireNoFail(t, out)
	requireConsecutive(t, "tick", numbers(t, out, counterTickRe), 0, atLeast)
	requireConsecutive(t, "verified", numbers(t, out, regexp.MustCompile(`(?m)^verified (\d+)$`)), 0, atLeast)
	for _, m := range counterTickRe.FindAllStringSubmatch(out, -1) {
		if m[2] != strconv.Itoa(v.Pid) {
			t.Fatalf("tick %s printed by pid %s, want %d (getpid() in the restored task)", m[1], m[2], v.Pid)
		}
	}
}

// TestCounterRestore: 64 MiB of patterned memory, dumped (and killed), then
// restored detached. The restored process must have the same PID, continue
// with the next tick (no restart from 0), append to its output exactly where
// it stopped, and keep verifying all of its memory.
func TestCounterRestore(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "counter"), "64")
	v.WaitOutput(lineRe(`^tick 3\b`), outputTimeout)
	dir := t.TempDir()

	start := time.Now()
	dumpKill(t, v, dir)
	t.Logf("dump of 64 MiB + reap: %v", time.Since(start))
	before := v.Output()
	last := lastNumber(t, before, counterTickRe)

	start = time.Now()
	restoreDetached(t, dir, v)
	t.Logf("restore -d: %v", time.Since(start))
	waitRestored(t, v, lineRe(`^tick %d sum=[0-9a-f]{16} pid=%d$`, last+5, v.Pid))

	out := v.Output()
	if !strings.HasPrefix(out, before) {
		t.Fatalf("restored output does not continue the dumped one (file position lost?)\nbefore:\n%s\nafter:\n%s",
			testutil.Tail(before, 5), testutil.Tail(out, 10))
	}
	requireCounterOutput(t, v, out, last+6)
	requireCriuStats(t, dir, 64<<20/4096)
}

// TestLeaveRunning: a dump with --leave-running lets the victim run on
// untouched; after killing it, a restore brings back the state of the dump
// moment, not the later one.
func TestLeaveRunning(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "counter"), "16")
	v.WaitOutput(lineRe(`^tick 3\b`), outputTimeout)
	dir := t.TempDir()
	dump(t, v.Pid, dir, "--leave-running")
	afterDump := lastNumber(t, v.Output(), counterTickRe)
	requireUndisturbed(t, v)
	requireCounterOutput(t, v, v.Output(), afterDump+3)

	v.Kill()
	if err := testutil.WaitPidGone(v.Pid, goneTimeout); err != nil {
		t.Fatal(err)
	}
	killedAt := lastNumber(t, v.Output(), counterTickRe)
	// Put the output file back as it was at the dump (the original victim
	// went on writing): the restored task resumes writing at the position
	// recorded in the images, and a restore may check the file's size.
	pos := dumpedFilePos(t, dir, v.OutputFile)
	if err := os.Truncate(v.OutputFile, pos); err != nil {
		t.Fatal(err)
	}
	before := v.Output()
	last := lastNumber(t, before, counterTickRe)
	if last > afterDump || last < 3 {
		t.Fatalf("output at the dump ends with tick %d; dump returned when tick %d was out", last, afterDump)
	}
	t.Logf("dumped at tick %d, original killed at tick %d", last, killedAt)

	restoreDetached(t, dir, v)
	waitRestored(t, v, lineRe(`^tick %d sum=[0-9a-f]{16} pid=%d$`, killedAt+2, v.Pid))
	out := v.Output()
	if !strings.HasPrefix(out, before) {
		t.Fatalf("restored output does not continue at the dumped position\nbefore:\n%s\nafter:\n%s",
			testutil.Tail(before, 5), testutil.Tail(out, 10))
	}
	requireCounterOutput(t, v, out, killedAt+3)
}

// TestSleeperRestore: dumped while blocked in clock_nanosleep; after restore
// the sleep is resumed or restarted (never cut short: the victim checks the
// elapsed time) and the loop goes on.
func TestSleeperRestore(t *testing.T) {
	testutil.RequireRoot(t)
	const ms = 700
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "sleeper"), strconv.Itoa(ms))
	v.WaitOutput(lineRe(`^before 1$`), outputTimeout)
	if err := testutil.WaitProcState(v.Pid, "S", time.Second); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	dumpKill(t, v, dir)
	if out := v.Output(); !strings.HasSuffix(out, "before 1\n") {
		t.Fatalf("dump did not land in the second sleep:\n%s", out)
	}
	restoreDetached(t, dir, v)
	m := waitRestored(t, v, lineRe(`^after 2 elapsed_ms=(\d+) pid=(\d+)$`))
	if m[2] != strconv.Itoa(v.Pid) {
		t.Errorf("restored sleeper reports pid %s, want %d", m[2], v.Pid)
	}
	out := v.Output()
	requireNoFail(t, out)
	requireConsecutive(t, "before", numbers(t, out, regexp.MustCompile(`(?m)^before (\d+)$`)), 0, 3)
	requireConsecutive(t, "after", numbers(t, out, regexp.MustCompile(`(?m)^after (\d+) `)), 0, 3)
	for _, e := range regexp.MustCompile(`(?m)^after (\d+) elapsed_ms=(\d+)`).FindAllStringSubmatch(out, -1) {
		if el, _ := strconv.Atoi(e[2]); el < ms-1 {
			t.Errorf("sleep %s lasted %d ms, want >= %d", e[1], el, ms)
		}
	}
}

// TestPipeReadRestore: dumped while blocked reading an empty pipe, with
// unread data in another pipe. After restore, a line written into the
// restored pipe (through /proc/PID/fd/<wfd>) is read, and the unread data
// is still there.
func TestPipeReadRestore(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "piperead"))
	m := v.WaitOutput(regexp.MustCompile(`ready rfd=(\d+) wfd=(\d+) pid=(\d+)`), outputTimeout)
	wfd := m[2]
	if err := testutil.WaitProcState(v.Pid, "S", time.Second); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	dumpKill(t, v, dir)
	restoreDetached(t, dir, v)

	send := func(line string) {
		t.Helper()
		p := fmt.Sprintf("/proc/%d/fd/%s", v.Pid, wfd)
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatalf("open the restored pipe %s: %v", p, err)
		}
		defer f.Close()
		if _, err := f.WriteString(line + "\n"); err != nil {
			t.Fatalf("write the restored pipe: %v", err)
		}
	}
	send("hello-after-restore")
	waitRestored(t, v, lineRe(`^got hello-after-restore\npending pending-data-123$`))
	send("second-line")
	waitRestored(t, v, lineRe(`^got second-line\npending pending-data-124$`))
	requireNoFail(t, v.Output())
}

// TestFpuRestore: dumps that land inside long asm loops whose state lives in
// x87, SSE/AVX (ymm0-15) and, where the CPU has it, AVX-512 (zmm0-31, k1-7)
// registers, several dump/restore cycles in a row on the same process. Each
// kind of loop runs in its own victim, so the test knows which state a dump
// caught; it reads the dumped instruction pointer from the core image and
// keeps cycling until two dumps have landed inside the asm loop.
func TestFpuRestore(t *testing.T) {
	testutil.RequireRoot(t)
	if !cpuHasFlag(t, "avx2") {
		t.Skip("CPU lacks AVX2")
	}
	t.Run("avx2", func(t *testing.T) { testFpuRestore(t, "avx2") })
	t.Run("avx512", func(t *testing.T) {
		if !cpuHasFlag(t, "avx512f") {
			t.Skip("CPU lacks AVX-512F")
		}
		testFpuRestore(t, "avx512")
	})
}

func testFpuRestore(t *testing.T, kind string) {
	const (
		wantInLoop = 2 // dumps that must land inside the asm loop
		maxCycles  = 6 // the loop takes ~90% of the time: 2 of 6 is near certain
	)
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "fpu"), "100", kind)
	m := v.WaitOutput(regexp.MustCompile(`fpu start kinds=\w+ avx2=1 avx512=\d .* loop2=0x([0-9a-f]+)-0x([0-9a-f]+) loop512=0x([0-9a-f]+)-0x([0-9a-f]+)`), outputTimeout)
	var lo, hi uint64
	if kind == "avx2" {
		lo, _ = strconv.ParseUint(m[1], 16, 64)
		hi, _ = strconv.ParseUint(m[2], 16, 64)
	} else {
		lo, _ = strconv.ParseUint(m[3], 16, 64)
		hi, _ = strconv.ParseUint(m[4], 16, 64)
	}
	fpuOK := regexp.MustCompile(`(?m)^fpu ok (\d+) kind=` + kind + `$`)
	v.WaitOutput(lineRe(`^fpu ok 1 `), outputTimeout)

	inLoop, cycles := 0, 0
	for ; inLoop < wantInLoop && cycles < maxCycles; cycles++ {
		// Dump while the victim computes rather than sleeps.
		if err := testutil.WaitProcState(v.Pid, "R", 2*time.Second); err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if cycles == 0 {
			dumpKill(t, v, dir)
		} else {
			dumpKillRestored(t, v.Pid, dir)
		}
		ip := coreIP(t, dir, v.Pid)
		where := "outside the asm loop"
		if ip >= lo && ip < hi {
			where = "inside the asm loop"
			inLoop++
		}
		last := lastNumber(t, v.Output(), fpuOK)
		t.Logf("cycle %d: dumped after round %d at ip %#x, %s", cycles, last, ip, where)
		restoreDetached(t, dir, v)
		// Two full rounds after the one the dump interrupted.
		waitRestored(t, v, lineRe(`^fpu ok %d `, last+3))
	}
	out := v.Output()
	requireNoFail(t, out)
	requireConsecutive(t, "fpu ok", numbers(t, out, fpuOK), 1, 1+3*cycles)
	if inLoop < wantInLoop {
		t.Errorf("only %d of %d dumps landed inside the %s asm loop", inLoop, cycles, kind)
	}
}

// TestFilesRestore: an O_APPEND log and a data file read line by line. After
// restore the victim reads the next data line (its fd position came back)
// and appends to the log without gaps or duplicates; the victim itself also
// checks O_APPEND, FD_CLOEXEC and the data position every tick.
func TestFilesRestore(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "app.log")
	dataPath := filepath.Join(dir, "data.txt")
	var data strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&data, "%06d\n", i)
	}
	if err := os.WriteFile(dataPath, []byte(data.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "files"), logPath, dataPath)
	v.WaitOutput(lineRe(`^tick 4 `), outputTimeout)
	imgDir := t.TempDir()
	dumpKill(t, v, imgDir)
	last := lastNumber(t, v.Output(), tickRe)
	restoreDetached(t, imgDir, v)
	waitRestored(t, v, lineRe(`^tick %d pid=%d$`, last+6, v.Pid))

	out := v.Output()
	requireNoFail(t, out)
	ticks := numbers(t, out, tickRe)
	requireConsecutive(t, "tick", ticks, 0, last+7)
	requireConsecutive(t, "data line", numbers(t, out, regexp.MustCompile(`(?m)^line (\d+) ok$`)), 0, last+7)
	logContent, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	logged := numbers(t, string(logContent), regexp.MustCompile(`(?m)^log (\d+)$`))
	requireConsecutive(t, "log", logged, 0, len(ticks))
	// The log line of a tick is written just before its tick line.
	if len(logged) > len(ticks)+1 {
		t.Errorf("log has %d lines for %d ticks", len(logged), len(ticks))
	}
	if n := strings.Count(string(logContent), "\n"); n != len(logged) {
		t.Errorf("log has %d lines, %d of them well-formed:\n%s", n, len(logged), testutil.Tail(string(logContent), 10))
	}
}

// TestRestoreExitCode: restore without -d waits for the restored process and
// exits with its exit status.
func TestRestoreExitCode(t *testing.T) {
	testutil.RequireRoot(t)
	const ticks = 15
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "exitcode"), strconv.Itoa(ticks))
	v.WaitOutput(lineRe(`^tick 3 `), outputTimeout)
	dir := t.TempDir()
	dumpKill(t, v, dir)
	log := filepath.Join(t.TempDir(), "restore.log")
	_, stderr, code := testutil.LazyrWith(t, testutil.LazyrOptions{Timeout: 30 * time.Second},
		"restore", "-D", dir, "-o", log, "-v", "4")
	testutil.KillAtCleanup(t, v.Pid)
	if code != 7 {
		t.Fatalf("lazyr restore exit %d, want the victim's 7\nstderr:\n%s\nlog:\n%s\noutput:\n%s",
			code, stderr, logTail(log), testutil.Tail(v.Output(), 10))
	}
	out := v.Output()
	requireNoFail(t, out)
	requireConsecutive(t, "tick", numbers(t, out, tickRe), 0, ticks)
	if !strings.HasSuffix(out, fmt.Sprintf("tick %d pid=%d\nexiting 7\n", ticks-1, v.Pid)) {
		t.Errorf("output does not end with the last tick and exit:\n%s", testutil.Tail(out, 5))
	}
	if err := testutil.WaitPidGone(v.Pid, goneTimeout); err != nil {
		t.Error(err)
	}
}

// requireCriuStats reads the dump's and the restore's statistics the way container tools do (go-criu's
// stats package, behind podman's --print-stats): the dump wrote pages, the restore took time, forking
// first, and filled at least minPages itself.
func requireCriuStats(t *testing.T, dir string, minPages uint64) {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ds, err := criustats.CriuGetDumpStats(d)
	if err != nil {
		t.Fatalf("dump statistics: %v", err)
	}
	if ds.GetPagesWritten() == 0 || ds.GetFrozenTime() == 0 {
		t.Errorf("dump statistics: %d pages written, frozen %d µs", ds.GetPagesWritten(), ds.GetFrozenTime())
	}
	rs, err := criustats.CriuGetRestoreStats(d)
	if err != nil {
		t.Fatalf("restore statistics: %v", err)
	}
	if rs.GetRestoreTime() == 0 || rs.GetForkingTime() > rs.GetRestoreTime() || rs.GetPagesRestored() < minPages {
		t.Errorf("restore statistics: forking %d µs, restore %d µs, %d pages restored (want at least %d)",
			rs.GetForkingTime(), rs.GetRestoreTime(), rs.GetPagesRestored(), minPages)
	}
}
