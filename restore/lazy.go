package restore

import (
	"errors"
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/compel"
	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/lazypages"
	"github.com/lazyr/lazyr/uffd"
)

// lazyHandoff hands the lazy memory of restored tasks to the lazy-pages daemon.
type lazyHandoff struct {
	c *lazypages.Client
}

// dialLazy connects to the daemon before anything is created; a daemon that serves another dump than
// the one in imagesDir refuses.
func dialLazy(workDir, imagesDir string) (*lazyHandoff, error) {
	id, err := images.DumpID(imagesDir)
	if err != nil {
		return nil, err
	}
	c, err := lazypages.DialImages(workDir, id)
	switch {
	case errors.Is(err, lazypages.ErrNoDaemon):
		return nil, fmt.Errorf("lazy restore needs 'lazyr lazy-pages -W %s' running: %w", workDir, err)
	case err != nil:
		return nil, err
	}
	return &lazyHandoff{c: c}, nil
}

// taskUffd makes the task create its own userfaultfd (so that it acts on the task's mm), pulls a copy out
// with pidfd_getfd, negotiates features, and closes the task's own fd: afterwards the fd lives only in
// lazyr and whoever it is handed to. It returns the uffd and a pidfd of the task.
// Preconditions: called from Tracer.Do; the task still has root's capabilities (userfaultfd needs
// CAP_SYS_PTRACE with vm.unprivileged_userfaultfd=0).
func taskUffd(t *compel.Task, features uint64) (*uffd.FD, int, error) {
	tfd, err := t.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK)
	if err != nil {
		return nil, -1, fmt.Errorf("userfaultfd in task: %w", err)
	}
	defer t.Syscall(unix.SYS_CLOSE, tfd)
	pidfd, err := unix.PidfdOpen(t.Pid, 0)
	if err != nil {
		return nil, -1, fmt.Errorf("pidfd_open %d: %w", t.Pid, err)
	}
	fd, err := unix.PidfdGetfd(pidfd, int(tfd), 0)
	if err != nil {
		unix.Close(pidfd)
		return nil, -1, fmt.Errorf("pidfd_getfd: %w", err)
	}
	u := uffd.FromFd(fd)
	if _, _, err := u.API(features); err != nil {
		u.Close()
		unix.Close(pidfd)
		return nil, -1, err
	}
	return u, pidfd, nil
}

// register registers the lazy mappings that have pages in the image and hands them to the daemon. It
// returns the number of pages left to the daemon.
func (l *lazyHandoff) register(t *compel.Task, p *plan, isLazy func(*vma.VmaEntry) bool) (uint64, error) {
	var ranges []lazypages.Range
	var pages uint64
	for _, v := range p.vmas {
		if !isLazy(v) {
			continue
		}
		n := uint64(0)
		for _, e := range p.pagemap.Extents {
			if e.Flags&images.PELazy != 0 && e.Vaddr < v.GetEnd() && e.End() > v.GetStart() {
				n += (min(e.End(), v.GetEnd()) - max(e.Vaddr, v.GetStart())) / images.PageSize
			}
		}
		if n == 0 {
			continue // nothing dumped in it: it stays plain zero-filled memory
		}
		pages += n
		ranges = append(ranges, lazypages.Range{Start: v.GetStart(), Len: v.GetEnd() - v.GetStart()})
	}
	if len(ranges) == 0 {
		return 0, nil
	}
	u, pidfd, err := taskUffd(t, lazypages.RequiredFeatures)
	if err != nil {
		return 0, err
	}
	defer u.Close()
	defer unix.Close(pidfd)
	for _, r := range ranges {
		if _, err := u.Register(r.Start, r.Len, uffd.ModeMissing); err != nil {
			return 0, fmt.Errorf("register %#x-%#x with userfaultfd: %w", r.Start, r.Start+r.Len, err)
		}
	}
	if err := l.c.Register(p.pid, u.Fd(), pidfd, ranges); err != nil {
		return 0, fmt.Errorf("hand process %d to the lazy-pages daemon: %w", p.pid, err)
	}
	return pages, nil
}

// done tells the daemon that no more processes come.
func (l *lazyHandoff) done() error {
	if err := l.c.Done(); err != nil {
		return fmt.Errorf("lazy-pages daemon: %w", err)
	}
	return nil
}

func (l *lazyHandoff) close() { l.c.Close() }
