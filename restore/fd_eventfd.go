package restore

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"
)

// eventfdSemaphoreFlag marks an EFD_SEMAPHORE eventfd in EventfdFileEntry.flags (the O_WRONLY bit,
// never set on an eventfd otherwise; see package dump).
const eventfdSemaphoreFlag = 1

// eventfdOpener: eventfd2() then the counter is written into it (eventfd2 takes only 32 bits of it).
type eventfdOpener struct{}

func init() { registerFdOpener(fdinfo.FdTypes_EVENTFD, eventfdOpener{}) }

func (eventfdOpener) open(rf *fileRestore, f *fdinfo.FileEntry) (uint64, error) {
	e := f.GetEfd()
	if e == nil {
		return 0, fmt.Errorf("%w: eventfd entry %d without its eventfd part", ErrBadImages, f.GetId())
	}
	t := rf.t
	flags := uint64(0)
	if e.GetFlags()&eventfdSemaphoreFlag != 0 {
		flags = unix.EFD_SEMAPHORE
	}
	fd, err := t.Syscall(unix.SYS_EVENTFD2, 0, flags|unix.EFD_CLOEXEC)
	if err != nil {
		return 0, fmt.Errorf("eventfd2: %w", err)
	}
	if c := e.GetCounter(); c != 0 {
		addr, err := t.WriteScratch(0, le64(c))
		if err == nil {
			_, err = t.Syscall(unix.SYS_WRITE, fd, addr, 8)
		}
		if err != nil {
			closeInTask(t, fd)
			return 0, fmt.Errorf("eventfd counter %d: %w", c, err)
		}
	}
	if err := setStatusFlags(t, fd, e.GetFlags()); err != nil {
		closeInTask(t, fd)
		return 0, err
	}
	return fd, nil
}
