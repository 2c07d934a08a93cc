package dump

import (
	"fmt"
	"os"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pipe"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
)

// pipeKind: pipes whose both ends are in the task; their unread bytes go to pipes-data.img.
type pipeKind struct{}

func init() { registerFdKind(pipeKind{}) }

func (pipeKind) handles(f *openFile) bool { return strings.HasPrefix(f.Fd.Target, "pipe:[") }

func (pipeKind) dump(ft *fileTable, f *openFile, id uint32) (*fdinfo.FileEntry, error) {
	ino := f.Stat.Ino
	if ft.pipeEnds == nil {
		ft.pipeEnds = map[uint64]*pipeEnds{}
	}
	ends := ft.pipeEnds[ino]
	if ends == nil {
		ends = &pipeEnds{}
		ft.pipeEnds[ino] = ends
	}
	if f.Flags&unix.O_ACCMODE == unix.O_WRONLY {
		ends.write = true
	} else {
		ends.read = true
	}
	ends.pid, ends.fd = ft.pid, f.Fd.Num
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_PIPE.Enum(),
		Id:   proto.Uint32(id),
		Pipe: &pipe.PipeEntry{Id: proto.Uint32(id), PipeId: proto.Uint32(uint32(ino)), Flags: proto.Uint32(f.Flags), Fown: zeroFown()},
	}, nil
}

type pipeEnds struct {
	read, write bool
	pid, fd     int // one fd of the pipe, to read its data through
}

func (pipeKind) finish(ft *fileTable) error {
	var data []images.PipeData
	for ino, ends := range ft.pipeEnds {
		if !ends.read || !ends.write {
			return fmt.Errorf("process %d fd %d: pipe:[%d] has its other end outside the dumped tree (external pipes are not supported yet): %w", ends.pid, ends.fd, ino, ErrUnsupported)
		}
		b, err := peekPipe(ends.pid, ends.fd)
		if err != nil {
			return fmt.Errorf("fd %d: read pipe data: %w", ends.fd, err)
		}
		if len(b) > 0 {
			data = append(data, images.PipeData{PipeID: uint32(ino), Data: b})
		}
	}
	if len(data) > 0 {
		ft.addRawImage(func(d *images.Dir) error { return d.WritePipeData(data) })
	}
	return nil
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
