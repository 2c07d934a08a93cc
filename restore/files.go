package restore

import (
	"fmt"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/compel"
)

// fileRestore is the state of restoring one task's fds; fd kinds keep their own state in it.
type fileRestore struct {
	opts   *Options
	shared *sharedFiles // files shared with other processes of the tree
	t      *compel.Task
	p      *plan
	park   uint64            // next parking fd number
	parked map[uint32]uint64 // file id -> parking fd
	pipes  map[uint32]*pipeState
	kinds  map[string]any // state of the other fd kinds, by kind (see kindState)
}

// fdOpener restores one kind of file: it creates the file inside the task and returns the task's fd (any
// number: it is parked and later dup3()ed to the dumped numbers). Each kind lives in its own fd_*.go file.
type fdOpener interface {
	open(rf *fileRestore, f *fdinfo.FileEntry) (uint64, error)
}

// lateOpener is an fdOpener that runs after every other fd has its dumped number (an epoll instance
// needs the fds it watches).
type lateOpener interface {
	late() bool
}

// fdFinisher runs once every fd has its dumped number and the parking fds are closed (file locks, which
// name the fds they are taken on).
type fdFinisher interface {
	finish(rf *fileRestore) error
}

var (
	fdOpeners   = map[fdinfo.FdTypes]fdOpener{}
	fdFinishers []fdFinisher
)

func registerFdOpener(t fdinfo.FdTypes, o fdOpener) { fdOpeners[t] = o }

func registerFdFinisher(f fdFinisher) { fdFinishers = append(fdFinishers, f) }

// restoreFiles recreates the task's file descriptors. Each open file is created once, parked on a high fd
// number (so that creating the next one cannot take a number that is still needed), then dup3()ed to
// every fd that refers to it, and the parking fds are closed.
func restoreFiles(t *compel.Task, p *plan, opts *Options, shared *sharedFiles) error {
	maxFd := uint32(0)
	for _, fd := range p.fds {
		if fd.GetFd() > maxFd {
			maxFd = fd.GetFd()
		}
	}
	rf := &fileRestore{opts: opts, shared: shared, t: t, p: p, park: uint64(maxFd) + 1, parked: map[uint32]uint64{}}
	var ids []uint32
	seen := map[uint32]bool{}
	for _, fd := range p.fds {
		if !seen[fd.GetId()] {
			seen[fd.GetId()] = true
			ids = append(ids, fd.GetId())
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, late := range []bool{false, true} {
		for _, id := range ids {
			f := p.files[id]
			o := fdOpeners[f.GetType()]
			if o == nil {
				return fmt.Errorf("file id %d of type %v: %w", id, f.GetType(), ErrUnsupported)
			}
			if lo, ok := o.(lateOpener); (ok && lo.late()) != late {
				continue
			}
			var fd uint64
			var err error
			if from, ok := shared.byID[id]; ok {
				fd, err = importFd(t, from) // created by a process restored earlier
			} else {
				fd, err = o.open(rf, f)
			}
			if err != nil {
				return fmt.Errorf("file id %d (%v): %w", id, f.GetType(), err)
			}
			if err := rf.parkFd(fd, id); err != nil {
				return err
			}
		}
		if err := rf.install(late); err != nil {
			return err
		}
		for _, fd := range p.fds {
			// Only this phase's fds are installed: a late file (epoll) registered before it exists
			// would be "imported" from its own empty fd number.
			if lo, ok := fdOpeners[p.files[fd.GetId()].GetType()].(lateOpener); (ok && lo.late()) != late {
				continue
			}
			if _, ok := shared.byID[fd.GetId()]; !ok {
				shared.byID[fd.GetId()] = remoteFd{t: t, vpid: p.pid, fd: uint64(fd.GetFd())}
			}
		}
	}
	for _, pfd := range rf.parked {
		if _, err := t.Syscall(unix.SYS_CLOSE, pfd); err != nil {
			return err
		}
	}
	// After the parking fds are gone: closing any fd of a file drops the process's POSIX locks on it.
	for _, f := range fdFinishers {
		if err := f.finish(rf); err != nil {
			return err
		}
	}
	return nil
}

// nextPark returns a free fd number above every dumped one.
func (rf *fileRestore) nextPark() uint64 {
	rf.park++
	return rf.park - 1
}

func (rf *fileRestore) parkFd(fd uint64, id uint32) error {
	if _, err := rf.t.Syscall(unix.SYS_DUP3, fd, rf.park, 0); err != nil {
		return fmt.Errorf("park fd: %w", err)
	}
	if _, err := rf.t.Syscall(unix.SYS_CLOSE, fd); err != nil {
		return err
	}
	rf.parked[id] = rf.park
	rf.park++
	return nil
}

// install dup3()s the parked files of one phase to their dumped fd numbers.
func (rf *fileRestore) install(late bool) error {
	for _, fd := range rf.p.fds {
		o := fdOpeners[rf.p.files[fd.GetId()].GetType()]
		if lo, ok := o.(lateOpener); (ok && lo.late()) != late {
			continue
		}
		flags := uint64(0)
		if fd.GetFlags()&unix.FD_CLOEXEC != 0 {
			flags = unix.O_CLOEXEC
		}
		if _, err := rf.t.Syscall(unix.SYS_DUP3, rf.parked[fd.GetId()], uint64(fd.GetFd()), flags); err != nil {
			return fmt.Errorf("fd %d: dup3: %w", fd.GetFd(), err)
		}
	}
	return nil
}

// regOpener opens regular files, directories and stateless devices by path, at their dumped position.
type regOpener struct{}

func init() { registerFdOpener(fdinfo.FdTypes_REG, regOpener{}) }

func (regOpener) open(rf *fileRestore, f *fdinfo.FileEntry) (uint64, error) {
	if fd, ok, err := openGhostFd(rf, f); ok { // deleted while open: its contents are in the images
		return fd, err
	}
	t := rf.t
	r := f.GetReg()
	var st unix.Stat_t
	if err := unix.Stat(r.GetName(), &st); err != nil {
		return 0, fmt.Errorf("file %s: %w", r.GetName(), err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG && uint64(st.Size) < r.GetPos() {
		return 0, fmt.Errorf("%w: file %s is %d bytes now, shorter than its saved position %d", ErrBadImages, r.GetName(), st.Size, r.GetPos())
	}
	fd, err := openInTask(t, r.GetName(), r.GetFlags())
	if err != nil {
		return 0, err
	}
	if r.GetPos() != 0 {
		if _, err := t.Syscall(unix.SYS_LSEEK, fd, r.GetPos(), unix.SEEK_SET); err != nil {
			return 0, fmt.Errorf("seek %s to %d: %w", r.GetName(), r.GetPos(), err)
		}
	}
	return fd, nil
}

func setFileFlags(t *compel.Task, fd uint64, flags uint32) error {
	fl := flags & (unix.O_NONBLOCK | unix.O_APPEND | unix.O_ASYNC | unix.O_DIRECT | unix.O_NOATIME)
	if fl == 0 {
		return nil
	}
	if _, err := t.Syscall(unix.SYS_FCNTL, fd, unix.F_SETFL, uint64(fl)); err != nil {
		return fmt.Errorf("fcntl(F_SETFL): %w", err)
	}
	return nil
}

// restoreFS sets the cwd and root.
func restoreFS(t *compel.Task, p *plan) error {
	if root := p.path(p.fs.GetRootId()); root != "/" {
		addr, err := t.WriteScratch(0, append([]byte(root), 0))
		if err != nil {
			return err
		}
		if _, err := t.Syscall(unix.SYS_CHROOT, addr); err != nil {
			return fmt.Errorf("chroot %s: %w", root, err)
		}
	}
	cwd := p.path(p.fs.GetCwdId())
	addr, err := t.WriteScratch(0, append([]byte(cwd), 0))
	if err != nil {
		return err
	}
	if _, err := t.Syscall(unix.SYS_CHDIR, addr); err != nil {
		return fmt.Errorf("chdir %s: %w", cwd, err)
	}
	if _, err := t.Syscall(unix.SYS_UMASK, uint64(p.fs.GetUmask())); err != nil {
		return fmt.Errorf("umask: %w", err)
	}
	return nil
}
