package uffd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var (
	faulterOnce sync.Once
	faulterBin  string
	faulterErr  error
	faulterDir  string
)

func buildFaulter(t *testing.T) string {
	t.Helper()
	faulterOnce.Do(func() {
		gcc, err := exec.LookPath("gcc")
		if err != nil {
			faulterErr = err
			return
		}
		faulterBin = filepath.Join(faulterDir, "faulter")
		if out, err := exec.Command(gcc, "-O1", "-o", faulterBin, "testdata/faulter.c").CombinedOutput(); err != nil {
			faulterErr = fmt.Errorf("gcc: %v\n%s", err, out)
		}
	})
	if faulterErr != nil {
		t.Fatalf("building faulter: %v", faulterErr)
	}
	return faulterBin
}

// faulter is a running testdata/faulter.c whose userfaultfd the test owns.
type faulter struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
	pidfd int
	u     *FD
	addr  uint64
}

func startFaulter(t *testing.T, mode string, features uint64) *faulter {
	t.Helper()
	cmd := exec.Command(buildFaulter(t), mode)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &faulter{cmd: cmd, in: in, out: bufio.NewReader(stdout), pidfd: -1}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if f.u != nil {
			f.u.Close()
		}
		if f.pidfd >= 0 {
			unix.Close(f.pidfd)
		}
	})
	var fdnum int
	if _, err := fmt.Sscanf(f.line(t), "%x %d", &f.addr, &fdnum); err != nil {
		t.Fatalf("faulter hello: %v", err)
	}
	if f.pidfd, err = unix.PidfdOpen(cmd.Process.Pid, 0); err != nil {
		t.Fatalf("pidfd_open: %v", err)
	}
	fd, err := unix.PidfdGetfd(f.pidfd, fdnum, 0)
	if err != nil {
		t.Fatalf("pidfd_getfd: %v", err)
	}
	f.u = FromFd(fd)
	if err := f.u.SetNonblock(true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.u.API(features); err != nil {
		t.Fatal(err)
	}
	if _, err := f.u.Register(f.addr, 4*pageSize, ModeMissing); err != nil {
		t.Fatalf("Register in the other process: %v", err)
	}
	return f
}

func (f *faulter) line(t *testing.T) string {
	t.Helper()
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := f.out.ReadString('\n')
		ch <- res{s, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("faulter output: %v", r.err)
		}
		return strings.TrimSpace(r.s)
	case <-time.After(5 * time.Second):
		t.Fatal("faulter printed nothing for 5s")
	}
	return ""
}

func (f *faulter) goOn(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(f.in, "go\n"); err != nil {
		t.Fatal(err)
	}
}

// A userfaultfd pulled out of another process drives that process's mm,
// and DONTWAKE really leaves its thread asleep until Wake.
func TestForeignFdAndWake(t *testing.T) {
	f := startFaulter(t, "read", 0)
	if alive, err := f.u.Alive(f.addr); !alive || err != nil {
		t.Errorf("Alive on a live process = %v, %v", alive, err)
	}
	f.goOn(t)
	m := waitMsg(t, f.u)
	if m.Event != EventPagefault || m.Pagefault.Address != f.addr {
		t.Fatalf("message %v, want fault at %#x", m, f.addr)
	}
	if _, err := f.u.Copy(f.addr, pattern(3), CopyModeDontWake); err != nil {
		t.Fatal(err)
	}
	outc := make(chan string, 1)
	go func() { s, _ := f.out.ReadString('\n'); outc <- strings.TrimSpace(s) }()
	select {
	case s := <-outc:
		t.Fatalf("faulter printed %q before Wake", s)
	case <-time.After(100 * time.Millisecond):
	}
	if err := f.u.Wake(f.addr, pageSize); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-outc:
		if want := fmt.Sprint(pattern(3)[10]); s != want {
			t.Errorf("faulter read %s, want %s", s, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("faulter did not wake")
	}
	if err := f.cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	// Its mm is gone: ioctls that need it say ESRCH.
	if _, err := f.u.ZeroPage(f.addr+pageSize, pageSize, 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("ZeroPage after exit: %v, want ESRCH", err)
	}
	if alive, err := f.u.Alive(f.addr); alive || err != nil {
		t.Errorf("Alive after exit = %v, %v", alive, err)
	}
}

func TestForkEvent(t *testing.T) {
	f := startFaulter(t, "fork", FeatureEventFork)
	f.goOn(t)
	m := waitMsg(t, f.u)
	if m.Event != EventFork || m.Fork.UFD < 0 {
		t.Fatalf("message %v, want fork", m)
	}
	child := FromFd(m.Fork.UFD)
	defer child.Close()
	if err := child.SetNonblock(true); err != nil {
		t.Fatalf("fork ufd %d is not a usable fd: %v", m.Fork.UFD, err)
	}
	// The child's registration came with it: its fault arrives on the
	// new fd, not the parent's.
	cm := waitMsg(t, child)
	if cm.Event != EventPagefault || cm.Pagefault.Address != f.addr+pageSize {
		t.Fatalf("child message %v, want fault at %#x", cm, f.addr+pageSize)
	}
	if _, err := child.Copy(f.addr+pageSize, pattern(7), 0); err != nil {
		t.Fatal(err)
	}
	if got, want := f.line(t), fmt.Sprintf("child %d", pattern(7)[0]); got != want {
		t.Errorf("child printed %q, want %q", got, want)
	}
	pm := waitMsg(t, f.u)
	if pm.Event != EventPagefault || pm.Pagefault.Address != f.addr {
		t.Fatalf("parent message %v", pm)
	}
	if _, err := f.u.Copy(f.addr, pattern(9), 0); err != nil {
		t.Fatal(err)
	}
	if got, want := f.line(t), fmt.Sprintf("parent %d", pattern(9)[0]); got != want {
		t.Errorf("parent printed %q, want %q", got, want)
	}
}
