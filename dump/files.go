package dump

import (
	"fmt"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/procfs"
	"github.com/lazyr/lazyr/internal/sys"
)

// fileTable assigns ids to open files (files.img) the way CRIU does: one entry per open file description,
// plus entries for mapped files, the cwd, the root and the executable.
type fileTable struct {
	pid     int // the process whose fds collectFds reads
	seen    []seenFd
	opts    *Options
	nextID  uint32
	entries []*fdinfo.FileEntry
	byPath  map[string]uint32 // mapped / cwd / root / exe files, by path and flags
	fds     []*fdinfo.FdinfoEntry
	// per-kind state and extra images
	pipeEnds map[uint64]*pipeEnds
	kinds    map[string]any // state of the other fd kinds, by kind (see kindState)
	extra    []extraImage
	extraRaw []func(d *images.Dir) error
}

// seenFd is an fd already recorded, to find open file descriptions shared with it (dup, fork).
type seenFd struct {
	pid, fd int
	id      uint32
}

func newFileTable(pid int, opts *Options) *fileTable {
	return &fileTable{pid: pid, opts: opts, nextID: 1, byPath: map[string]uint32{}}
}

func (ft *fileTable) id() uint32 {
	id := ft.nextID
	ft.nextID++
	return id
}

func zeroFown() *fown.FownEntry {
	z := proto.Uint32(0)
	return &fown.FownEntry{Uid: z, Euid: z, Signum: z, PidType: z, Pid: z}
}

// mapped returns the id of a regular-file entry for path opened with flags (shared by all users).
func (ft *fileTable) mapped(path string, flags uint32) (uint32, error) {
	key := fmt.Sprintf("%s\x00%d", path, flags)
	if id, ok := ft.byPath[key]; ok {
		return id, nil
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	id := ft.id()
	ft.entries = append(ft.entries, &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_REG.Enum(),
		Id:   proto.Uint32(id),
		Reg: &regfile.RegFileEntry{
			Id:    proto.Uint32(id),
			Flags: proto.Uint32(flags),
			Pos:   proto.Uint64(0),
			Fown:  zeroFown(),
			Name:  proto.String(path),
			Size:  proto.Uint64(uint64(st.Size)),
			Mode:  proto.Uint32(st.Mode),
		},
	})
	ft.byPath[key] = id
	return id, nil
}

// collectFds records every fd of the task through the fd kind that claims it. Kinds lazyr cannot restore
// yet are refused by name, before anything else is done.
func (ft *fileTable) collectFds() error {
	fds, err := procfs.ListFds(ft.pid)
	if err != nil {
		return fmt.Errorf("list fds: %w", err)
	}

	for _, fd := range fds {
		info, err := procfs.ReadFdInfo(ft.pid, fd.Num)
		if err != nil {
			return fmt.Errorf("fd %d: %w", fd.Num, err)
		}
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", ft.pid, fd.Num), &st); err != nil {
			return fmt.Errorf("fd %d (%s): %w", fd.Num, fd.Target, err)
		}
		kind := ft.kindOf(fd, &st)
		if kind == nil {
			return fmt.Errorf("fd %d: %s: %w", fd.Num, describeTarget(fd.Target, &st), ErrUnsupported)
		}
		// Same open file description as an earlier fd (dup): share its entry.
		var id uint32
		for _, p := range ft.seen {
			if same, err := sys.SameFile(p.pid, p.fd, ft.pid, fd.Num); err == nil && same {
				id = p.id
				break
			}
		}
		o := &openFile{Pid: ft.pid, Fd: fd, Info: info, Stat: &st, Flags: info.Flags &^ unix.O_CLOEXEC}
		var typ fdinfo.FdTypes
		if id == 0 {
			id = ft.id()
			e, err := kind.dump(ft, o, id)
			if err != nil {
				return fmt.Errorf("fd %d (%s): %w", fd.Num, fd.Target, err)
			}
			ft.entries = append(ft.entries, e)
			typ = e.GetType()
		} else {
			for _, e := range ft.entries {
				if e.GetId() == id {
					typ = e.GetType()
				}
			}
		}
		ft.seen = append(ft.seen, seenFd{ft.pid, fd.Num, id})
		fdFlags := uint32(0)
		if info.Flags&unix.O_CLOEXEC != 0 {
			fdFlags = unix.FD_CLOEXEC
		}
		ft.fds = append(ft.fds, &fdinfo.FdinfoEntry{
			Id:    proto.Uint32(id),
			Flags: proto.Uint32(fdFlags),
			Type:  typ.Enum(),
			Fd:    proto.Uint32(uint32(fd.Num)),
		})
	}
	return nil
}

// finishKinds runs the kinds' checks that need every fd of every process (a pipe with both ends in the
// tree, say).
func (ft *fileTable) finishKinds() error {
	for _, k := range fdKinds {
		if f, ok := k.(fdFinisher); ok {
			if err := f.finish(ft); err != nil {
				return err
			}
		}
	}
	return nil
}

func fileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFBLK:
		return "block device"
	}
	return fmt.Sprintf("file of mode %#o", mode&unix.S_IFMT)
}

func describeTarget(t string, st *unix.Stat_t) string {
	switch {
	case strings.HasPrefix(t, "socket:"):
		return t + " (this kind of socket is not supported yet)"
	case strings.HasPrefix(t, "anon_inode:"):
		return t + " (this kind of file is not supported yet)"
	case strings.HasSuffix(t, " (deleted)"):
		return t + " (deleted open files are not supported yet)"
	case st.Mode&unix.S_IFMT == unix.S_IFCHR:
		return t + " (character device: terminals need --shell-job, others are not supported yet)"
	case strings.HasPrefix(t, "/"):
		return t + " is a " + fileKind(st.Mode) + " (not supported yet)"
	}
	return t
}
