package dump

import (
	"fmt"
	"sort"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fifo"
	pipe_data "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
)

// fifoKind: named pipes, restored by opening their path again. As in CRIU, the FIFO entry points at a
// regular-file entry for the path (regf_id), and the unread bytes, which belong to the pipe and not to
// one of its ends, go once per pipe to fifo-data.img.
type fifoKind struct{}

func init() { registerFdKind(fifoKind{}) }

func (fifoKind) handles(f *openFile) bool {
	return strings.HasPrefix(f.Fd.Target, "/") && !strings.HasSuffix(f.Fd.Target, " (deleted)") && f.Stat.Mode&unix.S_IFMT == unix.S_IFIFO
}

type fifoState struct {
	fds map[uint64][2]int // pipe inode -> a pid and fd to read its data through
}

func (fifoKind) dump(ft *fileTable, f *openFile, id uint32) (*fdinfo.FileEntry, error) {
	s := kindState[fifoState](ft, "fifo")
	if s.fds == nil {
		s.fds = map[uint64][2]int{}
	}
	if _, ok := s.fds[f.Stat.Ino]; !ok {
		s.fds[f.Stat.Ino] = [2]int{f.Pid, f.Fd.Num}
	}
	regID := ft.id()
	ft.entries = append(ft.entries, &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_REG.Enum(),
		Id:   proto.Uint32(regID),
		Reg: &regfile.RegFileEntry{
			Id: proto.Uint32(regID), Flags: proto.Uint32(f.Flags), Pos: proto.Uint64(0), Fown: zeroFown(),
			Name: proto.String(f.Fd.Target), Mode: proto.Uint32(f.Stat.Mode), Size: proto.Uint64(0),
		},
	})
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_FIFO.Enum(),
		Id:   proto.Uint32(id),
		Fifo: &fifo.FifoEntry{Id: proto.Uint32(id), PipeId: proto.Uint32(uint32(f.Stat.Ino)), RegfId: proto.Uint32(regID)},
	}, nil
}

func (fifoKind) finish(ft *fileTable) error {
	s := kindState[fifoState](ft, "fifo")
	inos := make([]uint64, 0, len(s.fds))
	for ino := range s.fds {
		inos = append(inos, ino)
	}
	sort.Slice(inos, func(i, j int) bool { return inos[i] < inos[j] })
	var recs []images.Record
	for _, ino := range inos {
		pf := s.fds[ino]
		b, err := peekPipe(pf[0], pf[1])
		if err != nil {
			return fmt.Errorf("process %d fd %d: read FIFO data: %w", pf[0], pf[1], err)
		}
		if len(b) > 0 {
			recs = append(recs, images.Record{
				Entry:   &pipe_data.PipeDataEntry{PipeId: proto.Uint32(uint32(ino)), Bytes: proto.Uint32(uint32(len(b)))},
				Payload: b,
			})
		}
	}
	if len(recs) > 0 {
		ft.addRawImage(func(d *images.Dir) error { return d.WriteRecords(images.FifoDataName, recs...) })
	}
	return nil
}
