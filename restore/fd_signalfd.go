package restore

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"
)

// signalfdOpener: signalfd4() with the dumped mask.
type signalfdOpener struct{}

func init() { registerFdOpener(fdinfo.FdTypes_SIGNALFD, signalfdOpener{}) }

func (signalfdOpener) open(rf *fileRestore, f *fdinfo.FileEntry) (uint64, error) {
	e := f.GetSgfd()
	if e == nil {
		return 0, fmt.Errorf("%w: signalfd entry %d without its signalfd part", ErrBadImages, f.GetId())
	}
	t := rf.t
	addr, err := t.WriteScratch(0, le64(e.GetSigmask()))
	if err != nil {
		return 0, err
	}
	fd, err := t.Syscall(unix.SYS_SIGNALFD4, ^uint64(0), addr, 8, unix.SFD_CLOEXEC)
	if err != nil {
		return 0, fmt.Errorf("signalfd4 mask %#x: %w", e.GetSigmask(), err)
	}
	if err := setStatusFlags(t, fd, e.GetFlags()); err != nil {
		closeInTask(t, fd)
		return 0, err
	}
	return fd, nil
}
