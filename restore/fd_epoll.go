package restore

import (
	"encoding/binary"
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"
)

// epollOpener: epoll_create1(), then every watch added again through the fd number it was registered
// with. It runs late, once every other fd has its dumped number. A watched epoll instance (epoll in
// epoll) is created first, on demand, and then handed out when its own turn comes.
type epollOpener struct{}

func init() { registerFdOpener(fdinfo.FdTypes_EVENTPOLL, epollOpener{}) }

func (epollOpener) late() bool { return true }

type epollState struct {
	early map[uint32]uint64 // epolls created for another epoll, by file id, not yet handed out
	busy  map[uint32]bool   // being created (a loop means broken images)
}

func (epollOpener) open(rf *fileRestore, f *fdinfo.FileEntry) (uint64, error) {
	s := kindState[epollState](rf, "epoll")
	if fd, ok := s.early[f.GetId()]; ok {
		delete(s.early, f.GetId())
		return fd, nil
	}
	return createEpoll(rf, s, f)
}

func createEpoll(rf *fileRestore, s *epollState, f *fdinfo.FileEntry) (uint64, error) {
	e := f.GetEpfd()
	if e == nil {
		return 0, fmt.Errorf("%w: eventpoll entry %d without its eventpoll part", ErrBadImages, f.GetId())
	}
	if s.busy == nil {
		s.busy, s.early = map[uint32]bool{}, map[uint32]uint64{}
	}
	if s.busy[f.GetId()] {
		return 0, fmt.Errorf("%w: epoll %d watches itself", ErrBadImages, f.GetId())
	}
	s.busy[f.GetId()] = true
	defer delete(s.busy, f.GetId())
	t := rf.t
	fd, err := t.Syscall(unix.SYS_EPOLL_CREATE1, unix.EPOLL_CLOEXEC)
	if err != nil {
		return 0, fmt.Errorf("epoll_create1: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			closeInTask(t, fd)
		}
	}()
	byFd := map[uint32]uint32{}
	for _, d := range rf.p.fds {
		byFd[d.GetFd()] = d.GetId()
	}
	for _, w := range e.GetTfd() {
		target := uint64(w.GetTfd())
		id, found := byFd[w.GetTfd()]
		if !found {
			return 0, fmt.Errorf("%w: epoll watches fd %d, which the process does not have", ErrBadImages, w.GetTfd())
		}
		if tf := rf.p.files[id]; tf.GetType() == fdinfo.FdTypes_EVENTPOLL {
			// Not installed at its number yet: use wherever it is now.
			if pfd, parked := rf.parked[id]; parked {
				target = pfd
			} else if efd, made := s.early[id]; made {
				target = efd
			} else {
				inner, err := createEpoll(rf, s, tf)
				if err != nil {
					return 0, err
				}
				s.early[id] = inner
				target = inner
			}
		}
		// struct epoll_event is packed on x86-64: u32 events, u64 data.
		ev := make([]byte, 12)
		binary.LittleEndian.PutUint32(ev, w.GetEvents())
		binary.LittleEndian.PutUint64(ev[4:], w.GetData())
		addr, err := t.WriteScratch(0, ev)
		if err != nil {
			return 0, err
		}
		if _, err := t.Syscall(unix.SYS_EPOLL_CTL, fd, unix.EPOLL_CTL_ADD, target, addr); err != nil {
			return 0, fmt.Errorf("epoll_ctl add fd %d events %#x: %w", w.GetTfd(), w.GetEvents(), err)
		}
	}
	if err := setStatusFlags(t, fd, e.GetFlags()); err != nil {
		return 0, err
	}
	ok = true
	return fd, nil
}
