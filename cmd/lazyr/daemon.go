package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
)

// daemonize re-executes lazyr with the same arguments minus --daemon, in a new session with its stdio on
// /dev/null, and waits until the child reports readiness through a pipe given as --status-fd. It then
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
	cmd := exec.Command(exe, append(append([]string{os.Args[1]}, childArgs...), "--status-fd", "3")...)
	cmd.Stdin, cmd.Stdout = devnull, devnull
	cmd.Stderr = devnull
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "lazyr: daemon: %v\n", err)
		return 1
	}
	w.Close()
	devnull.Close()
	b := make([]byte, 1)
	if _, err := io.ReadFull(r, b); err != nil {
		// The child exited before it was ready; its error went to its log (-o).
		st, _ := cmd.Process.Wait()
		fmt.Fprintf(os.Stderr, "lazyr: daemon failed to start (%v); run without --daemon or with -o LOGFILE to see why\n", st)
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

// signalReady writes a zero byte to the status fd and closes it, as CRIU's daemons do.
func signalReady(fd int) {
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
