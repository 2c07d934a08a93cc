package kernel

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// ProbePidfdGetfd opens a pidfd for a child and duplicates the child's fd 0
// (/dev/null) into this process with pidfd_getfd, the way lazyr pulls a
// userfaultfd out of a restored task.
func ProbePidfdGetfd() error {
	cmd, err := startChild()
	if err != nil {
		return fmt.Errorf("pidfd_getfd: %w", err)
	}
	defer stopChild(cmd)

	pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		return missing("pidfd_open (Linux 5.3+)", err)
	}
	defer unix.Close(pidfd)
	// The new fd comes with O_CLOEXEC set by the kernel.
	fd, err := unix.PidfdGetfd(pidfd, 0, 0)
	if err != nil {
		return missing("pidfd_getfd (Linux 5.6+, needs ptrace access to the task)", err)
	}
	defer unix.Close(fd)

	var got, want unix.Stat_t
	if err := unix.Fstat(fd, &got); err != nil {
		return fmt.Errorf("pidfd_getfd: fstat: %w", err)
	}
	if err := unix.Stat("/dev/null", &want); err != nil {
		return fmt.Errorf("pidfd_getfd: stat /dev/null: %w", err)
	}
	if got.Rdev != want.Rdev || got.Ino != want.Ino {
		return fmt.Errorf("pidfd_getfd: got a different file than the child's /dev/null (rdev %#x ino %d)", got.Rdev, got.Ino)
	}
	return nil
}
