package dump

import (
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// allowedCharDevs are character devices that are restored by opening their path again.
var allowedCharDevs = map[string]bool{"/dev/null": true, "/dev/zero": true, "/dev/full": true, "/dev/random": true, "/dev/urandom": true}

// regKind: regular files, directories and a few stateless devices, restored by path and position.
type regKind struct{}

func init() { registerFdKind(regKind{}) }

func (regKind) handles(f *openFile) bool {
	t := f.Fd.Target
	if !strings.HasPrefix(t, "/") || strings.HasSuffix(t, " (deleted)") {
		return false
	}
	switch f.Stat.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR:
		return true
	case unix.S_IFCHR:
		return allowedCharDevs[t]
	}
	return false
}

func (regKind) dump(ft *fileTable, f *openFile, id uint32) (*fdinfo.FileEntry, error) {
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_REG.Enum(),
		Id:   proto.Uint32(id),
		Reg: &regfile.RegFileEntry{
			Id:    proto.Uint32(id),
			Flags: proto.Uint32(f.Flags),
			Pos:   proto.Uint64(uint64(f.Info.Pos)),
			Fown:  zeroFown(),
			Name:  proto.String(f.Fd.Target),
			Size:  proto.Uint64(uint64(f.Stat.Size)),
			Mode:  proto.Uint32(f.Stat.Mode),
		},
	}, nil
}
