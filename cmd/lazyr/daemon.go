package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// daemonEnv marks a child started by daemonize: its stderr is a pipe to the parent until it is ready.
const daemonEnv = "LAZYR_DAEMONIZED"

// daemonize re-executes lazyr with the same arguments minus --daemon, in a new session with stdin and
// stdout on /dev/null, and waits until the child reports readiness through a pipe given as --status-fd.
// Until then the child's stderr comes back through a pipe, so that a daemon that fails to start says why
// on the caller's terminal; once ready, the child puts /dev/null there (signalReady). The parent then
// writes the pidfile and the caller's own --status-fd, and returns the exit code for the parent.
func daemonize(args []string, pidFile string, statusFd int) int {
	var childArgs []string
	for _, a := range args {
		if a == "--daemon" || a == "-daemon" {
			continue
		}
		childArgs = append(childArgs, a)
	}
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "lazyr: daemon: %v\n", err)
		return 1
	}
	exe, err := os.Executable()
	if err != nil {
		exe = "/proc/self/exe"
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "lazyr: daemon: %v\n", err)
		return 1
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "lazyr: daemon: %v\n", err)
		return 1
	}
	cmd := exec.Command(exe, append(append([]string{os.Args[1]}, childArgs...), "--status-fd", "3")...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, errW
	cmd.Env = append(os.Environ(), daemonEnv+"=1")
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "lazyr: daemon: %v\n", err)
		return 1
	}
	w.Close()
	errW.Close()
	devnull.Close()
	// Drained all along: a child that logs more than a pipe holds before it is ready must not block.
	said := &tail{max: 64 << 10}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		_, _ = io.Copy(said, errR)
	}()
	defer func() {
		_ = errR.SetReadDeadline(time.Now()) // ends the drain even if a process the child started holds the pipe
		<-drained
		errR.Close()
	}()
	b := make([]byte, 1)
	if _, err := io.ReadFull(r, b); err != nil {
		// The child exited before it was ready: pass on what it said.
		st, _ := cmd.Process.Wait()
		select {
		case <-drained:
		case <-time.After(2 * time.Second):
		}
		os.Stderr.Write(said.bytes())
		fmt.Fprintf(os.Stderr, "lazyr: daemon failed to start (%v)\n", st)
		return 1
	}
	if pidFile != "" {
		if err := writeFileAtomic(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n")); err != nil {
			fmt.Fprintf(os.Stderr, "lazyr: pidfile: %v\n", err)
			return 1
		}
	}
	signalReady(statusFd)
	return 0
}

// signalReady writes a zero byte to the status fd and closes it, as CRIU's daemons do. A child of
// daemonize first puts /dev/null on its stderr: the pipe to its parent goes away with the parent.
func signalReady(fd int) {
	if os.Getenv(daemonEnv) == "1" {
		if devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0); err == nil {
			_ = unix.Dup2(int(devnull.Fd()), 2)
			devnull.Close()
		}
	}
	if fd < 0 {
		return
	}
	f := os.NewFile(uintptr(fd), "status-fd")
	f.Write([]byte{0})
	f.Close()
}

// writeFileAtomic writes data next to path and renames it into place, so that a reader polling for path
// (a test, a script waiting for the statistics) never sees half of it.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// tail keeps the last max bytes written to it. Safe for one writer and a reader after the writer is done
// (or concurrently: it is guarded).
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tail) bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]byte(nil), t.b...)
}
