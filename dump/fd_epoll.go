package dump

import (
	"fmt"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventpoll"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// epollKind: an epoll instance and what it watches, from its fdinfo "tfd:" lines (fd number, events,
// data, and the watched file's inode). The watched files are restored by their own kinds; a watch is
// re-added through the fd number, so that number must still name the watched file in the task.
type epollKind struct{}

func init() { registerFdKind(epollKind{}) }

func (epollKind) handles(f *openFile) bool { return f.Fd.Target == "anon_inode:[eventpoll]" }

func (epollKind) dump(ft *fileTable, f *openFile, id uint32) (*fdinfo.FileEntry, error) {
	tfds, err := parseEpoll(f.Info.Lines)
	if err != nil {
		return nil, err
	}
	for _, t := range tfds {
		t.Id = proto.Uint32(id)
		var st unix.Stat_t
		err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", f.Pid, t.GetTfd()), &st)
		if err != nil || st.Ino != t.GetInode() || unix.Major(st.Dev) != t.GetDev()>>20 || unix.Minor(st.Dev) != t.GetDev()&0xfffff {
			// The task closed the fd it registered (a dup keeps the watch alive) or reused its number.
			return nil, fmt.Errorf("epoll watches fd %d, which no longer refers to the watched file (inode %d): %w", t.GetTfd(), t.GetInode(), ErrUnsupported)
		}
	}
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_EVENTPOLL.Enum(),
		Id:   proto.Uint32(id),
		Epfd: &eventpoll.EventpollFileEntry{Id: proto.Uint32(id), Flags: proto.Uint32(f.Flags), Fown: zeroFown(), Tfd: tfds},
	}, nil
}

// parseEpoll reads fs/eventpoll.c's lines
//
//	tfd:        5 events:       19 data:       1200000005  pos:0 ino:40e sdev:10
//
// (fd and pos decimal, the rest hex; sdev is the kernel's dev_t, major<<20 | minor).
func parseEpoll(lines []string) ([]*eventpoll.EventpollTfdEntry, error) {
	var out []*eventpoll.EventpollTfdEntry
	for _, l := range lines {
		if !strings.HasPrefix(l, "tfd:") {
			continue
		}
		f := fdinfoFields(l)
		var v [6]uint64
		for i, k := range []struct {
			key  string
			base int
		}{{"tfd", 10}, {"events", 16}, {"data", 16}, {"pos", 10}, {"ino", 16}, {"sdev", 16}} {
			n, err := fieldUint(f, k.key, k.base)
			if err != nil {
				return nil, fmt.Errorf("epoll fdinfo %q: %w", l, err)
			}
			v[i] = n
		}
		if v[0] > 1<<31 || v[1] > 1<<32-1 || v[5] > 1<<32-1 {
			return nil, fmt.Errorf("epoll fdinfo %q: value out of range", l)
		}
		out = append(out, &eventpoll.EventpollTfdEntry{
			Tfd: proto.Uint32(uint32(v[0])), Events: proto.Uint32(uint32(v[1])), Data: proto.Uint64(v[2]),
			Pos: proto.Uint64(v[3]), Inode: proto.Uint64(v[4]), Dev: proto.Uint32(uint32(v[5])),
		})
	}
	return out, nil
}
