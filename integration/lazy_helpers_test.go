package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/testutil"
	"github.com/lazyr/lazyr/lazypages"
)

// Helpers for lazy restores (a lazy-pages daemon per test) and for process
// trees (every process of a dumped tree followed through /proc).

const (
	// lzReadyTimeout bounds the wait for a daemon to listen.
	lzReadyTimeout = 10 * time.Second
	// lzFinishTimeout bounds the wait for a daemon to finish once every
	// page can come in (prefetch on) or every process is gone.
	lzFinishTimeout = 20 * time.Second
)

// lzDaemonOptions choose how a lazy-pages daemon runs.
type lzDaemonOptions struct {
	// noPrefetch passes --no-prefetch: only faults are served.
	noPrefetch bool
	// daemonize passes --daemon: lazyr forks the daemon off and returns
	// once it listens. The daemon is then not a child of the test, so its
	// exit status cannot be read; a clean end shows in its log. Without it
	// the daemon runs as a child of the test (same code, no re-exec), which
	// reports readiness through --status-fd and whose exit status is known.
	daemonize bool
}

// lzDaemon is one `lazyr lazy-pages` serving the restores of one test.
type lzDaemon struct {
	imgDir, work, log, pidfile string
	pid                        int
	pidfd                      int
	opts                       lzDaemonOptions

	cmd  *exec.Cmd     // the child, unless daemonized
	done chan struct{} // closed once the daemon has exited (and, if a child, was reaped)

	exitCode int // of the child; -1 if killed by a signal
}

// lzStartDaemon starts `lazyr lazy-pages -D imgDir -W <fresh work dir>`
// and returns once it listens. The daemon is SIGKILLed at test cleanup if it
// is still running then.
func lzStartDaemon(t *testing.T, imgDir string, o lzDaemonOptions) *lzDaemon {
	t.Helper()
	work := t.TempDir()
	d := &lzDaemon{
		imgDir: imgDir, work: work, opts: o,
		log:     filepath.Join(work, "lazy-pages.log"),
		pidfile: filepath.Join(work, "lazy-pages.pid"),
		pidfd:   -1,
		done:    make(chan struct{}),
	}
	args := []string{"lazy-pages", "-D", imgDir, "-W", work, "--pidfile", d.pidfile, "-o", d.log, "-v", "4"}
	if o.noPrefetch {
		args = append(args, "--no-prefetch")
	}
	if o.daemonize {
		_, stderr, code := testutil.Lazyr(t, append(args, "--daemon")...)
		if code != 0 {
			t.Fatalf("lazyr lazy-pages --daemon: exit %d\nstderr:\n%s\nlog:\n%s", code, stderr, logTail(d.log))
		}
		b, err := os.ReadFile(d.pidfile)
		if err != nil {
			t.Fatalf("lazy-pages pidfile: %v", err)
		}
		d.pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("lazy-pages pidfile %q: %v", b, err)
		}
		d.pidfd, err = unix.PidfdOpen(d.pid, 0)
		if err != nil {
			t.Fatalf("pidfd_open(daemon %d): %v", d.pid, err)
		}
		go func() {
			// A pidfd turns readable once the process has exited.
			fds := []unix.PollFd{{Fd: int32(d.pidfd), Events: unix.POLLIN}}
			for {
				if n, err := unix.Poll(fds, -1); n > 0 || (err != nil && !errors.Is(err, unix.EINTR)) {
					break
				}
			}
			close(d.done)
		}()
	} else {
		d.startChild(t, args)
	}
	t.Cleanup(func() {
		d.kill(t)
		if d.pidfd >= 0 {
			unix.Close(d.pidfd)
		}
	})
	if _, err := os.Stat(lazypages.SocketPath(work)); err != nil {
		t.Fatalf("daemon reported ready but its socket is missing: %v", err)
	}
	return d
}

// startChild runs the daemon as a child of the test and waits for the zero
// byte it writes to --status-fd once it listens.
func (d *lzDaemon) startChild(t *testing.T, args []string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	stderr, err := os.Create(filepath.Join(d.work, "lazy-pages.stderr"))
	if err != nil {
		w.Close()
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd := exec.Command(testutil.BuildLazyr(t), append(args, "--status-fd", "3")...)
	cmd.Dir = d.work
	cmd.Stderr = stderr
	cmd.ExtraFiles = []*os.File{w}
	// Its own session, as --daemon would give it: the test's signals and
	// process group are none of its business.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		t.Fatalf("start lazy-pages: %v", err)
	}
	d.cmd, d.pid = cmd, cmd.Process.Pid
	go func() {
		_ = cmd.Wait()
		d.exitCode = cmd.ProcessState.ExitCode()
		close(d.done)
	}()
	if err := r.SetReadDeadline(time.Now().Add(lzReadyTimeout)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if n, err := r.Read(b); n != 1 || b[0] != 0 {
		d.kill(t)
		t.Fatalf("lazy-pages did not report ready (%v)\nstderr:\n%s\nlog:\n%s", err,
			testutil.ReadOutput(stderr.Name()), logTail(d.log))
	}
	if b, err := os.ReadFile(d.pidfile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(d.pid) {
		t.Fatalf("lazy-pages pidfile holds %q (%v), want %d", b, err, d.pid)
	}
}

// exited reports whether the daemon has exited.
func (d *lzDaemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// kill SIGKILLs the daemon if it still runs and waits until it is gone.
func (d *lzDaemon) kill(t *testing.T) {
	t.Helper()
	if d.exited() {
		return
	}
	var err error
	if d.cmd != nil {
		err = d.cmd.Process.Kill()
	} else {
		err = unix.PidfdSendSignal(d.pidfd, unix.SIGKILL, nil, 0)
	}
	if err != nil && !errors.Is(err, os.ErrProcessDone) && !errors.Is(err, unix.ESRCH) {
		t.Errorf("kill lazy-pages %d: %v", d.pid, err)
	}
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		t.Errorf("lazy-pages %d still there 10 s after SIGKILL", d.pid)
	}
}

// requireFinished waits for the daemon to end by itself and checks that it
// ended cleanly: exit status 0 (a child) or a "lazy-pages finished" line and
// no error in its log (daemonized). It returns the statistics it left in the
// work dir.
func (d *lzDaemon) requireFinished(t *testing.T) *lazypages.Stats {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(lzFinishTimeout):
		t.Fatalf("lazy-pages %d still running %v after the restore; log:\n%s", d.pid, lzFinishTimeout, logTail(d.log))
	}
	log := testutil.ReadOutput(d.log)
	if d.cmd != nil && d.exitCode != 0 {
		t.Fatalf("lazy-pages exited with %d; stderr:\n%s\nlog:\n%s", d.exitCode,
			testutil.ReadOutput(filepath.Join(d.work, "lazy-pages.stderr")), logTail(d.log))
	}
	if !strings.Contains(log, "lazy-pages finished") {
		t.Fatalf("lazy-pages log has no \"lazy-pages finished\":\n%s", logTail(d.log))
	}
	if l := regexp.MustCompile(`(?m)^.*\tERROR\t.*$`).FindString(log); l != "" {
		t.Fatalf("lazy-pages logged an error: %s\n%s", l, logTail(d.log))
	}
	return d.stats(t)
}

// stats reads WORK/lazy-pages-stats.json.
func (d *lzDaemon) stats(t *testing.T) *lazypages.Stats {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.work, "lazy-pages-stats.json"))
	if err != nil {
		t.Fatalf("daemon statistics: %v", err)
	}
	var st lazypages.Stats
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("lazy-pages-stats.json: %v\n%s", err, b)
	}
	t.Logf("lazy-pages stats: %s", bytes.Join(bytes.Fields(b), nil))
	return &st
}

// lzRestore runs `lazyr restore -D dir -W <daemon's work dir> --lazy-pages
// -d --pidfile F` and checks that the pidfile names root. Every process of
// the restored tree must be registered with treeKillAtCleanup by the caller.
func lzRestore(t *testing.T, dir string, d *lzDaemon, root int) time.Duration {
	t.Helper()
	tmp := t.TempDir()
	pidfile := filepath.Join(tmp, "restore.pid")
	log := filepath.Join(tmp, "restore.log")
	start := time.Now()
	_, stderr, code := testutil.Lazyr(t, "restore", "-D", dir, "-W", d.work, "--lazy-pages", "-d",
		"--pidfile", pidfile, "-o", log, "-v", "4")
	took := time.Since(start)
	testutil.KillAtCleanup(t, root)
	if code != 0 {
		t.Fatalf("lazyr restore --lazy-pages -d: exit %d\nstderr:\n%s\nlog:\n%s\ndaemon log:\n%s",
			code, stderr, logTail(log), logTail(d.log))
	}
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatalf("pidfile: %v", err)
	}
	if got := strings.TrimSpace(string(b)); got != strconv.Itoa(root) {
		t.Fatalf("pidfile says %q, want the dumped pid %d", got, root)
	}
	return took
}

// lzImagePages sums the pages the images flag PE_LAZY over every
// process of the dump: what a lazy restore leaves to the daemon.
func lzImagePages(t *testing.T, dir string) (pages uint64, procs int) {
	t.Helper()
	d, err := images.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s, err := images.Summarize(d)
	if err != nil {
		t.Fatalf("summarize %s: %v", dir, err)
	}
	for _, p := range s.Processes {
		if p.LazyPages > 0 {
			pages += p.LazyPages
			procs++
		}
	}
	return pages, procs
}

// lzRequireAllCopied checks the statistics of a daemon that served a
// restore of dir to the end with nothing forking: it registered procs
// processes, none of them went away early, and every lazy page of the
// images was copied in (by fault or prefetch) or dropped by the process
// itself (munmap, MADV_DONTNEED) before it was needed.
func lzRequireAllCopied(t *testing.T, st *lazypages.Stats, dir string) {
	t.Helper()
	lazy, procs := lzImagePages(t, dir)
	copied := st.PagesByFault + st.PagesByPrefetch
	if st.Processes != procs {
		t.Errorf("daemon served %d processes, the images have %d with lazy pages", st.Processes, procs)
	}
	if st.ProcessesGone != 0 {
		t.Errorf("%d processes went away before all their pages were in", st.ProcessesGone)
	}
	if copied+st.PagesDropped != lazy {
		t.Errorf("pages copied %d (fault %d + prefetch %d) + dropped %d = %d, images have %d lazy pages",
			copied, st.PagesByFault, st.PagesByPrefetch, st.PagesDropped, copied+st.PagesDropped, lazy)
	}
	if st.BytesCopied != copied*images.PageSize {
		t.Errorf("bytes copied %d, want %d pages * 4096", st.BytesCopied, copied)
	}
	if st.AllPagesIn <= 0 {
		t.Errorf("all_pages_in is %v: the daemon never saw every page in", st.AllPagesIn)
	}
}

// treeProc is what /proc says about one process of a tree.
type treeProc struct {
	pid, ppid, pgid, sid int
	state                byte
	tids                 []int
}

func (p treeProc) String() string {
	return fmt.Sprintf("pid %d ppid %d pgid %d sid %d state %c threads %v", p.pid, p.ppid, p.pgid, p.sid, p.state, p.tids)
}

// treeReadProc reads /proc/PID/stat and the thread list.
func treeReadProc(pid int) (treeProc, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return treeProc{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return treeProc{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	// After "(comm) ": state ppid pgrp session ...
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 4 {
		return treeProc{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	p := treeProc{pid: pid, state: f[0][0]}
	for j, dst := range []*int{&p.ppid, &p.pgid, &p.sid} {
		if *dst, err = strconv.Atoi(f[1+j]); err != nil {
			return treeProc{}, fmt.Errorf("/proc/%d/stat field %d: %w", pid, 2+j, err)
		}
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return treeProc{}, err
	}
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			p.tids = append(p.tids, tid)
		}
	}
	sort.Ints(p.tids)
	return p, nil
}

// treeSnapshot returns root and all its descendants (through every thread's
// /proc/PID/task/TID/children), keyed by PID.
func treeSnapshot(t *testing.T, root int) map[int]treeProc {
	t.Helper()
	tree := map[int]treeProc{}
	todo := []int{root}
	for len(todo) > 0 {
		pid := todo[0]
		todo = todo[1:]
		p, err := treeReadProc(pid)
		if err != nil {
			t.Fatalf("process %d of the tree of %d: %v", pid, root, err)
		}
		tree[pid] = p
		for _, tid := range p.tids {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, tid))
			if err != nil {
				continue // the thread exited meanwhile
			}
			for _, c := range strings.Fields(string(b)) {
				if cp, err := strconv.Atoi(c); err == nil {
					if _, seen := tree[cp]; !seen {
						todo = append(todo, cp)
					}
				}
			}
		}
	}
	return tree
}

// treePids returns the PIDs of tree in ascending order.
func treePids(tree map[int]treeProc) []int {
	pids := make([]int, 0, len(tree))
	for pid := range tree {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	return pids
}

// treeRequireSame checks that the restored tree has the dumped one's
// processes with the same parents, process groups, sessions and thread IDs,
// and that zombies came back as zombies and running processes as running.
func treeRequireSame(t *testing.T, before map[int]treeProc, root int) {
	t.Helper()
	after := treeSnapshot(t, root)
	for _, pid := range treePids(before) {
		b := before[pid]
		a, ok := after[pid]
		if !ok {
			t.Errorf("process %d (%v) is not in the restored tree", pid, b)
			continue
		}
		if pid != root && a.ppid != b.ppid {
			t.Errorf("process %d: parent %d, dumped with parent %d", pid, a.ppid, b.ppid)
		}
		if a.pgid != b.pgid || a.sid != b.sid {
			t.Errorf("process %d: pgid %d sid %d, dumped with pgid %d sid %d", pid, a.pgid, a.sid, b.pgid, b.sid)
		}
		if (a.state == 'Z') != (b.state == 'Z') {
			t.Errorf("process %d: state %c, dumped in state %c", pid, a.state, b.state)
		}
		if b.state != 'Z' && fmt.Sprint(a.tids) != fmt.Sprint(b.tids) {
			t.Errorf("process %d: threads %v, dumped with %v", pid, a.tids, b.tids)
		}
	}
	for pid, a := range after {
		if _, ok := before[pid]; !ok {
			t.Errorf("restored tree has a process that was not dumped: %v", a)
		}
	}
}

// treeKillAtCleanup kills every process of a restored tree when the test
// ends (KillAtCleanup holds a pidfd, so a reused PID is never hit).
func treeKillAtCleanup(t *testing.T, tree map[int]treeProc) {
	t.Helper()
	for _, pid := range treePids(tree) {
		testutil.KillAtCleanup(t, pid)
	}
}

// treeDumpKill dumps the tree of the victim v (a child of the test) and
// waits until every one of its processes is gone, zombies included (init
// reaps the orphans slowly), so that a restore finds every PID free.
func treeDumpKill(t *testing.T, v *testutil.Victim, dir string, tree map[int]treeProc) time.Duration {
	t.Helper()
	start := time.Now()
	dump(t, v.Pid, dir)
	took := time.Since(start)
	if _, err := v.Wait(goneTimeout); err != nil {
		t.Fatalf("after dump: %v", err)
	}
	for _, pid := range treePids(tree) {
		if err := testutil.WaitPidGone(pid, goneTimeout); err != nil {
			t.Fatalf("after dump: %v", err)
		}
	}
	return took
}

// treeMode says how a tree test restores: eagerly, lazily with prefetch
// (the daemon must then copy every page and finish by itself), or lazily
// with --no-prefetch (every page the victims touch comes through a fault;
// the daemon finishes once the test kills the tree).
type treeMode struct {
	name       string
	lazy       bool
	noPrefetch bool
}

var treeModes = []treeMode{{"eager", false, false}, {"lazy", true, false}, {"lazy-faults", true, true}}

// treeDumpRestore dumps the whole tree of v (killing it), restores it as
// mode says, checks that the same tree came back (treeRequireSame) and
// returns the daemon of a lazy restore (nil for an eager one). Every
// restored process is killed at cleanup.
func treeDumpRestore(t *testing.T, v *testutil.Victim, mode treeMode) (map[int]treeProc, *lzDaemon) {
	t.Helper()
	tree := treeSnapshot(t, v.Pid)
	dir := t.TempDir()
	took := treeDumpKill(t, v, dir, tree)
	t.Logf("dump of %d processes, %d threads: %v", len(tree), treeThreadCount(tree), took.Round(time.Millisecond))
	var d *lzDaemon
	if mode.lazy {
		d = lzStartDaemon(t, dir, lzDaemonOptions{noPrefetch: mode.noPrefetch})
		took = lzRestore(t, dir, d, v.Pid)
	} else {
		start := time.Now()
		restoreDetached(t, dir, v)
		took = time.Since(start)
	}
	treeKillAtCleanup(t, tree)
	t.Logf("%s restore -d: %v", mode.name, took.Round(time.Millisecond))
	treeRequireSame(t, tree, v.Pid)
	return tree, d
}

// lzFinish ends a test's lazy restore (nothing to do for d == nil, an eager
// one). With prefetch the daemon must finish by itself, every lazy page
// copied (lzRequireAllCopied). Without, the tree is killed first (pages the
// victims never touched stay missing for good): the daemon must then see
// every process go and end cleanly, having served faults only.
func lzFinish(t *testing.T, d *lzDaemon, tree map[int]treeProc) *lazypages.Stats {
	t.Helper()
	if d == nil {
		return nil
	}
	if !d.opts.noPrefetch {
		st := d.requireFinished(t)
		lzRequireAllCopied(t, st, d.imgDir)
		return st
	}
	treeKill(t, tree)
	st := d.requireFinished(t)
	_, procs := lzImagePages(t, d.imgDir)
	if st.Processes != procs || st.ProcessesGone != procs {
		t.Errorf("daemon served %d processes, %d of them gone; want all %d with lazy pages, all gone", st.Processes, st.ProcessesGone, procs)
	}
	if st.PagesByPrefetch != 0 {
		t.Errorf("%d pages prefetched with --no-prefetch", st.PagesByPrefetch)
	}
	if st.Faults == 0 || st.PagesByFault == 0 {
		t.Errorf("no page came in by a fault (faults %d, pages %d)", st.Faults, st.PagesByFault)
	}
	return st
}

// treeKill SIGKILLs every process of a restored tree now.
func treeKill(t *testing.T, tree map[int]treeProc) {
	t.Helper()
	for _, pid := range treePids(tree) {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			if !errors.Is(err, unix.ESRCH) {
				t.Errorf("pidfd_open(%d): %v", pid, err)
			}
			continue
		}
		if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			t.Errorf("kill %d: %v", pid, err)
		}
		unix.Close(fd)
	}
}

func treeThreadCount(tree map[int]treeProc) int {
	n := 0
	for _, p := range tree {
		n += len(p.tids)
	}
	return n
}

// lzGroupNumbers groups the matches of re in out by submatch keyGroup (a
// thread or process index) and returns submatch numGroup of each, as ints,
// in output order.
func lzGroupNumbers(t *testing.T, out string, re *regexp.Regexp, keyGroup, numGroup int) map[string][]int {
	t.Helper()
	m := map[string][]int{}
	for _, s := range re.FindAllStringSubmatch(out, -1) {
		n, err := strconv.Atoi(s[numGroup])
		if err != nil {
			t.Fatalf("bad number in %q: %v", s[0], err)
		}
		m[s[keyGroup]] = append(m[s[keyGroup]], n)
	}
	return m
}

// lzWaitAll waits until, for every key, the last number of re's
// matches in the output of the restored process pid (lzGroupNumbers with
// key group 1, number group 2) is at least atLeast.
func lzWaitAll(t *testing.T, pid int, outFile string, re *regexp.Regexp, keys []string, atLeast int) {
	t.Helper()
	deadline := time.Now().Add(outputTimeout)
	for {
		out := testutil.ReadOutput(outFile)
		if f := testutil.FailLine.FindString(out); f != "" {
			t.Fatalf("victim reported: %s\n%s", f, testutil.Tail(out, 20))
		}
		got := lzGroupNumbers(t, out, re, 1, 2)
		missing := ""
		for _, k := range keys {
			if ns := got[k]; len(ns) == 0 || ns[len(ns)-1] < atLeast {
				missing = k
				break
			}
		}
		if missing == "" {
			return
		}
		if !testutil.PidAlive(pid) {
			t.Fatalf("pid %d is gone while waiting for %q %s to reach %d\n%s", pid, re, missing, atLeast, testutil.Tail(out, 20))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q %s did not reach %d within %v\n%s", re, missing, atLeast, outputTimeout, testutil.Tail(out, 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lzSameValue checks that submatch valGroup of re's matches is the same
// in every line of a key (submatch 1): a TID, a PID, a TLS value.
func lzSameValue(t *testing.T, what, out string, re *regexp.Regexp, valGroup int) map[string]string {
	t.Helper()
	vals := map[string]string{}
	for _, s := range re.FindAllStringSubmatch(out, -1) {
		if v, ok := vals[s[1]]; ok && v != s[valGroup] {
			t.Errorf("%s of %s changed from %s to %s (line %q)", what, s[1], v, s[valGroup], s[0])
			continue
		}
		vals[s[1]] = s[valGroup]
	}
	return vals
}

// lzRequireSteps checks that for every key the numbers go up by step
// with no gap and no repeat, starting at first(key), at least atLeast of
// them.
func lzRequireSteps(t *testing.T, what string, got map[string][]int, keys []string, first func(string) int, step, atLeast int) {
	t.Helper()
	for _, k := range keys {
		ns := got[k]
		if len(ns) < atLeast {
			t.Errorf("%s %s: %d lines, want at least %d", what, k, len(ns), atLeast)
		}
		for i, n := range ns {
			if want := first(k) + i*step; n != want {
				t.Errorf("%s %s: line %d is %d, want %d (sequence %v)", what, k, i, n, want, around(ns, i))
				break
			}
		}
	}
}

// lzKeys returns "0", "1", ..., n-1.
func lzKeys(n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = strconv.Itoa(i)
	}
	return ks
}

// lzTouch creates the trigger file a victim polls for.
func lzTouch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("go\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// lzRequireParent checks that every line of re (key in submatch 1) but
// those of key "0", the root, names root as the parent in submatch
// ppidGroup. The root's own parent is whoever restored it.
func lzRequireParent(t *testing.T, out string, re *regexp.Regexp, ppidGroup, root int) {
	t.Helper()
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		if m[1] != "0" && m[ppidGroup] != strconv.Itoa(root) {
			t.Errorf("%q: parent is not the root %d", m[0], root)
			return
		}
	}
}
