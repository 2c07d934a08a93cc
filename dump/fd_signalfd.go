package dump

import (
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/signalfd"
	"google.golang.org/protobuf/proto"
)

// signalfdKind: the signal mask (fdinfo "sigmask", hex). Pending signals belong to the task, not to the
// signalfd, and are not part of it.
type signalfdKind struct{}

func init() { registerFdKind(signalfdKind{}) }

func (signalfdKind) handles(f *openFile) bool { return f.Fd.Target == "anon_inode:[signalfd]" }

func (signalfdKind) dump(ft *fileTable, f *openFile, id uint32) (*fdinfo.FileEntry, error) {
	mask, err := fdinfoUint(f.Info.Lines, "sigmask", 16)
	if err != nil {
		return nil, err
	}
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_SIGNALFD.Enum(),
		Id:   proto.Uint32(id),
		Sgfd: &signalfd.SignalfdEntry{Id: proto.Uint32(id), Flags: proto.Uint32(f.Flags), Fown: zeroFown(), Sigmask: proto.Uint64(mask)},
	}, nil
}
