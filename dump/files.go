package dump

import (
	"fmt"
	"os"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pipe"
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
	pid     int
	nextID  uint32
	entries []*fdinfo.FileEntry
	byPath  map[string]uint32 // mapped / cwd / root / exe files, by path and flags
	fds     []*fdinfo.FdinfoEntry
	pipes   []images.PipeData
}

func newFileTable(pid int) *fileTable {
	return &fileTable{pid: pid, nextID: 1, byPath: map[string]uint32{}}
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

// allowedCharDevs are character devices that are restored by opening their path again.
var allowedCharDevs = map[string]bool{"/dev/null": true, "/dev/zero": true, "/dev/full": true, "/dev/random": true, "/dev/urandom": true}

// collectFds records every fd of the task. Kinds lazyr cannot restore yet are refused by name.
func (ft *fileTable) collectFds() error {
	fds, err := procfs.ListFds(ft.pid)
	if err != nil {
		return fmt.Errorf("list fds: %w", err)
	}
	type seen struct {
		fd int
		id uint32
	}
	var prev []seen
	pipeEnds := map[uint64][2]bool{} // inode -> has read end, has write end
	pipeFd := map[uint64]int{}
	for _, fd := range fds {
		info, err := procfs.ReadFdInfo(ft.pid, fd.Num)
		if err != nil {
			return fmt.Errorf("fd %d: %w", fd.Num, err)
		}
		// Same open file description as an earlier fd (dup): share its entry.
		var id uint32
		for _, p := range prev {
			if same, err := sys.SameFile(ft.pid, p.fd, ft.pid, fd.Num); err == nil && same {
				id = p.id
				break
			}
		}
		fdFlags := uint32(0)
		if info.Flags&unix.O_CLOEXEC != 0 {
			fdFlags = unix.FD_CLOEXEC
		}
		fileFlags := info.Flags &^ unix.O_CLOEXEC
		var typ fdinfo.FdTypes
		switch {
		case strings.HasPrefix(fd.Target, "pipe:["):
			typ = fdinfo.FdTypes_PIPE
			var ino uint64
			if _, err := fmt.Sscanf(fd.Target, "pipe:[%d]", &ino); err != nil {
				return fmt.Errorf("fd %d: bad pipe link %q", fd.Num, fd.Target)
			}
			ends := pipeEnds[ino]
			if fileFlags&unix.O_ACCMODE == unix.O_WRONLY {
				ends[1] = true
			} else {
				ends[0] = true
			}
			pipeEnds[ino] = ends
			pipeFd[ino] = fd.Num
			if id == 0 {
				id = ft.id()
				ft.entries = append(ft.entries, &fdinfo.FileEntry{
					Type: typ.Enum(),
					Id:   proto.Uint32(id),
					Pipe: &pipe.PipeEntry{Id: proto.Uint32(id), PipeId: proto.Uint32(uint32(ino)), Flags: proto.Uint32(fileFlags), Fown: zeroFown()},
				})
			}
		case strings.HasPrefix(fd.Target, "/") && !strings.HasSuffix(fd.Target, " (deleted)"):
			typ = fdinfo.FdTypes_REG
			var st unix.Stat_t
			if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", ft.pid, fd.Num), &st); err != nil {
				return fmt.Errorf("fd %d (%s): %w", fd.Num, fd.Target, err)
			}
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFREG, unix.S_IFDIR:
			case unix.S_IFCHR:
				if !allowedCharDevs[fd.Target] {
					return fmt.Errorf("fd %d: character device %s (terminals need --shell-job, others are not supported yet): %w", fd.Num, fd.Target, ErrUnsupported)
				}
			default:
				return fmt.Errorf("fd %d: %s is a %s: %w", fd.Num, fd.Target, fileKind(st.Mode), ErrUnsupported)
			}
			if id == 0 {
				id = ft.id()
				ft.entries = append(ft.entries, &fdinfo.FileEntry{
					Type: typ.Enum(),
					Id:   proto.Uint32(id),
					Reg: &regfile.RegFileEntry{
						Id:    proto.Uint32(id),
						Flags: proto.Uint32(fileFlags),
						Pos:   proto.Uint64(uint64(info.Pos)),
						Fown:  zeroFown(),
						Name:  proto.String(fd.Target),
						Size:  proto.Uint64(uint64(st.Size)),
						Mode:  proto.Uint32(st.Mode),
					},
				})
			}
		default:
			return fmt.Errorf("fd %d: %s: %w", fd.Num, describeTarget(fd.Target), ErrUnsupported)
		}
		prev = append(prev, seen{fd.Num, id})
		ft.fds = append(ft.fds, &fdinfo.FdinfoEntry{
			Id:    proto.Uint32(id),
			Flags: proto.Uint32(fdFlags),
			Type:  typ.Enum(),
			Fd:    proto.Uint32(uint32(fd.Num)),
		})
	}
	for ino, ends := range pipeEnds {
		if !ends[0] || !ends[1] {
			return fmt.Errorf("fd %d: pipe:[%d] has its other end outside the process (external pipes are not supported yet): %w", pipeFd[ino], ino, ErrUnsupported)
		}
		data, err := peekPipe(ft.pid, pipeFd[ino])
		if err != nil {
			return fmt.Errorf("fd %d: read pipe data: %w", pipeFd[ino], err)
		}
		ft.pipes = append(ft.pipes, images.PipeData{PipeID: uint32(ino), Data: data})
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

func describeTarget(t string) string {
	switch {
	case strings.HasPrefix(t, "socket:"):
		return t + " (sockets are not supported yet)"
	case strings.HasPrefix(t, "anon_inode:"):
		return t + " (this kind of file is not supported yet)"
	case strings.HasSuffix(t, " (deleted)"):
		return t + " (deleted open files are not supported yet)"
	}
	return t
}

// peekPipe copies the unread bytes of a pipe without consuming them: the pipe is opened again through
// /proc (O_NONBLOCK, so the open does not wait for a writer as for a FIFO) and tee(2)d into a pipe of our own.
func peekPipe(pid, fd int) ([]byte, error) {
	src, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	size, err := unix.FcntlInt(src.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return nil, fmt.Errorf("pipe size: %w", err)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, err
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, size); err != nil {
		return nil, fmt.Errorf("grow pipe to %d bytes: %w", size, err)
	}
	n, err := unix.Tee(int(src.Fd()), p[1], size, unix.SPLICE_F_NONBLOCK)
	if err == unix.EAGAIN {
		return nil, nil // empty pipe
	}
	if err != nil {
		return nil, fmt.Errorf("tee: %w", err)
	}
	buf := make([]byte, n)
	got := 0
	for got < int(n) {
		m, err := unix.Read(p[0], buf[got:])
		if err != nil {
			return nil, err
		}
		got += m
	}
	return buf, nil
}
