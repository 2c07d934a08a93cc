package restore

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/compel"
)

// kindState returns the state an fd kind keeps for one restore under key, creating it on first use.
func kindState[T any](rf *fileRestore, key string) *T {
	if rf.kinds == nil {
		rf.kinds = map[string]any{}
	}
	if s, ok := rf.kinds[key].(*T); ok {
		return s
	}
	s := new(T)
	rf.kinds[key] = s
	return s
}

// taskDup returns a duplicate of the task's fd in lazyr (pidfd_getfd): the same open file description,
// to write queued data into a socket or a pipe from outside.
func taskDup(pid int, fd uint64) (*os.File, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	nfd, err := unix.PidfdGetfd(pidfd, int(fd), 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_getfd %d of %d: %w", fd, pid, err)
	}
	return os.NewFile(uintptr(nfd), fmt.Sprintf("fd %d of %d", fd, pid)), nil
}

// fdPair runs a syscall that stores two int fds at its pointer argument (pipe2, socketpair); ptrArg is
// that argument's index in args and is filled in with the scratch address.
func fdPair(t *compel.Task, nr uintptr, ptrArg int, args ...uint64) ([2]uint64, error) {
	addr, _ := t.Scratch()
	args[ptrArg] = addr
	if _, err := t.Syscall(nr, args...); err != nil {
		return [2]uint64{}, err
	}
	b, err := t.ReadScratch(0, 8)
	if err != nil {
		return [2]uint64{}, err
	}
	le := binary.LittleEndian
	return [2]uint64{uint64(le.Uint32(b)), uint64(le.Uint32(b[4:]))}, nil
}

// statusFlags are the file status flags F_SETFL can change.
const statusFlags = unix.O_NONBLOCK | unix.O_APPEND | unix.O_ASYNC | unix.O_DIRECT | unix.O_NOATIME

// setStatusFlags sets the fd's changeable status flags to exactly those of flags (setFileFlags only adds).
func setStatusFlags(t *compel.Task, fd uint64, flags uint32) error {
	if _, err := t.Syscall(unix.SYS_FCNTL, fd, unix.F_SETFL, uint64(flags&statusFlags)); err != nil {
		return fmt.Errorf("fcntl(F_SETFL %#o): %w", flags&statusFlags, err)
	}
	return nil
}

// closeInTask closes a task fd, for error paths that already have an error to report.
func closeInTask(t *compel.Task, fd uint64) { _, _ = t.Syscall(unix.SYS_CLOSE, fd) }

// reopenInTask opens another open file description of what the task's fd refers to, through
// /proc/self/fd (files that can be reopened: FIFOs, memfds, regular and deleted files, pty slaves).
func reopenInTask(t *compel.Task, fd uint64, flags uint32) (uint64, error) {
	return openInTask(t, fmt.Sprintf("/proc/self/fd/%d", fd), flags)
}

// parkHelper moves an fd a kind keeps for itself during the restore (and closes in its finish) to a
// parking number, where installing the dumped fds cannot overwrite it.
func (rf *fileRestore) parkHelper(fd uint64) (uint64, error) {
	if _, err := rf.t.Syscall(unix.SYS_DUP3, fd, rf.park, unix.O_CLOEXEC); err != nil {
		closeInTask(rf.t, fd)
		return 0, fmt.Errorf("park fd: %w", err)
	}
	closeInTask(rf.t, fd)
	rf.park++
	return rf.park - 1, nil
}
