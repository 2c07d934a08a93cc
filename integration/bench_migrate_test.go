//go:build bench

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/internal/testutil"
	"github.com/lazyr/lazyr/pagesrv"
)

// The issue 4 benchmarks (`make bench` runs them with TestBench): post-copy migration downtime, remote
// lazy restore against local lazy restore, and the page server's throughput against plain TCP. Like
// TestBench, targets are ratios or bounds checked within one run, a missed one is marked MISS.

// migrationRuns: downtime is the best of this many migrations (noise from the shared machine only adds).
const migrationRuns = 3

// frozenRe is the dump log's line for the moment the tree is frozen (-v 3 and up).
var frozenRe = regexp.MustCompile(`(?m)^(\d\d:\d\d:\d\d\.\d{3})\tDEBUG\ttree frozen\t.*"freezing": "([^"]+)"`)

// frozenAt returns when the dump froze the tree: the log's time stamp (ms) minus the time seizing took.
func frozenAt(t *testing.T, log string, ref time.Time) time.Time {
	t.Helper()
	m := frozenRe.FindStringSubmatch(testutil.ReadOutput(log))
	if m == nil {
		t.Fatalf("no 'tree frozen' line in %s", log)
	}
	tod, err := time.ParseInLocation("15:04:05.000", m[1], time.Local)
	if err != nil {
		t.Fatal(err)
	}
	freezing, err := time.ParseDuration(m[2])
	if err != nil {
		t.Fatal(err)
	}
	y, mo, d := ref.Date()
	at := time.Date(y, mo, d, tod.Hour(), tod.Minute(), tod.Second(), tod.Nanosecond(), time.Local)
	return at.Add(-freezing)
}

// migrateBigmem migrates a bigmem victim of mib MiB (the init of its own PID namespace) on loopback
// the way a migration tool would: the destination's lazy-pages daemon is started first and waits for
// the source (--connect-timeout), then `dump --lazy-pages` freezes the source, then `restore
// --lazy-pages -d` starts the destination. It returns the downtime (source frozen to `restore -d`
// returned: the destination runs) and the same from the moment `lazyr dump` was started. The victim
// then reads all its memory on the destination, and the migration must finish cleanly.
func migrateBigmem(t *testing.T, lazyr, bin string, mib int) (downtime, fromStart time.Duration) {
	trigger := filepath.Join(t.TempDir(), "go")
	v, pid := startPidnsVictim(t, nil, bin, strconv.Itoa(mib), trigger)
	v.WaitOutput(regexp.MustCompile(`(?m)^ready`), 120*time.Second)
	port := freePort(t)
	srcDir, dstDir, work := t.TempDir(), filepath.Join(t.TempDir(), "img"), t.TempDir()
	lpPid := filepath.Join(work, "lp.pid")
	lp := exec.Command(lazyr, "lazy-pages", "--page-server", "--address", "127.0.0.1", "--port", port, "--connect-timeout", "60s",
		"-D", dstDir, "-W", work, "--daemon", "--pidfile", lpPid, "-o", filepath.Join(work, "lp.log"), "-v", "1")
	if err := lp.Start(); err != nil {
		t.Fatal(err)
	}
	lpDone := make(chan error, 1)
	go func() { lpDone <- lp.Wait() }()
	t.Cleanup(func() {
		if b, err := os.ReadFile(lpPid); err == nil {
			if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				unix.Kill(p, unix.SIGKILL)
			}
		}
	})
	time.Sleep(200 * time.Millisecond) // the daemon is up and knocking

	start := time.Now()
	source := startBg(t, nil, "dump", "-t", strconv.Itoa(pid), "-D", srcDir, "--lazy-pages", "--address", "127.0.0.1", "--port", port)
	if err := <-lpDone; err != nil {
		t.Fatalf("lazy-pages --daemon: %v\n%s", err, testutil.ReadOutput(filepath.Join(work, "lp.log")))
	}
	rpidFile := filepath.Join(work, "restore.pid")
	if _, stderr, code := testutil.Lazyr(t, "restore", "-D", dstDir, "-W", work, "--lazy-pages", "-d", "--pidfile", rpidFile, "-v", "1"); code != 0 {
		t.Fatalf("restore: %s", stderr)
	}
	running := time.Now()
	downtime, fromStart = running.Sub(frozenAt(t, source.log, start)), running.Sub(start)

	// Let the destination read everything; the daemon finishes, says Done, the source dies.
	writeTrigger(t, trigger, "seq")
	lazyPagesStats(t, work)
	source.requireExit(0, 120*time.Second)
	out, err := testutil.WaitOutputFile(v.OutputFile, regexp.MustCompile(`(?m)^done start=\d+ end=\d+ pages=(\d+)$`), 120*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if out[1] != strconv.Itoa(mib<<8) {
		t.Fatalf("the destination read %s pages, want %d", out[1], mib<<8)
	}
	// The restored victim's parent, lazyr, is gone: this process (a child subreaper) reaps it.
	b, err := os.ReadFile(rpidFile)
	if err != nil {
		t.Fatal(err)
	}
	rpid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	var ws unix.WaitStatus
	if _, err := unix.Wait4(rpid, &ws, 0, nil); err != nil || !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("the destination victim %d ended with %v (%v)", rpid, ws, err)
	}
	return downtime, fromStart
}

// runRemoteRestore is runRestore (bench_test.go) with the memory on a page server: page-server on the
// dump, lazy-pages --page-server fetching the images into a fresh directory, restore --lazy-pages from
// it. It returns the time from restore start until the victim had read all its memory.
func runRemoteRestore(t *testing.T, lazyr string, bd *benchDump, order string) time.Duration {
	port := freePort(t)
	srv := startBg(t, nil, "page-server", "-D", bd.dir, "--address", "127.0.0.1", "--port", port, "--lazy-pages")
	dst, work := filepath.Join(t.TempDir(), "img"), t.TempDir()
	if _, stderr, code := testutil.Lazyr(t, "lazy-pages", "--page-server", "--address", "127.0.0.1", "--port", port,
		"-D", dst, "-W", work, "--daemon", "-o", filepath.Join(work, "lp.log"), "-v", "1"); code != 0 {
		t.Fatalf("lazy-pages --page-server: %s", stderr)
	}
	defer prepareRun(t, bd, order)() // as for the local restores it is compared with
	start := time.Now()
	if _, stderr, code := testutil.Lazyr(t, "restore", "-D", dst, "-W", work, "--lazy-pages", "-d", "-v", "1"); code != 0 {
		t.Fatalf("restore: %s", stderr)
	}
	end := waitDone(t, bd)
	lazyPagesStats(t, work)
	srv.requireExit(0, 60*time.Second)
	return end.Sub(start)
}

func TestBenchMigration(t *testing.T) {
	testutil.RequireRoot(t)
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	lazyr := testutil.BuildLazyr(t)
	bin := testutil.BuildVictim(t, "bigmem")
	var tab benchTable
	defer tab.print()

	// Downtime, 64 MiB and 2 GiB.
	best := map[int]time.Duration{}
	for _, mib := range []int{64, 2048} {
		var worstStart time.Duration
		var all []string
		for range migrationRuns {
			d, s := migrateBigmem(t, lazyr, bin, mib)
			all = append(all, ms(d))
			if best[mib] == 0 || d < best[mib] {
				best[mib] = d
			}
			worstStart = max(worstStart, s)
		}
		label := fmt.Sprintf("%d MiB", mib)
		tab.check("issue 4: "+label+" migration downtime (best of "+strconv.Itoa(migrationRuns)+")", ms(best[mib]), "<= 100 ms", best[mib] <= 100*time.Millisecond)
		tab.add("issue 4: "+label+" downtime, all runs", strings.Join(all, " "))
		tab.add("issue 4: "+label+" from `lazyr dump` start (worst)", ms(worstStart))
	}
	ratio := best[2048].Seconds() / best[64].Seconds()
	tab.check("issue 4: downtime 2 GiB / 64 MiB", fmt.Sprintf("%.2f", ratio), "<= 1.2", ratio <= 1.2)

	// Remote against local lazy restore, 2 GiB, both orders.
	bd := dumpBigmem(t, lazyr, bin, 2048)
	_, localSeq, _ := runRestore(t, lazyr, bd, true, true, "seq")
	remoteSeq := runRemoteRestore(t, lazyr, bd, "seq")
	_, localRev, _ := runRestore(t, lazyr, bd, true, true, "rev")
	remoteRev := runRemoteRestore(t, lazyr, bd, "rev")
	os.RemoveAll(bd.dir)
	tab.add("issue 4: 2 GiB local lazy start->all read seq", ms(localSeq))
	tab.add("issue 4: 2 GiB local lazy start->all read rev", ms(localRev))
	tab.check("issue 4: 2 GiB remote lazy start->all read seq", fmt.Sprintf("%s (%.2fx local)", ms(remoteSeq), remoteSeq.Seconds()/localSeq.Seconds()),
		"<= 1.3x local", remoteSeq.Seconds() <= 1.3*localSeq.Seconds())
	tab.check("issue 4: 2 GiB remote lazy start->all read rev", fmt.Sprintf("%s (%.2fx local)", ms(remoteRev), remoteRev.Seconds()/localRev.Seconds()),
		"<= 1.3x local", remoteRev.Seconds() <= 1.3*localRev.Seconds())

	// Throughput over loopback: the best ratio of a few measurements (each alternates both copies).
	var ps, tcp float64
	for range 3 {
		p, c, err := pagesrv.MeasureThroughput(512 << 20)
		if err != nil {
			t.Fatal(err)
		}
		if ps == 0 || p/c > ps/tcp {
			ps, tcp = p, c
		}
	}
	tab.add("issue 4: plain TCP copy over loopback", fmt.Sprintf("%.0f MB/s", tcp))
	tab.check("issue 4: page server over loopback", fmt.Sprintf("%.0f MB/s (%.2fx TCP)", ps, ps/tcp), ">= 0.7x TCP", ps >= 0.7*tcp)
}
