package dump

import (
	"fmt"
	"os"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	remap_file_path "github.com/checkpoint-restore/go-criu/v8/crit/images/remap-file-path"
	timeimg "github.com/checkpoint-restore/go-criu/v8/crit/images/time"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
)

// ghostKind: regular files that were deleted while open ("ghost" files, as CRIU calls them). Their
// contents go into the images: ghost-file-ID.img holds only the data extents (SEEK_DATA/SEEK_HOLE), so a
// large sparse file stays small; the file entry keeps the old path and remap-fpath.img ties it to the
// ghost. Files mapped after deletion use the same ghost (one per inode).
type ghostKind struct{}

func init() { registerFdKind(ghostKind{}) }

func (ghostKind) handles(f *openFile) bool {
	t := f.Fd.Target
	return strings.HasPrefix(t, "/") && strings.HasSuffix(t, " (deleted)") && !strings.HasPrefix(t, memfdPrefix) &&
		f.Stat.Mode&unix.S_IFMT == unix.S_IFREG
}

func (ghostKind) dump(ft *fileTable, f *openFile, id uint32) (*fdinfo.FileEntry, error) {
	name := strings.TrimSuffix(f.Fd.Target, " (deleted)")
	gid, err := ft.ghost(fmt.Sprintf("/proc/%d/fd/%d", f.Pid, f.Fd.Num), name, f.Stat)
	if err != nil {
		return nil, err
	}
	ft.remap(id, gid)
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_REG.Enum(),
		Id:   proto.Uint32(id),
		Reg: &regfile.RegFileEntry{
			Id: proto.Uint32(id), Flags: proto.Uint32(f.Flags), Pos: proto.Uint64(uint64(f.Info.Pos)), Fown: zeroFown(),
			Name: proto.String(name), Size: proto.Uint64(uint64(f.Stat.Size)), Mode: proto.Uint32(f.Stat.Mode),
		},
	}, nil
}

type ghostState struct {
	byIno  map[[2]uint64]uint32 // (dev, ino) -> ghost id
	mapped map[string]uint32    // file entries made for mappings, by ghost id and open flags
	remaps []proto.Message
	nextID uint32
}

// ghost records the deleted file that path (a /proc path lazyr can open) leads to and returns its ghost
// id; the contents are read when the images are written, with the task still frozen.
func (ft *fileTable) ghost(path, name string, st *unix.Stat_t) (uint32, error) {
	s := kindState[ghostState](ft, "ghost")
	if s.byIno == nil {
		s.byIno, s.mapped = map[[2]uint64]uint32{}, map[string]uint32{}
	}
	key := [2]uint64{st.Dev, st.Ino}
	if id, ok := s.byIno[key]; ok {
		return id, nil
	}
	if st.Nlink > 0 {
		// Unlinked under this name but linked under another: copying it would split one file in two.
		return 0, fmt.Errorf("%s was deleted but has %d other links: %w", name, st.Nlink, ErrUnsupported)
	}
	s.nextID++
	id := s.nextID
	s.byIno[key] = id
	e := &ghost_file.GhostFileEntry{
		Uid: proto.Uint32(st.Uid), Gid: proto.Uint32(st.Gid), Mode: proto.Uint32(st.Mode),
		Dev: proto.Uint32(uint32(st.Dev)), Ino: proto.Uint64(st.Ino), Size: proto.Uint64(uint64(st.Size)),
		Atim: &timeimg.Timeval{TvSec: proto.Uint64(uint64(st.Atim.Sec)), TvUsec: proto.Uint64(uint64(st.Atim.Nsec / 1000))},
		Mtim: &timeimg.Timeval{TvSec: proto.Uint64(uint64(st.Mtim.Sec)), TvUsec: proto.Uint64(uint64(st.Mtim.Nsec / 1000))},
	}
	ft.addRawImage(func(d *images.Dir) error {
		chunks, err := readExtents(path, st.Size)
		if err != nil {
			return fmt.Errorf("ghost file %s: %w", name, err)
		}
		return d.WriteGhostFile(id, e, chunks)
	})
	return id, nil
}

// remap ties file entry fileID to ghost gid (remap-fpath.img, written once with every remap).
func (ft *fileTable) remap(fileID, gid uint32) {
	s := kindState[ghostState](ft, "ghost")
	if len(s.remaps) == 0 {
		ft.addRawImage(func(d *images.Dir) error { return d.Write(images.RemapFpathName, s.remaps...) })
	}
	s.remaps = append(s.remaps, &remap_file_path.RemapFilePathEntry{
		OrigId: proto.Uint32(fileID), RemapId: proto.Uint32(gid), RemapType: remap_file_path.RemapType_GHOST.Enum(),
	})
}

// ghostMapped returns the id of a regular-file entry for a mapping of a deleted file, remapped to its
// ghost (one entry per ghost and open flags).
func (ft *fileTable) ghostMapped(path, name string, st *unix.Stat_t, flags uint32) (uint32, error) {
	gid, err := ft.ghost(path, name, st)
	if err != nil {
		return 0, err
	}
	s := kindState[ghostState](ft, "ghost")
	key := fmt.Sprintf("%d\x00%d", gid, flags)
	if id, ok := s.mapped[key]; ok {
		return id, nil
	}
	id := ft.id()
	ft.entries = append(ft.entries, &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_REG.Enum(),
		Id:   proto.Uint32(id),
		Reg: &regfile.RegFileEntry{
			Id: proto.Uint32(id), Flags: proto.Uint32(flags), Pos: proto.Uint64(0), Fown: zeroFown(),
			Name: proto.String(name), Size: proto.Uint64(uint64(st.Size)), Mode: proto.Uint32(st.Mode),
		},
	})
	ft.remap(id, gid)
	s.mapped[key] = id
	return id, nil
}

// readExtents reads the data extents of the file at path, up to size.
func readExtents(path string, size int64) ([]images.GhostChunk, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	exts, err := dataExtents(f, size)
	if err != nil {
		return nil, err
	}
	chunks := make([]images.GhostChunk, 0, len(exts))
	for _, e := range exts {
		b := make([]byte, e[1]-e[0])
		if _, err := f.ReadAt(b, e[0]); err != nil {
			return nil, fmt.Errorf("read %d bytes at %d: %w", len(b), e[0], err)
		}
		chunks = append(chunks, images.GhostChunk{Off: uint64(e[0]), Data: b})
	}
	return chunks, nil
}
