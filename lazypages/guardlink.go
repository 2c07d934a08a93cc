package lazypages

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// guardLink is the daemon's end of the guard.
type guardLink struct {
	fd     int
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // from Wait, valid once exited is closed
}

// startGuard starts the guard process and waits for its hello, so a
// binary that does not dispatch GuardArg is caught before any process is
// accepted.
func startGuard(exe string) (*guardLink, error) {
	if exe == "" {
		exe = "/proc/self/exe"
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: socketpair: %w", ErrGuard, err)
	}
	theirs := os.NewFile(uintptr(fds[1]), "lazy-pages-guard")
	cmd := &exec.Cmd{
		Path:       exe,
		Args:       []string{os.Args[0], GuardArg},
		ExtraFiles: []*os.File{theirs},
		// Its own process group: signals aimed at the daemon's group
		// (a terminal's ^C) do not reach it.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("%w: start %s: %w", ErrGuard, exe, err)
	}
	g := &guardLink{fd: fds[0], cmd: cmd, exited: make(chan struct{})}
	go func() {
		g.err = cmd.Wait()
		close(g.exited)
	}()
	if err := g.waitHello(); err != nil {
		g.close()
		cmd.Process.Kill()
		<-g.exited
		return nil, fmt.Errorf("%w: %s %s did not start as the guard (does its main call lazypages.GuardMain?): %w",
			ErrGuard, exe, GuardArg, err)
	}
	return g, nil
}

func (g *guardLink) waitHello() error {
	deadline := time.Now().Add(guardStartTimeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return unix.ETIMEDOUT
		}
		pfd := []unix.PollFd{{Fd: int32(g.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, int(left/time.Millisecond)+1)
		if err == unix.EINTR || (err == nil && n == 0) {
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	m, fds, err := recvMsg(g.fd, make([]byte, maxMsgSize), oobSpace())
	if err != nil {
		return err
	}
	closeAll(fds)
	if m.Type != msgGuardHello {
		return fmt.Errorf("%w: got %v", errProto, m.Type)
	}
	return nil
}

func (g *guardLink) send(m *message, fds ...int) error {
	if g.fd < 0 {
		return errors.New("guard link closed")
	}
	return sendMsg(g.fd, m, fds...)
}

// close closes the daemon's end: without a "finished" sent first, the
// guard takes it as the daemon's death and kills.
func (g *guardLink) close() {
	if g.fd >= 0 {
		unix.Close(g.fd)
		g.fd = -1
	}
}

// wait waits for the guard to exit; after the timeout it is killed (it
// has done its work by then or is stuck).
func (g *guardLink) wait(timeout time.Duration) error {
	select {
	case <-g.exited:
	case <-time.After(timeout):
		g.cmd.Process.Kill()
		<-g.exited
		return fmt.Errorf("guard did not exit within %v", timeout)
	}
	return g.err
}

func (g *guardLink) exitStatus() string {
	select {
	case <-g.exited:
		if g.err == nil {
			return "exit 0"
		}
		return g.err.Error()
	case <-time.After(100 * time.Millisecond):
		return "still running"
	}
}
