package restore

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/compel"
)

// sharedFiles lets the processes of a tree share open files the way fork made them share: a file created
// in one process is installed in the others with pidfd_getfd, which gives the same open file description
// (shared offset and flags), not a second open. Processes are built one after the other, so the first one
// that needs a file creates it and the later ones import it.
type sharedFiles struct {
	byID   map[uint32]remoteFd    // file id -> a process holding it
	pipes  map[uint32][2]remoteFd // pipe id -> holders of its read and write ends
	strays []remoteFd             // fds kept open only so that later processes can import them
}

// remoteFd is an fd in a restored task; vpid is that task's pid inside the tree's namespace (what a
// restored task passes to pidfd_open).
type remoteFd struct {
	t    *compel.Task
	vpid int
	fd   uint64
}

func newSharedFiles() *sharedFiles {
	return &sharedFiles{byID: map[uint32]remoteFd{}, pipes: map[uint32][2]remoteFd{}}
}

// importFd makes t hold the open file description that from holds, and returns t's fd (O_CLOEXEC, to be
// parked and installed like any other).
// Preconditions: t still has root's credentials (pidfd_getfd needs ptrace rights over the holder).
func importFd(t *compel.Task, from remoteFd) (uint64, error) {
	pfd, err := t.Syscall(unix.SYS_PIDFD_OPEN, uint64(from.vpid), 0)
	if err != nil {
		return 0, fmt.Errorf("pidfd_open %d: %w", from.vpid, err)
	}
	fd, err := t.Syscall(unix.SYS_PIDFD_GETFD, pfd, from.fd, 0)
	if _, cerr := t.Syscall(unix.SYS_CLOSE, pfd); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("pidfd_getfd fd %d of %d: %w", from.fd, from.t.Pid, err)
	}
	return fd, nil
}

// restoreUTS sets the host and domain name of the tree's fresh UTS namespace.
func restoreUTS(t *compel.Task, u interface {
	GetNodename() string
	GetDomainname() string
}) error {
	for _, c := range []struct {
		nr  uintptr
		val string
	}{{unix.SYS_SETHOSTNAME, u.GetNodename()}, {unix.SYS_SETDOMAINNAME, u.GetDomainname()}} {
		addr, err := t.WriteScratch(0, []byte(c.val))
		if err != nil {
			return err
		}
		if _, err := t.Syscall(c.nr, addr, uint64(len(c.val))); err != nil {
			return fmt.Errorf("set host/domain name %q: %w", c.val, err)
		}
	}
	return nil
}

// closeStrays closes the fds kept only for sharing, once every process has its files.
func (s *sharedFiles) closeStrays() error {
	for _, r := range s.strays {
		if _, err := r.t.Syscall(unix.SYS_CLOSE, r.fd); err != nil {
			return fmt.Errorf("close shared fd %d of %d: %w", r.fd, r.t.Pid, err)
		}
	}
	s.strays = nil
	return nil
}
