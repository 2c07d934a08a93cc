package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazyr/lazyr/internal/testutil"
)

// requireFailure checks that a lazyr run failed with a message on stderr
// matching every one of res.
func requireFailure(t *testing.T, what, stderr string, code int, res ...*regexp.Regexp) {
	t.Helper()
	if code == 0 {
		t.Fatalf("%s succeeded; want a failure", what)
	}
	if strings.TrimSpace(stderr) == "" {
		t.Errorf("%s: exit %d with nothing on stderr", what, code)
	}
	for _, re := range res {
		if !re.MatchString(stderr) {
			t.Errorf("%s: stderr does not match %q:\n%s", what, re, stderr)
		}
	}
}

// word matches s as a whole word (a PID in a message, ...).
func word(s string) *regexp.Regexp { return regexp.MustCompile(`\b` + regexp.QuoteMeta(s) + `\b`) }

func TestDumpNonexistentPid(t *testing.T) {
	testutil.RequireRoot(t)
	pid, err := testutil.UnusedPid()
	if err != nil {
		t.Fatal(err)
	}
	_, stderr, code := testutil.Lazyr(t, "dump", "-t", strconv.Itoa(pid), "-D", t.TempDir())
	requireFailure(t, "dump of a nonexistent pid", stderr, code,
		word(strconv.Itoa(pid)), regexp.MustCompile(`(?i)no such process|not exist|not found|esrch`))
}

func TestDumpZombie(t *testing.T) {
	testutil.RequireRoot(t)
	// A child the test deliberately does not reap yet.
	cmd := exec.Command(testutil.BuildVictim(t, "exitcode"), "0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Wait() })
	pid := cmd.Process.Pid
	if err := testutil.WaitProcState(pid, "Z", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := testutil.Lazyr(t, "dump", "-t", strconv.Itoa(pid), "-D", t.TempDir())
	requireFailure(t, "dump of a zombie", stderr, code, word(strconv.Itoa(pid)), regexp.MustCompile(`(?i)zombie`))
	if st, err := testutil.ProcState(pid); err != nil || st != 'Z' {
		t.Errorf("zombie %d changed to state %c (%v)", pid, st, err)
	}
}

func TestDumpAsNonRoot(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "counter"), "8")
	v.WaitOutput(lineRe(`^tick 1\b`), outputTimeout)
	// An images dir the unprivileged user can write, so that the failure
	// can only be about the process.
	dir, err := os.MkdirTemp("", "lazyr-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := testutil.LazyrWith(t, testutil.LazyrOptions{
		Credential: &syscall.Credential{Uid: 65534, Gid: 65534},
	}, "dump", "-t", strconv.Itoa(v.Pid), "-D", dir)
	requireFailure(t, "dump by uid 65534 of a root process", stderr, code,
		regexp.MustCompile(`(?i)permission|not permitted|eperm|privilege|root`))
	requireUndisturbed(t, v)
}

// TestDumpRefusesNestedPidNamespace: a tree member in another PID namespace than its parent is refused
// before anything is killed, and the whole tree goes on as it was.
func TestDumpRefusesNestedPidNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	counter := testutil.BuildVictim(t, "counter")
	v := testutil.StartVictim(t, "/bin/sh", "-c", "unshare -pf "+counter+" 1 & wait")
	unshare := childOf(t, v.Pid)
	inner := childOf(t, unshare)
	testutil.KillAtCleanup(t, inner) // the victim's cleanup kills only the shell
	testutil.KillAtCleanup(t, unshare)
	v.WaitOutput(lineRe(`^tick 1\b`), outputTimeout)
	_, stderr, code := testutil.Lazyr(t, "dump", "-t", strconv.Itoa(v.Pid), "-D", t.TempDir())
	requireFailure(t, "dump of a tree with a nested PID namespace", stderr, code, regexp.MustCompile(`(?i)PID namespace`))
	before := len(numbers(t, v.Output(), tickRe))
	v.WaitOutput(lineRe(`^tick %d\b`, before+1), outputTimeout)
	if st := procStatusField(t, v.Pid, "TracerPid"); st != "0" {
		t.Errorf("shell still traced (TracerPid %s)", st)
	}
}

func TestDumpRefusesUnsupportedFd(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "socket"), "netlink")
	m := v.WaitOutput(regexp.MustCompile(`socket kind=netlink fd=(\d+)`), outputTimeout)
	fd := m[1]
	v.WaitOutput(lineRe(`^tick 1\b`), outputTimeout)
	_, stderr, code := testutil.Lazyr(t, "dump", "-t", strconv.Itoa(v.Pid), "-D", t.TempDir())
	requireFailure(t, "dump of a process with a netlink socket", stderr, code,
		regexp.MustCompile(`(?i)\bfd\W{0,3}`+fd+`\b`), regexp.MustCompile(`(?i)socket|unsupported|not supported`))
	requireUndisturbed(t, v)
	if target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", v.Pid, fd)); err != nil || !strings.HasPrefix(target, "socket:") {
		t.Errorf("victim fd %s is now %q (%v), want its socket", fd, target, err)
	}
}

func TestRestoreMissingDir(t *testing.T) {
	testutil.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "no-such-images")
	_, stderr, code := testutil.Lazyr(t, "restore", "-D", dir, "-d")
	requireFailure(t, "restore from a missing dir", stderr, code,
		regexp.MustCompile(`(?i)`+regexp.QuoteMeta(dir)+`|no such file|not exist`))
}

// dumpSmallCounter dumps (and kills) an 8 MiB counter for the broken-image
// tests and returns the victim, the images dir and its output at the dump.
func dumpSmallCounter(t *testing.T) (*testutil.Victim, string, string) {
	t.Helper()
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "counter"), "8")
	v.WaitOutput(lineRe(`^tick 1\b`), outputTimeout)
	dir := t.TempDir()
	dumpKill(t, v, dir)
	return v, dir, v.Output()
}

// requireFailedRestore runs restore -d on broken images and checks the clear
// error, that no process holds the victim's PID, and that nothing ran (the
// victim's output did not grow).
func requireFailedRestore(t *testing.T, v *testutil.Victim, dir, before, what string, res ...*regexp.Regexp) {
	t.Helper()
	_, stderr, code := testutil.Lazyr(t, "restore", "-D", dir, "-d")
	requireFailure(t, what, stderr, code, res...)
	requireNoProcess(t, v.Pid)
	if out := v.Output(); out != before {
		t.Errorf("a process ran after the failed restore; output grew by:\n%s", strings.TrimPrefix(out, before))
	}
}

func TestRestoreTruncatedPages(t *testing.T) {
	testutil.RequireRoot(t)
	v, dir, before := dumpSmallCounter(t)
	pages, err := filepath.Glob(filepath.Join(dir, "pages-*.img"))
	if err != nil || len(pages) != 1 {
		t.Fatalf("want one pages image, got %v (%v)", pages, err)
	}
	st, err := os.Stat(pages[0])
	if err != nil {
		t.Fatal(err)
	}
	cut := st.Size() / 2 &^ 4095
	if err := os.Truncate(pages[0], cut); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s cut from %d to %d bytes", filepath.Base(pages[0]), st.Size(), cut)
	requireFailedRestore(t, v, dir, before, "restore with a truncated pages image",
		regexp.MustCompile(`(?i)page|truncat|short|eof|unexpected end`))
}

func TestRestoreCorruptCore(t *testing.T) {
	testutil.RequireRoot(t)
	v, dir, before := dumpSmallCounter(t)
	path := filepath.Join(dir, fmt.Sprintf("core-%d.img", v.Pid))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Keep the magic and the entry size, garble the protobuf payload: 0xff
	// bytes are an invalid varint/field key, so no decoder can take them.
	off := imagePayloadOffset(t, b) + 4
	for i := off; i < len(b); i++ {
		b[i] = 0xff
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	requireFailedRestore(t, v, dir, before, "restore with a corrupt core image",
		regexp.MustCompile(`(?i)core`))
}

func TestRestorePidInUse(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "counter"), "8")
	v.WaitOutput(lineRe(`^tick 1\b`), outputTimeout)
	dir := t.TempDir()
	dump(t, v.Pid, dir, "--leave-running")
	_, stderr, code := testutil.Lazyr(t, "restore", "-D", dir, "-d")
	requireFailure(t, "restore while the pid is in use", stderr, code, word(strconv.Itoa(v.Pid)))
	requireUndisturbed(t, v)
}
