package integration

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/internal/testutil"
)

// The fd_* victims (integration/victims/fd_families.h) hold one family of file descriptors each, fd_all
// all of them at once; every tick they check that family's state and leave new pending state (unread
// data, counters) for the next tick. These tests dump them while running, restore them, and check that
// the restored process goes on ticking without a FAIL, and, from outside, what a victim cannot see by
// itself: that a restored listener accepts connections, a signalfd receives signals, inotify reports new
// events with the dumped watch descriptors, and file locks are held again.

// fdVictim is a started fd_* victim and the directory its files live in.
type fdVictim struct {
	*testutil.Victim
	dir   string
	ready map[string][]string // "ready <family> ..." line fields, by family
}

var readyRe = regexp.MustCompile(`(?m)^ready (\w+) (.*)$`)

func startFdVictim(t *testing.T, name string) *fdVictim {
	t.Helper()
	dir := t.TempDir()
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "fd_"+name), dir)
	v.WaitOutput(lineRe(`^tick 2$`), outputTimeout)
	fv := &fdVictim{Victim: v, dir: dir, ready: map[string][]string{}}
	for _, m := range readyRe.FindAllStringSubmatch(v.Output(), -1) {
		fv.ready[m[1]] = strings.Fields(m[2])
	}
	return fv
}

// field returns the value of key=value in family's ready line.
func (v *fdVictim) field(t *testing.T, family, key string) string {
	t.Helper()
	for _, f := range v.ready[family] {
		if k, val, ok := strings.Cut(f, "="); ok && k == key {
			return val
		}
	}
	t.Fatalf("no %s= in the ready line of %s: %v", key, family, v.ready[family])
	return ""
}

// roundTrip dumps the victim (killing it), restores it detached (lazily if lazy), and waits until the
// restored process has ticked five more times; it returns the output up to the dump.
func roundTrip(t *testing.T, v *fdVictim, lazy bool, dumpArgs ...string) (dir, before string) {
	t.Helper()
	dir = t.TempDir()
	dump(t, v.Pid, dir, dumpArgs...)
	st, err := v.Wait(goneTimeout)
	if err != nil {
		t.Fatalf("after dump: %v", err)
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("victim ended with %v after the dump; want it killed", st)
	}
	if err := testutil.WaitPidGone(v.Pid, goneTimeout); err != nil {
		t.Fatal(err)
	}
	before = v.Output()
	requireNoFail(t, before)
	last := lastNumber(t, before, tickRe)
	if lazy {
		restoreLazyDetached(t, dir, v.Victim)
	} else {
		restoreDetached(t, dir, v.Victim)
	}
	waitRestored(t, v.Victim, lineRe(`^tick %d$`, last+5))
	out := v.Output()
	if !strings.HasPrefix(out, before) {
		t.Fatalf("restored output does not continue the dumped one\nbefore:\n%s\nafter:\n%s", testutil.Tail(before, 5), testutil.Tail(out, 10))
	}
	requireNoFail(t, out)
	requireConsecutive(t, "tick", numbers(t, out, tickRe), 0, last+6)
	return dir, before
}

// restoreLazyDetached is restoreDetached with --lazy-pages and a lazy-pages daemon serving dir.
func restoreLazyDetached(t *testing.T, dir string, v *testutil.Victim) {
	t.Helper()
	work := t.TempDir()
	pidfile := filepath.Join(work, "lp.pid")
	if _, stderr, code := testutil.Lazyr(t, "lazy-pages", "-D", dir, "-W", work, "--daemon", "--pidfile", pidfile,
		"-o", filepath.Join(work, "lp.log"), "-v", "4"); code != 0 {
		t.Fatalf("lazy-pages: exit %d: %s", code, stderr)
	}
	if b, err := os.ReadFile(pidfile); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			testutil.KillAtCleanup(t, pid)
		}
	}
	log := filepath.Join(work, "restore.log")
	_, stderr, code := testutil.Lazyr(t, "restore", "-D", dir, "-d", "--lazy-pages", "-W", work, "-o", log, "-v", "4")
	if code != 0 {
		t.Fatalf("lazyr restore --lazy-pages: exit %d\nstderr:\n%s\nlog:\n%s\ndaemon log:\n%s", code, stderr, logTail(log), logTail(filepath.Join(work, "lp.log")))
	}
	testutil.KillAtCleanup(t, v.Pid)
}

func TestFdFifo(t *testing.T) {
	testutil.RequireRoot(t)
	for _, lazy := range []bool{false, true} {
		t.Run(mode(lazy), func(t *testing.T) {
			v := startFdVictim(t, "fifo")
			dir, _ := roundTrip(t, v, lazy)
			requireImage(t, dir, "fifo-data.img")
		})
	}
}

func TestFdUnix(t *testing.T) {
	testutil.RequireRoot(t)
	for _, lazy := range []bool{false, true} {
		t.Run(mode(lazy), func(t *testing.T) {
			v := startFdVictim(t, "unix")
			dir, _ := roundTrip(t, v, lazy)
			requireImage(t, dir, "sk-queues.img")
			pingUnix(t, v, v.field(t, "unix", "listen"))
		})
	}
}

func TestFdEvent(t *testing.T) {
	testutil.RequireRoot(t)
	for _, lazy := range []bool{false, true} {
		t.Run(mode(lazy), func(t *testing.T) {
			v := startFdVictim(t, "event")
			roundTrip(t, v, lazy)
			signalVictim(t, v)
		})
	}
}

func TestFdInotify(t *testing.T) {
	testutil.RequireRoot(t)
	v := startFdVictim(t, "inotify")
	roundTrip(t, v, false)
	touchWatched(t, v)
}

func TestFdShm(t *testing.T) {
	testutil.RequireRoot(t)
	for _, lazy := range []bool{false, true} {
		t.Run(mode(lazy), func(t *testing.T) {
			v := startFdVictim(t, "shm")
			mapsBefore := sharedMappings(t, v.Pid)
			dir, _ := roundTrip(t, v, lazy)
			requireImage(t, dir, "memfd.img")
			if got := sharedMappings(t, v.Pid); got != mapsBefore {
				t.Errorf("shared mappings after restore:\n%s\nbefore:\n%s", got, mapsBefore)
			}
		})
	}
}

func TestFdGhost(t *testing.T) {
	testutil.RequireRoot(t)
	v := startFdVictim(t, "ghost")
	dir, _ := roundTrip(t, v, false)
	// 8 MiB file, 4 KiB of data in every 8 KiB: only the data goes into the images.
	paths, err := filepath.Glob(filepath.Join(dir, "ghost-file-*.img"))
	if err != nil || len(paths) != 2 {
		t.Fatalf("ghost images: %v (%v), want two (the sparse file and the mapped one)", paths, err)
	}
	var biggest int64
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		biggest = max(biggest, st.Size())
	}
	t.Logf("sparse 8 MiB ghost file: %d bytes of images", biggest)
	if biggest < 4<<20 || biggest > 4<<20+64<<10 {
		t.Errorf("the sparse ghost file takes %d bytes of images, want about 4 MiB (its data, not its holes)", biggest)
	}
}

func TestFdPty(t *testing.T) {
	testutil.RequireRoot(t)
	v := startFdVictim(t, "pty")
	roundTrip(t, v, false)
	slave := v.field(t, "pty", "slave")
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", v.Pid, slave))
	if want := "/dev/pts/" + v.field(t, "pty", "index"); err != nil || link != want {
		t.Errorf("restored pty slave fd %s is %q (%v), want %s", slave, link, err, want)
	}
}

func TestFdLocks(t *testing.T) {
	testutil.RequireRoot(t)
	v := startFdVictim(t, "locks")
	requireLocks(t, v) // the check itself sees the victim's locks
	roundTrip(t, v, false)
	requireLocks(t, v)
}

// TestFdAll: every family at once, eagerly and lazily restored.
func TestFdAll(t *testing.T) {
	testutil.RequireRoot(t)
	for _, lazy := range []bool{false, true} {
		t.Run(mode(lazy), func(t *testing.T) {
			v := startFdVictim(t, "all")
			dir, _ := roundTrip(t, v, lazy)
			if !lazy {
				requireCritDecodes(t, dir)
			}
			pingUnix(t, v, v.field(t, "unix", "listen"))
			signalVictim(t, v)
			touchWatched(t, v)
			requireLocks(t, v)
			requireNoFail(t, v.Output())
		})
	}
}

func mode(lazy bool) string {
	if lazy {
		return "lazy"
	}
	return "eager"
}

func requireImage(t *testing.T, dir, name string) {
	t.Helper()
	if _, err := decodeImage(filepath.Join(dir, name)); err != nil {
		t.Errorf("%s: %v", name, err)
	}
}

// pingUnix connects to the restored victim's listener and expects an answer.
func pingUnix(t *testing.T, v *fdVictim, path string) {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		t.Fatalf("connect to the restored listener %s: %v", path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(outputTimeout))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "pong\n" {
		t.Fatalf("restored listener answered %q (%v), want pong", buf[:n], err)
	}
	waitRestored(t, v.Victim, lineRe(`^unix served a client$`))
}

// signalVictim sends SIGUSR1, which the victim blocks and reads through its signalfd.
func signalVictim(t *testing.T, v *fdVictim) {
	t.Helper()
	if err := unix.Kill(v.Pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitRestored(t, v.Victim, lineRe(`^signal %d from %d$`, unix.SIGUSR1, os.Getpid()))
}

// touchWatched makes inotify events the restored watches must report with their dumped descriptors.
func touchWatched(t *testing.T, v *fdVictim) {
	t.Helper()
	wdDir := v.field(t, "inotify", "wd_dir")
	name := filepath.Join(v.field(t, "inotify", "dir"), "after-restore")
	if err := os.WriteFile(name, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitRestored(t, v.Victim, lineRe(`^inotify wd=%s mask=0x100 name=after-restore$`, wdDir))
	wdFile := v.field(t, "inotify", "wd_file")
	if err := os.WriteFile(filepath.Join(v.dir, "file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitRestored(t, v.Victim, lineRe(`^inotify wd=%s mask=0x2 name=$`, wdFile))
}

// requireLocks checks from the test process that the victim holds its three locks.
func requireLocks(t *testing.T, v *fdVictim) {
	t.Helper()
	open := func(name string) *os.File {
		f, err := os.OpenFile(filepath.Join(v.dir, name), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	f := open("lock-flock")
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Errorf("flock on lock-flock: %v, want EWOULDBLOCK (held by the victim)", err)
	}
	p := open("lock-posix")
	defer p.Close()
	for _, c := range []struct {
		start int64
		typ   int16
	}{{15, unix.F_WRLCK}, {200, unix.F_RDLCK}, {50, unix.F_UNLCK}} {
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: c.start, Len: 1}
		if err := unix.FcntlFlock(p.Fd(), unix.F_GETLK, &lk); err != nil {
			t.Fatal(err)
		}
		if lk.Type != c.typ || (c.typ != unix.F_UNLCK && int(lk.Pid) != v.Pid) {
			t.Errorf("lock-posix byte %d: lock type %d by %d, want type %d by %d", c.start, lk.Type, lk.Pid, c.typ, v.Pid)
		}
	}
	o := open("lock-ofd")
	defer o.Close()
	lk := unix.Flock_t{Type: unix.F_RDLCK, Start: 2, Len: 1}
	if err := unix.FcntlFlock(o.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		t.Fatal(err)
	}
	if lk.Type != unix.F_WRLCK {
		t.Errorf("lock-ofd: lock type %d, want an OFD write lock (%d)", lk.Type, unix.F_WRLCK)
	}
}

// sharedMappings lists the shared memory mappings of pid (address, protection, offset and kind, not
// the inode numbers, which a restore changes).
func sharedMappings(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 6 && strings.HasSuffix(f[1], "s") && (strings.HasPrefix(f[5], "/memfd:") || f[5] == "/dev/zero") {
			out = append(out, strings.Join([]string{f[0], f[1], f[2], strings.Join(f[5:], " ")}, " "))
		}
	}
	return strings.Join(out, "\n")
}

// requireCritDecodes checks that go-criu's crit decodes every image of dir (pages files are raw data).
func requireCritDecodes(t *testing.T, dir string) {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.img"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range paths {
		name := filepath.Base(p)
		if strings.HasPrefix(name, "pages-") {
			continue
		}
		if _, err := decodeImage(p); err != nil {
			t.Errorf("crit cannot decode %s: %v", name, err)
		}
		names = append(names, name)
	}
	for _, want := range []string{"fifo-data.img", "sk-queues.img", "memfd.img", "remap-fpath.img", "tty-info.img", "filelocks.img"} {
		if !slices.Contains(names, want) {
			t.Errorf("no %s among the images: %v", want, names)
		}
	}
	t.Logf("crit decoded %d images: %v", len(names), names)
}

// TestFdRefused: what lazyr cannot restore yet is refused by name, and the process runs on untouched.
func TestFdRefused(t *testing.T) {
	testutil.RequireRoot(t)
	sock := filepath.Join(t.TempDir(), "outside.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	for _, c := range []struct {
		name string
		args []string
		want *regexp.Regexp
	}{
		{"extunix", []string{"extunix", sock}, regexp.MustCompile(`(?i)unix socket \d+ is connected to socket \d+ outside`)},
		{"pidfd", []string{"pidfd"}, regexp.MustCompile(`anon_inode:\[pidfd\]`)},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := testutil.StartVictim(t, testutil.BuildVictim(t, "fd_refused"), c.args...)
			v.WaitOutput(lineRe(`^tick 1\b`), outputTimeout)
			_, stderr, code := testutil.Lazyr(t, "dump", "-t", strconv.Itoa(v.Pid), "-D", t.TempDir())
			requireFailure(t, "dump", stderr, code, c.want, regexp.MustCompile(`not supported`))
			requireUndisturbed(t, v)
		})
	}
}
