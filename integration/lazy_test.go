package integration

// Lazy restore (issue 3) end to end: real victims dumped by lazyr, restored
// with --lazy-pages and served by a `lazyr lazy-pages` daemon.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lazyr/lazyr/internal/testutil"
)

// TestLazyCounter256MiB: 256 MiB of patterned memory restored lazily. The
// first verification after the restore reads every page, so it meets the
// pages still missing; all of them must arrive with the right content. The
// daemon must then end by itself with status 0, having copied every lazy
// page of the images in (by fault or prefetch).
func TestLazyCounter256MiB(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "counter"), "256")
	v.WaitOutput(lineRe(`^tick 1\b`), outputTimeout)
	dir := t.TempDir()
	start := time.Now()
	dumpKill(t, v, dir)
	t.Logf("dump of 256 MiB + reap: %v", time.Since(start).Round(time.Millisecond))
	before := v.Output()
	last := lastNumber(t, before, counterTickRe)

	d := lzStartDaemon(t, dir, lzDaemonOptions{})
	took := lzRestore(t, dir, d, v.Pid)
	t.Logf("lazy restore -d: %v", took.Round(time.Millisecond))
	// Three full verifications of all 256 MiB after the restore.
	waitRestored(t, v, lineRe(`^tick %d sum=[0-9a-f]{16} pid=%d$`, last+3, v.Pid))
	out := v.Output()
	if !strings.HasPrefix(out, before) {
		t.Fatalf("restored output does not continue the dumped one\nbefore:\n%s\nafter:\n%s",
			testutil.Tail(before, 5), testutil.Tail(out, 10))
	}
	requireCounterOutput(t, v, out, last+4)

	st := d.requireFinished(t)
	lzRequireAllCopied(t, st, dir)
	requireCriuStats(t, dir, 1) // the stack page(s) in use; the daemon filled the rest
	if st.PagesDropped != 0 {
		t.Errorf("%d pages dropped: counter never unmaps nor discards memory", st.PagesDropped)
	}
	if lazy, _ := lzImagePages(t, dir); lazy < 256<<20/4096 {
		t.Errorf("images have %d lazy pages, fewer than the 256 MiB area alone", lazy)
	}
	if !testutil.PidAlive(v.Pid) {
		t.Fatalf("restored counter is gone after the daemon finished")
	}
	// The uffd is released once all pages are in: the process runs on by itself.
	waitRestored(t, v, lineRe(`^verified %d$`, lastNumber(t, v.Output(), counterTickRe)+2))
	requireCounterOutput(t, v, v.Output(), last+6)
}

// lzOpsLine matches the lines of lazyops ops: group 1 operation, 2 the
// resident pages of the part right before it, 3 the part's size in pages.
var lzOpsLine = regexp.MustCompile(`(?m)^(fork|mremap|dontneed|munmap) ok resident=(\d+) pages=(\d+)\b`)

// TestLazyMemoryOps: after a lazy restore the victim forks (the child reads
// memory that is still missing through its own uffd), mremaps a partly
// missing area and verifies it at its new address, drops a partly missing
// range with MADV_DONTNEED (it must read zeros, never the image's data) and
// munmaps a partly missing part (the rest must be intact). With
// --no-prefetch the victim's mincore counts prove the operations met missing
// pages, and the daemon must have seen the FORK, REMAP, REMOVE and UNMAP
// events.
func TestLazyMemoryOps(t *testing.T) {
	testutil.RequireRoot(t)
	for _, prefetch := range []bool{true, false} {
		name := "prefetch"
		if !prefetch {
			name = "no-prefetch"
		}
		t.Run(name, func(t *testing.T) { lzTestMemoryOps(t, prefetch) })
	}
}

func lzTestMemoryOps(t *testing.T, prefetch bool) {
	trigger := filepath.Join(t.TempDir(), "trigger")
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "lazyops"), "ops", "64", trigger)
	v.WaitOutput(regexp.MustCompile(`(?m)^ready pid=\d+ mode=ops pages=\d+`), outputTimeout)
	dir := t.TempDir()
	dumpKill(t, v, dir)

	d := lzStartDaemon(t, dir, lzDaemonOptions{noPrefetch: !prefetch})
	lzRestore(t, dir, d, v.Pid)
	lzTouch(t, trigger)
	m := waitRestored(t, v, regexp.MustCompile(`(?m)^done pages=(\d+)$`))
	out := v.Output()
	requireNoFail(t, out)
	if !regexp.MustCompile(`(?m)^fork child pid=\d+ verified pages=\d+$`).MatchString(out) {
		t.Errorf("no line from the forked child:\n%s", testutil.Tail(out, 10))
	}
	ops := lzOpsLine.FindAllStringSubmatch(out, -1)
	var got []string
	for _, o := range ops {
		got = append(got, o[1])
	}
	if strings.Join(got, ",") != "fork,mremap,dontneed,munmap" {
		t.Fatalf("operations done: %v\n%s", got, testutil.Tail(out, 10))
	}
	q := atoi(t, ops[0][3])
	t.Logf("parts of %d pages, %s pages verified at the end; %s", q, m[1],
		strings.Join(regexp.MustCompile(`(?m)^(triggered|\w+ ok) resident=\d+`).FindAllString(out, -1), ", "))

	st := d.requireFinished(t)
	if st.Processes != 1 || st.Forks < 1 {
		t.Errorf("daemon served %d processes and %d forks, want 1 and at least 1", st.Processes, st.Forks)
	}
	if prefetch {
		return
	}
	// Nothing but faults filled memory: the area was all missing when the
	// victim woke up, and each operation met missing pages.
	if tr := regexp.MustCompile(`(?m)^triggered resident=(\d+)$`).FindStringSubmatch(out); tr == nil || tr[1] != "0" {
		t.Errorf("with --no-prefetch the area was partly resident before the victim touched it: %v", tr)
	}
	resident := map[string]int{}
	for _, o := range ops {
		resident[o[1]] = atoi(t, o[2])
		if r := atoi(t, o[2]); r >= q {
			t.Errorf("%s met a part with all %d pages resident: no missing page was involved", o[1], r)
		}
	}
	if st.Remaps < 1 || st.Removes < 1 || st.Unmaps < 1 {
		t.Errorf("daemon saw remaps %d, removes %d, unmaps %d; want each >= 1", st.Remaps, st.Removes, st.Unmaps)
	}
	// The missing pages of the dropped and of the unmapped part must have
	// been taken off the daemon's list, not copied in later.
	if want := uint64(2*q - resident["dontneed"] - resident["munmap"]); st.PagesDropped < want {
		t.Errorf("pages dropped %d, want at least %d (the missing pages of the MADV_DONTNEED and munmap parts)", st.PagesDropped, want)
	}
	if st.ZeroPages < uint64(q) {
		t.Errorf("zero pages %d, want at least %d (every page of the MADV_DONTNEED part read back)", st.ZeroPages, q)
	}
}

// TestLazyDaemonKilled: the daemon is SIGKILLed while a 256 MiB victim
// (no prefetch) is still reading its memory slowly. The victim must not run
// on with missing memory: the guard kills it within a few seconds, and it
// never prints a FAIL line (which reading a zero page would cause) nor
// finishes.
func TestLazyDaemonKilled(t *testing.T) {
	testutil.RequireRoot(t)
	trigger := filepath.Join(t.TempDir(), "trigger")
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "lazyops"), "slow", "256", trigger)
	v.WaitOutput(regexp.MustCompile(`(?m)^ready pid=\d+ mode=slow pages=\d+`), outputTimeout)
	dir := t.TempDir()
	dumpKill(t, v, dir)

	d := lzStartDaemon(t, dir, lzDaemonOptions{noPrefetch: true, daemonize: true})
	guards := lzChildren(d.pid)
	lzRestore(t, dir, d, v.Pid)
	lzTouch(t, trigger)
	waitRestored(t, v, regexp.MustCompile(`(?m)^read 4096$`))

	d.kill(t)
	killed := time.Now()
	const deathTimeout = 5 * time.Second
	for testutil.PidAlive(v.Pid) {
		if time.Since(killed) > deathTimeout {
			t.Fatalf("restored victim %d still running %v after the daemon was killed\n%s",
				v.Pid, deathTimeout, testutil.Tail(v.Output(), 5))
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("victim dead %v after the daemon was killed", time.Since(killed).Round(time.Millisecond))
	out := v.Output()
	requireNoFail(t, out)
	if strings.Contains(out, "done pages=") {
		t.Fatalf("victim finished reading although its memory server was killed:\n%s", testutil.Tail(out, 5))
	}
	reads := numbers(t, out, regexp.MustCompile(`(?m)^read (\d+)$`))
	t.Logf("victim read %d of 65536 pages", reads[len(reads)-1])
	if len(guards) == 0 {
		t.Errorf("the daemon had no child (its guard) when it started")
	}
	for _, g := range guards {
		deadline := time.Now().Add(goneTimeout)
		for testutil.PidAlive(g) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if testutil.PidAlive(g) {
			t.Errorf("guard %d of the killed daemon still running %v later", g, goneTimeout)
			testutil.KillAtCleanup(t, g)
		}
	}
}

// lzChildren lists the children of pid's threads.
func lzChildren(pid int) []int {
	var kids []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		if err != nil {
			continue
		}
		for _, c := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(c); err == nil {
				kids = append(kids, n)
			}
		}
	}
	return kids
}

// lzForestLine matches forest's lines: group 1 process index, 2 pid, 3 ppid,
// 4 tick.
var lzForestLine = regexp.MustCompile(`(?m)^proc (\d+) pid=(\d+) ppid=(\d+) tick (\d+) verified$`)

// TestLazyForest: a tree of 20 processes (a parent and 19 children, each
// with its own 2 MiB of patterned memory it verifies every tick) restored
// lazily by one restore and served by one daemon (started with --daemon):
// every process continues its ticks with all its memory intact. With
// prefetch the daemon copies every lazy page of all 20 and finishes; without,
// the 20 processes fault their memory in concurrently, and the daemon
// finishes once they are killed.
func TestLazyForest(t *testing.T) {
	testutil.RequireRoot(t)
	for _, prefetch := range []bool{true, false} {
		name := "prefetch"
		if !prefetch {
			name = "no-prefetch"
		}
		t.Run(name, func(t *testing.T) { lzTestForest(t, prefetch) })
	}
}

func lzTestForest(t *testing.T, prefetch bool) {
	const children, mib = 19, 2
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "forest"), strconv.Itoa(children), strconv.Itoa(mib))
	keys := lzKeys(children + 1)
	lzWaitForest(t, v.Pid, v.OutputFile, keys, 1)
	tree := treeSnapshot(t, v.Pid)
	if len(tree) != children+1 {
		t.Fatalf("forest has %d processes, want %d", len(tree), children+1)
	}
	dir := t.TempDir()
	took := treeDumpKill(t, v, dir, tree)
	t.Logf("dump of %d processes: %v", len(tree), took.Round(time.Millisecond))
	before := v.Output()
	last := 0
	for _, ns := range lzGroupNumbers(t, before, lzForestLine, 1, 4) {
		last = max(last, ns[len(ns)-1])
	}

	d := lzStartDaemon(t, dir, lzDaemonOptions{daemonize: true, noPrefetch: !prefetch})
	took = lzRestore(t, dir, d, v.Pid)
	treeKillAtCleanup(t, tree)
	t.Logf("lazy restore -d of %d processes: %v", len(tree), took.Round(time.Millisecond))
	treeRequireSame(t, tree, v.Pid)
	lzWaitForest(t, v.Pid, v.OutputFile, keys, last+3)

	out := v.Output()
	if !strings.HasPrefix(out, before) {
		t.Fatalf("restored output does not continue the dumped one")
	}
	requireNoFail(t, out)
	lzRequireSteps(t, "forest tick of proc", lzGroupNumbers(t, out, lzForestLine, 1, 4), keys,
		func(string) int { return 0 }, 1, last+4)
	lzRequireParent(t, out, lzForestLine, 3, v.Pid)
	for k, p := range lzSameValue(t, "pid", out, lzForestLine, 2) {
		if _, ok := tree[atoi(t, p)]; !ok || (k == "0") != (atoi(t, p) == v.Pid) {
			t.Errorf("proc %s printed with pid %s, not its dumped pid", k, p)
		}
	}
	if prefetch {
		// Everything is in: the processes run on without the daemon.
		st := lzFinish(t, d, tree)
		if st.Processes != children+1 {
			t.Errorf("daemon served %d processes, want %d", st.Processes, children+1)
		}
		for _, pid := range treePids(tree) {
			if !testutil.PidAlive(pid) {
				t.Errorf("forest process %d is gone after the daemon finished", pid)
			}
		}
		lzWaitForest(t, v.Pid, v.OutputFile, keys, last+5)
		requireNoFail(t, v.Output())
		return
	}
	st := lzFinish(t, d, tree)
	if want := uint64((children + 1) * mib << 20 / 4096); st.PagesByFault < want {
		t.Errorf("%d pages came in by faults, want at least the %d of the 20 verified areas", st.PagesByFault, want)
	}
}

// lzWaitForest waits until every forest process printed tick >= n.
func lzWaitForest(t *testing.T, pid int, outFile string, keys []string, n int) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^proc (\d+) pid=\d+ ppid=\d+ tick (\d+) verified$`)
	lzWaitAll(t, pid, outFile, re, keys, n)
}

// TestLazyRestoreWithoutDaemon: restore --lazy-pages with no daemon listening
// in the work dir fails with a message that says so, before it creates any
// process: the dumped PID is never taken, not even for a moment.
func TestLazyRestoreWithoutDaemon(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "counter"), "4")
	v.WaitOutput(lineRe(`^tick 1\b`), outputTimeout)
	dir := t.TempDir()
	dumpKill(t, v, dir)
	before := v.Output()

	// Watch the PID during the whole restore: a process created and killed
	// again would exist at least until it is reaped.
	var seen atomic.Bool
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			if testutil.PidExists(v.Pid) {
				seen.Store(true)
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Microsecond):
			}
		}
	}()
	work := t.TempDir()
	log := filepath.Join(t.TempDir(), "restore.log")
	_, stderr, code := testutil.Lazyr(t, "restore", "-D", dir, "-W", work, "--lazy-pages", "-d", "-o", log, "-v", "4")
	close(stop)
	<-watched
	if code == 0 {
		testutil.KillAtCleanup(t, v.Pid)
		t.Fatalf("restore --lazy-pages without a daemon succeeded")
	}
	if seen.Load() || testutil.PidExists(v.Pid) {
		requireNoProcess(t, v.Pid)
		t.Fatalf("pid %d existed during the failed restore: a process was created before the daemon was found", v.Pid)
	}
	for _, want := range []string{"lazy-pages", work} {
		if !strings.Contains(stderr, want) {
			t.Errorf("error does not mention %q:\n%s", want, stderr)
		}
	}
	if !regexp.MustCompile(`(?i)no lazy-pages daemon|not running|no such file|connection refused`).MatchString(stderr) {
		t.Errorf("error does not say the daemon is missing:\n%s", stderr)
	}
	if out := v.Output(); out != before {
		t.Errorf("output file changed by the failed restore:\n%s", testutil.Tail(out, 5))
	}
	t.Logf("error: %s", strings.TrimSpace(stderr))
}

// TestLazyRestoreOtherDump: a lazy restore of one dump against a daemon that serves another (two dumps of
// the same program: the same layout, other memory) is refused before any process is created, with a
// message that says so; the daemon goes on and serves a restore of its own dump.
func TestLazyRestoreOtherDump(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildVictim(t, "counter")
	va := testutil.StartVictim(t, bin, "4")
	vb := testutil.StartVictim(t, bin, "4")
	va.WaitOutput(lineRe(`^tick 1\b`), outputTimeout)
	vb.WaitOutput(lineRe(`^tick 1\b`), outputTimeout)
	dirA, dirB := t.TempDir(), t.TempDir()
	dumpKill(t, va, dirA)
	dumpKill(t, vb, dirB)
	last := lastNumber(t, va.Output(), counterTickRe)

	d := lzStartDaemon(t, dirA, lzDaemonOptions{})
	_, stderr, code := testutil.Lazyr(t, "restore", "-D", dirB, "-W", d.work, "--lazy-pages", "-d")
	if code == 0 {
		testutil.KillAtCleanup(t, vb.Pid)
		t.Fatalf("restore of dump B against the daemon of dump A succeeded")
	}
	if !strings.Contains(stderr, "another dump") || !strings.Contains(stderr, dirA) {
		t.Errorf("error does not say the daemon serves another dump (%s):\n%s", dirA, stderr)
	}
	requireNoProcess(t, vb.Pid)
	t.Logf("error: %s", strings.TrimSpace(stderr))

	lzRestore(t, dirA, d, va.Pid)
	waitRestored(t, va, lineRe(`^tick %d sum=[0-9a-f]{16} pid=%d$`, last+2, va.Pid))
	requireCounterOutput(t, va, va.Output(), last+3)
}
