package procfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func fdTarget(fds []Fd, n int) (string, bool) {
	for _, f := range fds {
		if f.Num == n {
			return f.Target, true
		}
	}
	return "", false
}

func TestFdsSelf(t *testing.T) {
	name := filepath.Join(t.TempDir(), "f")
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("hello"); err != nil {
		t.Fatal(err)
	}
	efd, err := unix.Eventfd(42, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	var p [2]int
	if err := unix.Pipe2(p[:], 0); err != nil { // no O_CLOEXEC on purpose
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])

	fds, err := ListFds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSortedFunc(fds, func(a, b Fd) int { return a.Num - b.Num }) {
		t.Errorf("not sorted: %v", fds)
	}
	if got, _ := fdTarget(fds, int(f.Fd())); got != name {
		t.Errorf("fd %d -> %q, want %q", f.Fd(), got, name)
	}
	if got, _ := fdTarget(fds, efd); got != "anon_inode:[eventfd]" {
		t.Errorf("eventfd -> %q", got)
	}
	var st unix.Stat_t
	if err := unix.Fstat(p[0], &st); err != nil {
		t.Fatal(err)
	}
	if got, _ := fdTarget(fds, p[0]); got != fmt.Sprintf("pipe:[%d]", st.Ino) {
		t.Errorf("pipe -> %q, ino %d", got, st.Ino)
	}

	fi, err := ReadFdInfo(os.Getpid(), int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if fi.Pos != 5 || fi.Ino != st.Ino || fi.MntID <= 0 ||
		fi.Flags&unix.O_ACCMODE != unix.O_RDWR || fi.Flags&unix.O_APPEND == 0 || fi.Flags&unix.O_CLOEXEC == 0 {
		t.Errorf("file fdinfo %+v (ino %d)", fi, st.Ino)
	}

	fi, err = ReadFdInfo(os.Getpid(), efd)
	if err != nil {
		t.Fatal(err)
	}
	var count uint64 = ^uint64(0)
	for _, l := range fi.Lines {
		if v, ok := strings.CutPrefix(l, "eventfd-count:"); ok {
			count, err = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if count != 42 || fi.Flags&unix.O_CLOEXEC == 0 {
		t.Errorf("eventfd fdinfo %+v: count %d", fi, count)
	}

	fi, err = ReadFdInfo(os.Getpid(), p[1])
	if err != nil {
		t.Fatal(err)
	}
	if fi.Flags&unix.O_CLOEXEC != 0 || fi.Flags&unix.O_ACCMODE != unix.O_WRONLY {
		t.Errorf("pipe write end flags %o", fi.Flags)
	}
}

func TestFdsChild(t *testing.T) {
	cmd := startSleep(t, "", "")
	fds, err := ListFds(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// os/exec connects a nil Stdin/Stdout/Stderr to /dev/null. Any other
	// fd must be one of ours without O_CLOEXEC (inherited from whatever
	// started the test), with the same target.
	if len(fds) < 3 || !slices.Equal(fds[:3], []Fd{{0, "/dev/null"}, {1, "/dev/null"}, {2, "/dev/null"}}) {
		t.Errorf("child fds %v, want /dev/null on 0-2", fds)
	}
	for _, fd := range fds[min(3, len(fds)):] {
		fi, err := ReadFdInfo(os.Getpid(), fd.Num)
		if err != nil {
			t.Errorf("child fd %v is not ours: %v", fd, err)
			continue
		}
		mine, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd.Num))
		if err != nil || mine != fd.Target || fi.Flags&unix.O_CLOEXEC != 0 {
			t.Errorf("child fd %v: ours is %q flags %o", fd, mine, fi.Flags)
		}
	}
	if _, err := ReadFdInfo(cmd.Process.Pid, 1000); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("closed fd: %v", err)
	}
	dead := deadPid(t)
	if _, err := ListFds(dead); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dead pid: %v", err)
	}
}

func TestParseFdInfo(t *testing.T) {
	fi, err := parseFdInfo(strings.NewReader("pos:\t-0\nflags:\t02004002\nmnt_id:\t30\nino:\t99\ntfd:        5 events:       19 data:                5  pos:0 ino:1a sdev:e\nlock:\t1: FLOCK  ADVISORY  WRITE 1 00:0e:99 0 EOF\n"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Pos != 0 || fi.Flags != 0o2004002 || fi.MntID != 30 || fi.Ino != 99 || len(fi.Lines) != 2 ||
		!strings.HasPrefix(fi.Lines[0], "tfd:") || !strings.HasPrefix(fi.Lines[1], "lock:") {
		t.Errorf("%+v", fi)
	}
	for _, bad := range []string{"pos:\tx\n", "flags:\t8\n", "ino:\t-1\n"} {
		if _, err := parseFdInfo(strings.NewReader(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: err %v", bad, err)
		}
	}
}
