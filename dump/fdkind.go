package dump

import (
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/procfs"
)

// openFile is one open file description of the task, as /proc shows it.
type openFile struct {
	Pid   int            // the task holding the fd
	Fd    procfs.Fd      // number and link target ("pipe:[123]", "/path", "anon_inode:[eventfd]", ...)
	Info  *procfs.FdInfo // /proc/PID/fdinfo/N
	Stat  *unix.Stat_t   // stat of /proc/PID/fd/N (the file itself)
	Flags uint32         // file status flags (O_ACCMODE, O_APPEND, O_NONBLOCK, ...) without O_CLOEXEC
}

// fdKind dumps one kind of file. Each kind lives in its own fd_*.go file and registers itself in init,
// with its counterpart in package restore.
type fdKind interface {
	// handles reports whether this kind dumps the file.
	handles(f *openFile) bool
	// dump returns the files.img entry for the file, with the given id; extra images go through
	// fileTable.addImage.
	dump(ft *fileTable, f *openFile, id uint32) (*fdinfo.FileEntry, error)
}

// fdFinisher is implemented by kinds that need to look at all fds before the dump goes on (pipes check
// that both ends are inside the task and save their data).
type fdFinisher interface {
	finish(ft *fileTable) error
}

var fdKinds []fdKind

func registerFdKind(k fdKind) { fdKinds = append(fdKinds, k) }

func (ft *fileTable) kindOf(fd procfs.Fd, st *unix.Stat_t) fdKind {
	f := &openFile{Pid: ft.pid, Fd: fd, Stat: st}
	for _, k := range fdKinds {
		if k.handles(f) {
			return k
		}
	}
	return nil
}

// addImage queues an extra image to be written with the others (e.g. eventpoll-tfd, unix socket queues).
func (ft *fileTable) addImage(name string, entries ...proto.Message) {
	ft.extra = append(ft.extra, extraImage{name: name, entries: entries})
}

// addRawImage queues an extra image written by its own function (images with raw data after entries).
func (ft *fileTable) addRawImage(write func(d *images.Dir) error) {
	ft.extraRaw = append(ft.extraRaw, write)
}

type extraImage struct {
	name    string
	entries []proto.Message
}
