package integration

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"testing"

	"github.com/lazyr/lazyr/internal/testutil"
)

// TestUTSNamespace: a process with a UTS namespace of its own (but in the host's PID namespace) gets a
// fresh one back with its host and domain names, eagerly and lazily; the host's name is untouched. The
// victim checks both names every tick, and the test checks from outside that the restored process is not
// in the host's namespace.
func TestUTSNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildVictim(t, "uts")
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	for _, lazy := range []bool{false, true} {
		t.Run(mode(lazy), func(t *testing.T) {
			v := testutil.StartVictim(t, "unshare", "-u", bin, "lazyr-uts")
			v.WaitOutput(lineRe(`^tick 2 host=lazyr-uts pid=%d$`, v.Pid), outputTimeout)
			dir := t.TempDir()
			dumpKill(t, v, dir)
			last := lastNumber(t, v.Output(), regexp.MustCompile(`(?m)^tick (\d+) `))
			pid := restoreOutside(t, dir, lazy)
			if pid != v.Pid {
				t.Fatalf("restored as pid %d, want %d", pid, v.Pid)
			}
			if _, err := testutil.WaitPidOutput(pid, v.OutputFile, lineRe(`^tick %d host=lazyr-uts pid=%d$`, last+2, pid), outputTimeout); err != nil {
				t.Fatalf("restored victim: %v\n%s", err, testutil.Tail(v.Output(), 10))
			}
			requireNoFail(t, v.Output())
			self, _ := os.Readlink("/proc/self/ns/uts")
			restored, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/uts", pid))
			if err != nil || restored == self {
				t.Errorf("restored process in UTS namespace %q (%v), want one of its own (not %q)", restored, err, self)
			}
			if now, _ := os.Hostname(); now != host {
				t.Errorf("the host's name changed from %q to %q", host, now)
			}
		})
	}
}

// TestDumpRefusesSplitUTSNamespace: a child in another UTS namespace than the root is refused by name,
// and the tree runs on untraced.
func TestDumpRefusesSplitUTSNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	counter := testutil.BuildVictim(t, "counter")
	v := testutil.StartVictim(t, "/bin/sh", "-c", "unshare -u "+counter+" 1 & wait")
	child := childOf(t, v.Pid)
	testutil.KillAtCleanup(t, child) // the victim's cleanup kills only the shell
	v.WaitOutput(lineRe(`^tick 1\b`), outputTimeout)
	_, stderr, code := testutil.Lazyr(t, "dump", "-t", strconv.Itoa(v.Pid), "-D", t.TempDir())
	requireFailure(t, "dump of a tree spread over UTS namespaces", stderr, code,
		regexp.MustCompile(fmt.Sprintf(`process %d is in another UTS namespace`, child)))
	before := len(numbers(t, v.Output(), tickRe))
	v.WaitOutput(lineRe(`^tick %d\b`, before+1), outputTimeout)
	for _, pid := range []int{v.Pid, child} {
		if st := procStatusField(t, pid, "TracerPid"); st != "0" {
			t.Errorf("process %d still traced (TracerPid %s)", pid, st)
		}
	}
}
