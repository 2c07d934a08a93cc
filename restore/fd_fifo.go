package restore

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	pipe_data "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/images"
)

// fifoOpener reopens named pipes by path. Opening one end of a FIFO waits for the other end (or fails,
// non-blocking), so the task first opens it O_RDWR, which Linux allows and which never waits; that
// helper fd keeps the pipe alive while the saved bytes are written into it and the real ends are
// opened, and is closed at the end. A FIFO whose file is gone is created again.
type fifoOpener struct{}

func init() {
	o := fifoOpener{}
	registerFdOpener(fdinfo.FdTypes_FIFO, o)
	registerFdFinisher(o)
}

type fifoState struct {
	data    map[uint32][]byte // pipe id -> bytes to put back (fifo-data.img)
	loaded  bool
	helpers map[uint32]uint64 // pipe id -> the O_RDWR helper fd in the task
}

func (fifoOpener) open(rf *fileRestore, f *fdinfo.FileEntry) (uint64, error) {
	e := f.GetFifo()
	reg := rf.p.files[e.GetRegfId()].GetReg()
	if e == nil || reg == nil {
		return 0, fmt.Errorf("%w: FIFO entry %d without its path entry", ErrBadImages, f.GetId())
	}
	s := kindState[fifoState](rf, "fifo")
	if !s.loaded {
		if err := s.load(rf.p.dir); err != nil {
			return 0, err
		}
	}
	t, path := rf.t, reg.GetName()
	helper, ok := s.helpers[e.GetPipeId()]
	if !ok {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); errors.Is(err, unix.ENOENT) {
			if err := unix.Mkfifo(path, reg.GetMode()&0o7777); err != nil {
				return 0, fmt.Errorf("create FIFO %s again: %w", path, err)
			}
		} else if err != nil {
			return 0, fmt.Errorf("FIFO %s: %w", path, err)
		} else if st.Mode&unix.S_IFMT != unix.S_IFIFO {
			return 0, fmt.Errorf("%s is no longer a FIFO (mode %#o)", path, st.Mode)
		}
		var err error
		if helper, err = openInTask(t, path, unix.O_RDWR|unix.O_NONBLOCK); err != nil {
			return 0, err
		}
		if helper, err = rf.parkHelper(helper); err != nil {
			return 0, err
		}
		s.helpers[e.GetPipeId()] = helper
		if data := s.data[e.GetPipeId()]; len(data) > 0 {
			if err := fillPipe(t.Pid, helper, data); err != nil {
				return 0, fmt.Errorf("FIFO %s data: %w", path, err)
			}
		}
	}
	fd, err := openInTask(t, path, reg.GetFlags()|unix.O_NONBLOCK)
	if err != nil {
		return 0, err
	}
	if err := setStatusFlags(t, fd, reg.GetFlags()); err != nil {
		closeInTask(t, fd)
		return 0, err
	}
	return fd, nil
}

func (s *fifoState) load(d *images.Dir) error {
	s.loaded, s.data, s.helpers = true, map[uint32][]byte{}, map[uint32]uint64{}
	entries, data, err := images.ReadRecords[pipe_data.PipeDataEntry](d, images.FifoDataName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadImages, images.FifoDataName, err)
	}
	for i, e := range entries {
		s.data[e.GetPipeId()] = data[i]
	}
	return nil
}

// finish closes the helper fds.
func (fifoOpener) finish(rf *fileRestore) error {
	s := kindState[fifoState](rf, "fifo")
	for id, fd := range s.helpers {
		if _, err := rf.t.Syscall(unix.SYS_CLOSE, fd); err != nil {
			return fmt.Errorf("close FIFO helper: %w", err)
		}
		delete(s.helpers, id)
	}
	return nil
}
