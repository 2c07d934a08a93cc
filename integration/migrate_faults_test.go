package integration

import (
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

// TestMigrateAbort: a post-copy migration that breaks in the middle loses nothing. The victim (bigmem,
// 256 MiB, in its own PID namespace) is migrated on loopback with prefetch off, so the destination,
// which waits for its trigger, has only the pages it touched when the transfer is cut:
//
//   - source-killed: the dump --lazy-pages process is SIGKILLed (no chance to clean up);
//   - source-stopped: it is asked to stop (SIGTERM) and gives up;
//   - destination-killed: the destination's lazy-pages daemon is SIGKILLed.
//
// In every case the destination tree is killed, and the source runs on as it was: not traced, its own
// signal mask, and every page of its memory intact (it reads and checks them all once triggered).
func TestMigrateAbort(t *testing.T) {
	testutil.RequireRoot(t)
	bigmem := testutil.BuildVictim(t, "bigmem")
	for _, kind := range []string{"source-killed", "source-stopped", "destination-killed"} {
		t.Run(kind, func(t *testing.T) {
			trigger := filepath.Join(t.TempDir(), "go")
			v, pid := startPidnsVictim(t, nil, bigmem, "256", trigger)
			v.WaitOutput(regexp.MustCompile(`(?m)^ready pages=65536$`), 60*time.Second)
			mask := sigBlk(t, pid)

			port := freePort(t)
			srcDir, dstDir, work := t.TempDir(), filepath.Join(t.TempDir(), "img"), t.TempDir()
			source := startBg(t, nil, "dump", "-t", strconv.Itoa(pid), "-D", srcDir, "--lazy-pages", "--address", "127.0.0.1", "--port", port)
			lpPid := filepath.Join(work, "lazy-pages.pid")
			lazyr(t, nil, "lazy-pages", "--page-server", "--address", "127.0.0.1", "--port", port, "-D", dstDir, "-W", work,
				"--daemon", "--no-prefetch", "--pidfile", lpPid)
			rpid := restoreLazy(t, nil, dstDir, work)
			if !testutil.PidAlive(rpid) {
				t.Fatal("the destination does not run")
			}

			switch kind {
			case "source-killed":
				source.signal(syscall.SIGKILL)
				source.wait(10 * time.Second)
			case "source-stopped":
				source.signal(syscall.SIGTERM)
				source.requireExit(1, 10*time.Second)
				if e := source.errText(); !regexp.MustCompile(`(?i)aborted`).MatchString(e) {
					t.Errorf("the source does not say the transfer was aborted:\n%s", e)
				}
			case "destination-killed":
				b, err := os.ReadFile(lpPid)
				if err != nil {
					t.Fatal(err)
				}
				daemon, _ := strconv.Atoi(strings.TrimSpace(string(b)))
				if err := syscall.Kill(daemon, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				source.requireExit(1, 10*time.Second)
				if e := source.errText(); !regexp.MustCompile(`(?i)aborted.*left before it had every page`).MatchString(e) {
					t.Errorf("the source does not say why it gave up:\n%s", e)
				}
			}
			// The destination is killed: its memory is out of reach.
			if err := testutil.WaitPidGone(rpid, goneTimeout); err != nil && testutil.PidAlive(rpid) {
				t.Fatalf("the destination still runs after the transfer broke: %v", err)
			}
			// The source runs on as it was.
			deadline := time.Now().Add(goneTimeout)
			for procStatusField(t, pid, "TracerPid") != "0" {
				if time.Now().After(deadline) {
					t.Fatalf("source %d still traced", pid)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if st, err := testutil.ProcState(pid); err != nil || st == 't' || st == 'T' || st == 'Z' {
				t.Fatalf("source %d in state %c (%v), want running", pid, st, err)
			}
			if got := sigBlk(t, pid); got != mask {
				t.Errorf("source signal mask %s, want its own %s", got, mask)
			}
			writeTrigger(t, trigger, "seq")
			st, err := v.Wait(60 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			out := v.Output()
			if st.ExitCode() != 0 || !regexp.MustCompile(`(?m)^done start=\d+ end=\d+ pages=65536$`).MatchString(out) {
				t.Fatalf("the source did not read back all its memory (exit %v):\n%s", st, testutil.Tail(out, 5))
			}
			if n := strings.Count(out, "done start="); n != 1 {
				t.Errorf("%d done lines, want the source's only", n)
			}
		})
	}
}

// TestMigrateImagesNeedLazyRestore: the images a migration source writes hold no copy of the lazy memory
// (the source serves it). An eager restore from them would run the process on zeroed memory: it is
// refused with a message that says what to do, no process is created, and the source, asked to stop
// afterwards, runs on intact.
func TestMigrateImagesNeedLazyRestore(t *testing.T) {
	testutil.RequireRoot(t)
	bigmem := testutil.BuildVictim(t, "bigmem")
	trigger := filepath.Join(t.TempDir(), "go")
	v, pid := startPidnsVictim(t, nil, bigmem, "16", trigger)
	v.WaitOutput(regexp.MustCompile(`(?m)^ready pages=4096$`), 60*time.Second)

	srcDir := t.TempDir()
	source := startBg(t, nil, "dump", "-t", strconv.Itoa(pid), "-D", srcDir, "--lazy-pages", "--address", "127.0.0.1", "--port", freePort(t))
	_, stderr, code := lazyrCode(t, nil, "restore", "-D", srcDir, "-d")
	if code == 0 {
		t.Fatal("an eager restore of a migration source's images succeeded")
	}
	if !regexp.MustCompile(`post-copy migration source.*--lazy-pages`).MatchString(stderr) {
		t.Errorf("the refusal does not say why and what to do:\n%s", stderr)
	}

	source.signal(syscall.SIGTERM)
	source.requireExit(1, 10*time.Second)
	writeTrigger(t, trigger, "seq")
	st, err := v.Wait(60 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if out := v.Output(); st.ExitCode() != 0 || !regexp.MustCompile(`(?m)^done start=\d+ end=\d+ pages=4096$`).MatchString(out) {
		t.Fatalf("the source did not read back all its memory (exit %v):\n%s", st, testutil.Tail(out, 5))
	}
}
