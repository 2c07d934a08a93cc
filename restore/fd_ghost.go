package restore

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/compel"
	"github.com/lazyr/lazyr/images"
)

// openGhost recreates ghost file gid (a file deleted while open) and opens it in the task with flags,
// returning the task's fd. The file is made by lazyr as an unnamed O_TMPFILE next to its old path (or
// in the images directory if that is not possible), only its data extents written, so holes stay holes;
// it gets a name just long enough for the task to open it (its old name when that is free, so the fd
// reads "NAME (deleted)" as before) and is unlinked again at once.
func openGhost(t *compel.Task, d *images.Dir, gid uint32, name string, flags uint32) (uint64, error) {
	e, chunks, err := d.ReadGhostFile(gid)
	if err != nil {
		return 0, fmt.Errorf("%w: ghost file %d: %w", ErrBadImages, gid, err)
	}
	if e.GetMode()&unix.S_IFMT != unix.S_IFREG {
		return 0, fmt.Errorf("ghost file %s of mode %#o: %w", name, e.GetMode(), ErrUnsupported)
	}
	dir := filepath.Dir(name)
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		dir = d.Path()
		if fd, err = unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600); err != nil {
			return 0, fmt.Errorf("ghost file %s: temporary file in %s: %w", name, dir, err)
		}
	}
	defer unix.Close(fd)
	for _, c := range chunks {
		if _, err := unix.Pwrite(fd, c.Data, int64(c.Off)); err != nil {
			return 0, fmt.Errorf("ghost file %s: write %d bytes at %d: %w", name, len(c.Data), c.Off, err)
		}
	}
	if err := unix.Ftruncate(fd, int64(e.GetSize())); err != nil {
		return 0, fmt.Errorf("ghost file %s: size %d: %w", name, e.GetSize(), err)
	}
	if err := unix.Fchown(fd, int(e.GetUid()), int(e.GetGid())); err != nil {
		return 0, fmt.Errorf("ghost file %s: chown: %w", name, err)
	}
	if err := unix.Fchmod(fd, e.GetMode()&0o7777); err != nil {
		return 0, fmt.Errorf("ghost file %s: chmod: %w", name, err)
	}
	if a, m := e.GetAtim(), e.GetMtim(); a != nil && m != nil {
		ts := []unix.Timespec{
			{Sec: int64(a.GetTvSec()), Nsec: int64(a.GetTvUsec()) * 1000},
			{Sec: int64(m.GetTvSec()), Nsec: int64(m.GetTvUsec()) * 1000},
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), ts, 0); err != nil {
			return 0, fmt.Errorf("ghost file %s: times: %w", name, err)
		}
	}
	link, err := linkTemp(fd, dir, name, gid)
	if err != nil {
		return 0, err
	}
	tfd, err := openInTask(t, link, flags)
	if uerr := unix.Unlink(link); uerr != nil && err == nil {
		closeInTask(t, tfd)
		return 0, fmt.Errorf("ghost file %s: unlink %s: %w", name, link, uerr)
	}
	return tfd, err
}

// linkTemp gives the O_TMPFILE fd a name in dir: the ghost's old name if it is free, else a made-up one.
func linkTemp(fd int, dir, name string, gid uint32) (string, error) {
	candidates := []string{}
	if filepath.Dir(name) == dir {
		candidates = append(candidates, name)
	}
	for i := 0; i < 8; i++ {
		candidates = append(candidates, filepath.Join(dir, fmt.Sprintf(".lazyr-ghost-%d-%d", gid, i)))
	}
	src := fmt.Sprintf("/proc/self/fd/%d", fd)
	for _, c := range candidates {
		err := unix.Linkat(unix.AT_FDCWD, src, unix.AT_FDCWD, c, unix.AT_SYMLINK_FOLLOW)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, unix.EEXIST) {
			return "", fmt.Errorf("ghost file %s: link as %s: %w", name, c, err)
		}
	}
	return "", fmt.Errorf("ghost file %s: no free name in %s", name, dir)
}

type ghostFdState struct {
	shared *sharedState
	opened map[uint32]uint32 // ghost id -> file id of the first fd opened on it
}

// openGhostFd opens a regular-file entry remapped to a ghost file, if f is one (ok false otherwise).
// Another fd or a mapping of the same ghost already in the task is reopened, so they share the inode.
func openGhostFd(rf *fileRestore, f *fdinfo.FileEntry) (fd uint64, ok bool, err error) {
	s := kindState[ghostFdState](rf, "ghost")
	if s.shared == nil {
		if s.shared, err = loadShared(rf.p.dir); err != nil {
			return 0, true, err
		}
		s.opened = map[uint32]uint32{}
	}
	gid, ok := s.shared.remaps[f.GetId()]
	if !ok {
		return 0, false, nil
	}
	r := f.GetReg()
	t := rf.t
	switch {
	case s.opened[gid] != 0:
		fd, err = reopenInTask(t, rf.parked[s.opened[gid]], r.GetFlags())
	case mappedGhost(rf.p, s.shared, gid) != "":
		fd, err = openInTask(t, mappedGhost(rf.p, s.shared, gid), r.GetFlags())
	default:
		fd, err = openGhost(t, rf.p.dir, gid, r.GetName(), r.GetFlags())
	}
	if err != nil {
		return 0, true, err
	}
	if s.opened[gid] == 0 {
		s.opened[gid] = f.GetId()
	}
	if r.GetPos() != 0 {
		if _, err := t.Syscall(unix.SYS_LSEEK, fd, r.GetPos(), unix.SEEK_SET); err != nil {
			closeInTask(t, fd)
			return 0, true, fmt.Errorf("seek ghost file %s to %d: %w", r.GetName(), r.GetPos(), err)
		}
	}
	return fd, true, nil
}

// mappedGhost returns a /proc/self/map_files path of a mapping of ghost gid, or "".
func mappedGhost(p *plan, s *sharedState, gid uint32) string {
	for _, v := range p.vmas {
		if v.GetStatus()&(images.VMAFileShared|images.VMAFilePrivate) == 0 || v.GetStatus()&images.VMAAreaMemfd != 0 {
			continue
		}
		if g, ok := s.remaps[uint32(v.GetShmid())]; ok && g == gid {
			return fmt.Sprintf("/proc/self/map_files/%x-%x", v.GetStart(), v.GetEnd())
		}
	}
	return ""
}
