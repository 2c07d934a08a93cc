package restore

import (
	"fmt"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fsnotify"
	"golang.org/x/sys/unix"
)

// maxWdSteps bounds how many watch descriptors are burnt to reach a dumped one.
const maxWdSteps = 1 << 16

// inotifyOpener: inotify_init1(), then each watch added again by the path the dump found for it. A
// program tells its watches apart by their descriptors, so each must come back with its dumped number:
// the kernel hands them out in increasing order, so a watch is added and removed until it gets it.
type inotifyOpener struct{}

func init() { registerFdOpener(fdinfo.FdTypes_INOTIFY, inotifyOpener{}) }

func (inotifyOpener) open(rf *fileRestore, f *fdinfo.FileEntry) (uint64, error) {
	e := f.GetIfy()
	if e == nil {
		return 0, fmt.Errorf("%w: inotify entry %d without its inotify part", ErrBadImages, f.GetId())
	}
	t := rf.t
	fd, err := t.Syscall(unix.SYS_INOTIFY_INIT1, unix.IN_CLOEXEC)
	if err != nil {
		return 0, fmt.Errorf("inotify_init1: %w", err)
	}
	wds := append([]*fsnotify.InotifyWdEntry{}, e.GetWd()...)
	sort.Slice(wds, func(i, j int) bool { return wds[i].GetWd() < wds[j].GetWd() })
	burnt := false
	for _, w := range wds {
		b, err := addWatch(rf, fd, w)
		if err != nil {
			closeInTask(t, fd)
			return 0, err
		}
		burnt = burnt || b
	}
	if burnt {
		if err := drainInotify(t.Pid, fd); err != nil {
			closeInTask(t, fd)
			return 0, err
		}
	}
	if err := setStatusFlags(t, fd, e.GetFlags()); err != nil {
		closeInTask(t, fd)
		return 0, err
	}
	return fd, nil
}

// addWatch adds one watch with its dumped descriptor; it reports whether other descriptors were burnt
// on the way (each removal queues an IN_IGNORED event).
func addWatch(rf *fileRestore, fd uint64, w *fsnotify.InotifyWdEntry) (bool, error) {
	t := rf.t
	path := w.GetFHandle().GetPath()
	if path == "" {
		return false, fmt.Errorf("%w: inotify watch %d has no path", ErrBadImages, w.GetWd())
	}
	addr, err := t.WriteScratch(0, append([]byte(path), 0))
	if err != nil {
		return false, err
	}
	want := uint64(w.GetWd())
	for step := 0; ; step++ {
		got, err := t.Syscall(unix.SYS_INOTIFY_ADD_WATCH, fd, addr, uint64(w.GetMask()))
		if err != nil {
			return step > 0, fmt.Errorf("inotify watch %d on %s: %w", w.GetWd(), path, err)
		}
		if got == want {
			return step > 0, nil
		}
		if got > want || step > maxWdSteps {
			return step > 0, fmt.Errorf("inotify watch on %s got descriptor %d, not the dumped %d", path, got, want)
		}
		if _, err := t.Syscall(unix.SYS_INOTIFY_RM_WATCH, fd, got); err != nil {
			return true, fmt.Errorf("inotify_rm_watch %d: %w", got, err)
		}
	}
}

// drainInotify discards the events queued while watches were added (the IN_IGNORED of burnt
// descriptors; anything else happened while the process was not running, when its events are lost
// anyway). The fd's flags are set afterwards, so making it non-blocking here is harmless.
func drainInotify(pid int, fd uint64) error {
	f, err := taskDup(pid, fd)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.SetNonblock(int(f.Fd()), true); err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	for {
		_, err := unix.Read(int(f.Fd()), buf)
		if err == unix.EAGAIN {
			return nil
		}
		if err != nil {
			return fmt.Errorf("drain inotify events: %w", err)
		}
	}
}
