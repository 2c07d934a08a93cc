package restore

import (
	"fmt"
	"github.com/lazyr/lazyr/images"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"
)

// memfdOpener: an fd of a memfd. The memfd is made on first use (see createMemfd); an fd of a memfd
// that is also mapped is opened through the mapping (/proc/self/map_files), an fd of a memfd an earlier
// fd made through that fd, so all of them share the inode.
type memfdOpener struct{}

func init() { registerFdOpener(fdinfo.FdTypes_MEMFD, memfdOpener{}) }

type memfdFdState struct {
	shared *sharedState
	opened map[uint64]uint32 // inode id -> file id of the first fd on it
}

func (memfdOpener) open(rf *fileRestore, f *fdinfo.FileEntry) (uint64, error) {
	m := f.GetMemfd()
	if m == nil {
		return 0, fmt.Errorf("%w: memfd entry %d without its memfd part", ErrBadImages, f.GetId())
	}
	s := kindState[memfdFdState](rf, "memfd")
	if s.shared == nil {
		var err error
		if s.shared, err = loadShared(rf.p.dir); err != nil {
			return 0, err
		}
		s.opened = map[uint64]uint32{}
	}
	inode, err := s.shared.memfdOf(rf.p, f.GetId())
	if err != nil {
		return 0, err
	}
	t, ino := rf.t, inode.GetInodeId()
	var fd uint64
	switch {
	case s.opened[ino] != 0:
		fd, err = reopenInTask(t, rf.parked[s.opened[ino]], m.GetFlags())
	case mappedMemfd(rf.p, ino) != "":
		fd, err = openInTask(t, mappedMemfd(rf.p, ino), m.GetFlags())
	default:
		if fd, err = createMemfd(t, rf.p.dir, inode); err == nil && m.GetFlags()&unix.O_ACCMODE != unix.O_RDWR {
			rw := fd
			fd, err = reopenInTask(t, rw, m.GetFlags())
			closeInTask(t, rw)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("memfd %q: %w", inode.GetName(), err)
	}
	if s.opened[ino] == 0 {
		s.opened[ino] = f.GetId()
	}
	if m.GetPos() != 0 {
		if _, err := t.Syscall(unix.SYS_LSEEK, fd, m.GetPos(), unix.SEEK_SET); err != nil {
			closeInTask(t, fd)
			return 0, fmt.Errorf("seek memfd %q to %d: %w", inode.GetName(), m.GetPos(), err)
		}
	}
	if err := setStatusFlags(t, fd, m.GetFlags()); err != nil {
		closeInTask(t, fd)
		return 0, err
	}
	return fd, nil
}

// mappedMemfd returns a /proc/self/map_files path of a mapping of memfd inode ino, or "".
func mappedMemfd(p *plan, ino uint64) string {
	for _, v := range p.vmas {
		if v.GetStatus()&images.VMAAreaMemfd == 0 {
			continue
		}
		if m := p.files[uint32(v.GetShmid())].GetMemfd(); m != nil && uint64(m.GetInodeId()) == ino {
			return fmt.Sprintf("/proc/self/map_files/%x-%x", v.GetStart(), v.GetEnd())
		}
	}
	return ""
}
