package uffd

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// FD is a userfaultfd. It is a thin handle: methods are safe to call from
// several goroutines as far as the kernel is concerned, but Close must not
// race with other calls.
type FD struct {
	fd int
}

// devPath is the character device that hands out userfaultfds to callers
// allowed to open it (Linux 6.1+), even when the syscall is restricted by
// vm.unprivileged_userfaultfd.
const devPath = "/dev/userfaultfd"

// New creates a userfaultfd with userfaultfd(2). flags are the syscall's
// (unix.O_CLOEXEC, unix.O_NONBLOCK, UserModeOnly). When the syscall is
// refused with EPERM (vm.unprivileged_userfaultfd=0 without CAP_SYS_PTRACE)
// it falls back to /dev/userfaultfd, whose access is governed by file
// permissions instead.
func New(flags int) (*FD, error) {
	fd, err := newSyscall(flags)
	if err == nil {
		return &FD{fd: fd}, nil
	}
	if !errors.Is(err, unix.EPERM) {
		return nil, err
	}
	fd, devErr := newDev(flags)
	if devErr != nil {
		return nil, fmt.Errorf("%w (fallback: %w)", err, devErr)
	}
	return &FD{fd: fd}, nil
}

func newSyscall(flags int) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, uintptr(flags), 0, 0)
	if errno != 0 {
		return -1, fmt.Errorf("userfaultfd(%#x): %w", flags, errno)
	}
	return int(r), nil
}

func newDev(flags int) (int, error) {
	dev, err := unix.Open(devPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: devPath, Err: err}
	}
	defer unix.Close(dev)
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(dev), ioctlNew, uintptr(flags))
	if errno != 0 {
		return -1, fmt.Errorf("ioctl(%s, USERFAULTFD_IOC_NEW, %#x): %w", devPath, flags, errno)
	}
	return int(r), nil
}

// FromFd wraps a userfaultfd obtained elsewhere (for example with
// pidfd_getfd from the task that created it). The FD takes ownership: Close
// closes fd.
func FromFd(fd int) *FD { return &FD{fd: fd} }

// Fd returns the file descriptor number.
func (u *FD) Fd() int { return u.fd }

// Close closes the fd. When this was the last reference to the
// userfaultfd, the kernel unregisters all its ranges and wakes every
// blocked fault: missing pages then read as zero. Callers serving another
// process must make sure that cannot happen while pages are still missing.
func (u *FD) Close() error {
	if u.fd < 0 {
		return nil
	}
	err := unix.Close(u.fd)
	u.fd = -1
	if err != nil {
		return fmt.Errorf("close userfaultfd: %w", err)
	}
	return nil
}

// SetNonblock switches O_NONBLOCK on the open file description. ReadMsgs
// relies on it. The flag is shared by every dup of the fd.
func (u *FD) SetNonblock(on bool) error {
	if err := unix.SetNonblock(u.fd, on); err != nil {
		return fmt.Errorf("userfaultfd %d: set O_NONBLOCK: %w", u.fd, err)
	}
	return nil
}

// Alive reports whether the mm behind the fd still exists, without
// changing anything. Kernel quirk used: UFFDIO_WRITEPROTECT takes a
// reference on the mm first (ESRCH once the task exited or exec'd) and only
// then looks for a WP-registered VMA (ENOENT when there is none). So
// clearing write protection on one page at addr is a no-op probe as long as
// addr is a user address (at or above vm.mmap_min_addr) in no range
// registered with ModeWP.
func (u *FD) Alive(addr uint64) (bool, error) {
	err := u.WriteProtect(addr&^(pageSize-1), pageSize, false)
	switch {
	case err == nil, errors.Is(err, unix.ENOENT), errors.Is(err, unix.EAGAIN):
		// EAGAIN: an mm change is in flight, so the mm is there.
		return true, nil
	case errors.Is(err, unix.ESRCH):
		return false, nil
	}
	return false, err
}

const pageSize = 4096
