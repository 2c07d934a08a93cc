package integration

// Process trees and multi-threaded processes (issue 5), each restored
// eagerly, lazily with prefetch and lazily with faults only (treeModes),
// checked through what the victims print: every thread and process
// continues where it was, with the same PID/TID, parent, process group and
// session.

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/lazyr/lazyr/internal/testutil"
)

var (
	treeMTWorkerLine = regexp.MustCompile(`(?m)^worker (\d+) tid=(\d+) tick (\d+) tls=([0-9a-f]{16})$`)
	treeMTMainLine   = regexp.MustCompile(`(?m)^main pid=(\d+) tick (\d+) total=(\d+)$`)
	treeMTPingLine   = regexp.MustCompile(`(?m)^pingpong (\d+)$`)
)

// TestTreeThreads: a process with 4 worker threads (each with a counter, a
// __thread value and heap data it verifies every tick) and two threads
// playing ping-pong through a condition variable. After the restore every
// thread has its TID and goes on from its own tick.
func TestTreeThreads(t *testing.T) {
	testutil.RequireRoot(t)
	for _, mode := range treeModes {
		t.Run(mode.name, func(t *testing.T) { treeTestThreads(t, mode) })
	}
}

func treeTestThreads(t *testing.T, mode treeMode) {
	const workers = 4
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "mthreads"), strconv.Itoa(workers))
	keys := lzKeys(workers)
	workerTicks := regexp.MustCompile(`(?m)^worker (\d+) tid=\d+ tick (\d+) `)
	lzWaitAll(t, v.Pid, v.OutputFile, workerTicks, keys, 2)
	v.WaitOutput(lineRe(`^pingpong 20$`), outputTimeout)
	tidsBefore := lzSameValue(t, "tid", v.Output(), treeMTWorkerLine, 2)

	tree, d := treeDumpRestore(t, v, mode)
	if n := len(tree[v.Pid].tids); n != workers+3 {
		t.Errorf("dumped process had %d threads, want %d", n, workers+3)
	}
	before := v.Output()
	last := 0
	for _, ns := range lzGroupNumbers(t, before, workerTicks, 1, 2) {
		last = max(last, ns[len(ns)-1])
	}
	lastPing := lastNumber(t, before, treeMTPingLine)
	lzWaitAll(t, v.Pid, v.OutputFile, workerTicks, keys, last+3)
	waitRestored(t, v, lineRe(`^pingpong %d$`, lastPing+30))
	waitRestored(t, v, lineRe(`^main pid=%d tick %d `, v.Pid, lastNumber(t, before, regexp.MustCompile(`(?m)^main pid=\d+ tick (\d+) `))+3))

	out := v.Output()
	requireNoFail(t, out)
	if !strings.HasPrefix(out, before) {
		t.Fatalf("restored output does not continue the dumped one")
	}
	lzRequireSteps(t, "tick of worker", lzGroupNumbers(t, out, workerTicks, 1, 2), keys,
		func(string) int { return 0 }, 1, last+4)
	tids := lzSameValue(t, "tid", out, treeMTWorkerLine, 2)
	for k, tid := range tidsBefore {
		if tids[k] != tid {
			t.Errorf("worker %s: tid %s after restore, %s before", k, tids[k], tid)
		}
	}
	tls := lzSameValue(t, "tls value", out, treeMTWorkerLine, 4)
	if len(tls) != workers {
		t.Errorf("tls values of %d workers, want %d", len(tls), workers)
	}
	requireConsecutive(t, "main tick", numbers(t, out, regexp.MustCompile(`(?m)^main pid=\d+ tick (\d+) `)), 0, 4)
	for _, m := range treeMTMainLine.FindAllStringSubmatch(out, -1) {
		if m[1] != strconv.Itoa(v.Pid) {
			t.Errorf("main thread reports pid %s, want %d (%q)", m[1], v.Pid, m[0])
			break
		}
	}
	totals := numbers(t, out, regexp.MustCompile(`(?m)^main pid=\d+ tick \d+ total=(\d+)$`))
	if !sort.IntsAreSorted(totals) {
		t.Errorf("shared total went down: %v", totals)
	}
	pings := numbers(t, out, treeMTPingLine)
	for i, p := range pings {
		if p != 10*(i+1) {
			t.Errorf("pingpong line %d is %d, want %d (%v)", i, p, 10*(i+1), around(pings, i))
			break
		}
	}
	lzFinish(t, d, tree)
}

var (
	treeRingHead = regexp.MustCompile(`(?m)^ring root=(\d+) n=(\d+) zombie=(\d+)$`)
	treeRingLine = regexp.MustCompile(`(?m)^ring (\d+) pid=(\d+) ppid=(\d+) pgid=(\d+) token (\d+)$`)
)

// TestTreeRing: 4 processes pass a token around a ring of pipes (each sees
// its token grow by 4 every round), one of them in a process group of its
// own, and the root has an unreaped zombie child that exited with 42. After
// the restore the ring goes on, and the zombie is still a zombie of the root
// until the root reaps it (on a trigger file) and gets status 42.
func TestTreeRing(t *testing.T) {
	testutil.RequireRoot(t)
	for _, mode := range treeModes {
		t.Run(mode.name, func(t *testing.T) { treeTestRing(t, mode) })
	}
}

func treeTestRing(t *testing.T, mode treeMode) {
	const n = 4
	trigger := filepath.Join(t.TempDir(), "reap")
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "ring"), strconv.Itoa(n), trigger)
	head := v.WaitOutput(treeRingHead, outputTimeout)
	zombie := atoi(t, head[3])
	keys := lzKeys(n)
	tokens := regexp.MustCompile(`(?m)^ring (\d+) pid=\d+ ppid=\d+ pgid=\d+ token (\d+)$`)
	lzWaitAll(t, v.Pid, v.OutputFile, tokens, keys, 2*n)
	if err := testutil.WaitProcState(zombie, "Z", outputTimeout); err != nil {
		t.Fatalf("zombie child: %v", err)
	}

	tree, d := treeDumpRestore(t, v, mode)
	if len(tree) != n+1 {
		t.Errorf("dumped tree has %d processes, want %d members and a zombie: %v", len(tree), n, tree)
	}
	if z := tree[zombie]; z.state != 'Z' || z.ppid != v.Pid {
		t.Fatalf("zombie %d dumped as %v, want a zombie child of %d", zombie, z, v.Pid)
	}
	before := v.Output()
	lastToken := lastNumber(t, before, regexp.MustCompile(`(?m)^ring \d+ .* token (\d+)$`))
	lzWaitAll(t, v.Pid, v.OutputFile, tokens, keys, lastToken+2*n)
	if err := testutil.WaitProcState(zombie, "Z", 0); err != nil {
		t.Errorf("restored zombie: %v", err)
	}
	lzTouch(t, trigger)
	m := waitRestored(t, v, lineRe(`^reaped zombie=%d exited=(\d) status=(\d+)$`, zombie))
	if m[1] != "1" || m[2] != "42" {
		t.Errorf("root reaped its zombie: exited=%s status=%s, want exited=1 status=42", m[1], m[2])
	}
	if err := testutil.WaitPidGone(zombie, goneTimeout); err != nil {
		t.Errorf("after the root reaped it: %v", err)
	}
	lzWaitAll(t, v.Pid, v.OutputFile, tokens, keys, lastToken+4*n)

	out := v.Output()
	requireNoFail(t, out)
	if !strings.HasPrefix(out, before) {
		t.Fatalf("restored output does not continue the dumped one")
	}
	lzRequireSteps(t, "token of member", lzGroupNumbers(t, out, tokens, 1, 2), keys,
		func(k string) int { return atoi(t, k) }, n, 4)
	pids := lzSameValue(t, "pid", out, treeRingLine, 2)
	lzRequireParent(t, out, treeRingLine, 3, v.Pid)
	pgids := lzSameValue(t, "pgid", out, treeRingLine, 4)
	for _, k := range keys {
		pid := atoi(t, pids[k])
		if _, ok := tree[pid]; !ok {
			t.Errorf("member %s pid %d is not in the dumped tree", k, pid)
		}
		wantPgid := strconv.Itoa(v.Pid)
		if k == "2" {
			wantPgid = pids[k]
		}
		if pgids[k] != wantPgid {
			t.Errorf("member %s in process group %s, want %s", k, pgids[k], wantPgid)
		}
	}
	lzFinish(t, d, tree)
}

// treePython returns the real python3 binary (not a shim script:
// the restored process's exe must be what the victim ran).
func treePython(t *testing.T) string {
	t.Helper()
	cand := "/usr/bin/python3"
	if _, err := os.Stat(cand); err != nil {
		if cand, err = exec.LookPath("python3"); err != nil {
			t.Fatalf("python3 not found: %v", err)
		}
	}
	b, err := exec.Command(cand, "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		t.Fatalf("%s: %v", cand, err)
	}
	return strings.TrimSpace(string(b))
}

// treeHashChain returns the first 16 hex digits of h_0..h_n of the chain the
// Python and Go victims compute: h_0 = sha256(seed), h_(k+1) = sha256(h_k ||
// k as 8 bytes big-endian).
func treeHashChain(seed string, n int) []string {
	h := sha256.Sum256([]byte(seed))
	out := make([]string, 0, n+1)
	var buf [sha256.Size + 8]byte
	for k := 0; k <= n; k++ {
		out = append(out, hex.EncodeToString(h[:8]))
		copy(buf[:], h[:])
		binary.BigEndian.PutUint64(buf[sha256.Size:], uint64(k))
		h = sha256.Sum256(buf[:])
	}
	return out
}

// treeRequireChains checks every "<prefix> <i> tick <n> h=<hex>" line of
// out against the chain seeded with seedPrefix+i, and that each worker's
// ticks run from 0 without gap or repeat, at least atLeast of them.
func treeRequireChains(t *testing.T, out, prefix, seedPrefix string, workers, atLeast int) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + prefix + ` (\d+) tick (\d+) h=([0-9a-f]{16})$`)
	keys := lzKeys(workers)
	lzRequireSteps(t, prefix+" tick of worker", lzGroupNumbers(t, out, re, 1, 2), keys,
		func(string) int { return 0 }, 1, atLeast)
	chains := map[string][]string{}
	for _, k := range keys {
		chains[k] = treeHashChain(seedPrefix+k, 10000)
	}
	bad := 0
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		c, ok := chains[m[1]]
		n := atoi(t, m[2])
		if !ok || n >= len(c) || c[n] != m[3] {
			if bad++; bad <= 5 {
				t.Errorf("%q: not the value of the hash chain", m[0])
			}
		}
	}
}

var treePyTick = regexp.MustCompile(`(?m)^py (\d+) tick (\d+) `)

// TestTreePythonThreads: the CPython interpreter with 3 threads (the GIL,
// futexes, many mappings) computing hash chains. After the restore every
// thread goes on with the next value of its chain; the test recomputes all
// of them.
func TestTreePythonThreads(t *testing.T) {
	testutil.RequireRoot(t)
	python := treePython(t)
	root, err := testutil.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(root, "integration", "victims", "pythreads.py")
	for _, mode := range treeModes {
		t.Run(mode.name, func(t *testing.T) {
			const threads = 3
			v := testutil.StartVictim(t, python, script, strconv.Itoa(threads))
			keys := lzKeys(threads)
			lzWaitAll(t, v.Pid, v.OutputFile, treePyTick, keys, 2)
			tree, d := treeDumpRestore(t, v, mode)
			if n := len(tree[v.Pid].tids); n < threads+1 {
				t.Errorf("dumped interpreter had %d threads, want at least %d", n, threads+1)
			}
			before := v.Output()
			last := 0
			for _, ns := range lzGroupNumbers(t, before, treePyTick, 1, 2) {
				last = max(last, ns[len(ns)-1])
			}
			lzWaitAll(t, v.Pid, v.OutputFile, treePyTick, keys, last+3)
			out := v.Output()
			requireNoFail(t, out)
			if !strings.HasPrefix(out, before) {
				t.Fatalf("restored output does not continue the dumped one")
			}
			treeRequireChains(t, out, "py", "py-", threads, last+4)
			requireConsecutive(t, "main tick", numbers(t, out, regexp.MustCompile(`(?m)^main tick (\d+) `)), 0, 4)
			lzFinish(t, d, tree)
		})
	}
}

var treeGoTick = regexp.MustCompile(`(?m)^go (\d+) tick (\d+) `)

// TestTreeGoRuntime: a Go program (the Go runtime's threads, signal
// handlers, futexes, the netpoller's epoll fd and eventfd behind its timers,
// the garbage collector) with 4 goroutines computing hash chains on
// tickers and a checker verifying a map and a slice. After the restore the
// chains go on (the test recomputes them), the checker keeps passing, and a
// SIGUSR1 is still delivered through signal.Notify.
func TestTreeGoRuntime(t *testing.T) {
	testutil.RequireRoot(t)
	bin := treeBuildGoVictim(t, "goprog")
	for _, mode := range treeModes {
		t.Run(mode.name, func(t *testing.T) {
			const workers = 4
			v := testutil.StartVictim(t, bin, strconv.Itoa(workers))
			keys := lzKeys(workers)
			lzWaitAll(t, v.Pid, v.OutputFile, treeGoTick, keys, 2)
			v.WaitOutput(lineRe(`^check tick 2 ok$`), outputTimeout)
			if err := syscall.Kill(v.Pid, syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			v.WaitOutput(lineRe(`^signal usr1 count=1$`), outputTimeout)

			tree, d := treeDumpRestore(t, v, mode)
			t.Logf("Go program dumped with %d threads", len(tree[v.Pid].tids))
			before := v.Output()
			last := 0
			for _, ns := range lzGroupNumbers(t, before, treeGoTick, 1, 2) {
				last = max(last, ns[len(ns)-1])
			}
			lastCheck := lastNumber(t, before, regexp.MustCompile(`(?m)^check tick (\d+) ok$`))
			lzWaitAll(t, v.Pid, v.OutputFile, treeGoTick, keys, last+3)
			waitRestored(t, v, lineRe(`^check tick %d ok$`, lastCheck+3))
			if err := syscall.Kill(v.Pid, syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			waitRestored(t, v, lineRe(`^signal usr1 count=2$`))
			out := v.Output()
			requireNoFail(t, out)
			if !strings.HasPrefix(out, before) {
				t.Fatalf("restored output does not continue the dumped one")
			}
			treeRequireChains(t, out, "go", "go-", workers, last+4)
			requireConsecutive(t, "check tick", numbers(t, out, regexp.MustCompile(`(?m)^check tick (\d+) ok$`)), 0, lastCheck+4)
			lzFinish(t, d, tree)
		})
	}
}

var treeGoBuild struct {
	mu    sync.Mutex
	cache map[string]string
}

// treeBuildGoVictim builds the Go program in integration/victims/NAME with `go
// build` and returns the binary's path. Like testutil.BuildVictim it keeps
// the binary (named NAME, in a folder named after a hash of the sources and
// the Go version) under testutil.VictimCacheDir(), so reruns do not build.
func treeBuildGoVictim(t *testing.T, name string) string {
	t.Helper()
	b := &treeGoBuild
	b.mu.Lock()
	defer b.mu.Unlock()
	if p, ok := b.cache[name]; ok {
		return p
	}
	root, err := testutil.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	ver, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		t.Fatalf("go env GOVERSION: %v", err)
	}
	src := filepath.Join(root, "integration", "victims", name)
	files, err := filepath.Glob(filepath.Join(src, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("sources of %s: %v (%d files)", name, err, len(files))
	}
	sort.Strings(files)
	h := sha256.New()
	fmt.Fprintf(h, "go victim 1\x00%s\x00", strings.TrimSpace(string(ver)))
	for _, f := range files {
		c, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", filepath.Base(f), len(c))
		h.Write(c)
	}
	final := filepath.Join(testutil.VictimCacheDir(), "go-"+name+"-"+hex.EncodeToString(h.Sum(nil))[:16])
	out := filepath.Join(final, name)
	if _, err := os.Stat(out); err != nil {
		if err := os.MkdirAll(testutil.VictimCacheDir(), 0o755); err != nil {
			t.Fatal(err)
		}
		// Build into a private folder and rename it into place, so that a
		// concurrent test binary never runs a half-written file.
		tmp, err := os.MkdirTemp(testutil.VictimCacheDir(), ".gobuild-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(tmp)
		if err := os.Chmod(tmp, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(tmp, name), "./integration/victims/"+name)
		cmd.Dir = root
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", name, err, msg)
		}
		if err := os.Rename(tmp, final); err != nil {
			if _, serr := os.Stat(out); serr != nil {
				t.Fatalf("install %s: %v", name, err)
			}
		}
	}
	if b.cache == nil {
		b.cache = map[string]string{}
	}
	b.cache[name] = out
	return out
}
