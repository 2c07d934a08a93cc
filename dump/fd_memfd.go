package dump

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/memfd"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
)

// memfdKind: memfd files. As in CRIU, an open memfd is a MEMFD file entry (flags, position) pointing at
// an inode entry in memfd.img (name, size, seals, owner), and the inode's contents are a shared memory
// object (pagemap-shmem-SHMID.img, SHMID the inode number) also used by mappings of the memfd.
type memfdKind struct{}

func init() { registerFdKind(memfdKind{}) }

// memfdPrefix is how a memfd's path reads in /proc: "/memfd:NAME (deleted)".
const memfdPrefix = "/memfd:"

func (memfdKind) handles(f *openFile) bool {
	return strings.HasPrefix(f.Fd.Target, memfdPrefix) && strings.HasSuffix(f.Fd.Target, " (deleted)") && f.Stat.Mode&unix.S_IFMT == unix.S_IFREG
}

func (memfdKind) dump(ft *fileTable, f *openFile, id uint32) (*fdinfo.FileEntry, error) {
	inode, err := ft.memfdInode(fmt.Sprintf("/proc/%d/fd/%d", f.Pid, f.Fd.Num), strings.TrimSuffix(f.Fd.Target, " (deleted)"), f.Stat)
	if err != nil {
		return nil, err
	}
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_MEMFD.Enum(),
		Id:   proto.Uint32(id),
		Memfd: &memfd.MemfdFileEntry{
			Id: proto.Uint32(id), Flags: proto.Uint32(f.Flags), Pos: proto.Uint64(uint64(f.Info.Pos)), Fown: zeroFown(),
			InodeId: proto.Uint32(inode),
		},
	}, nil
}

type memfdState struct {
	byIno      map[uint64]*memfd.MemfdInodeEntry
	mapped     map[string]uint32 // file entries made for mappings, by inode and open flags
	registered bool
}

// memfdInode records the memfd inode behind path (a /proc path lazyr can open) and returns its
// inode_id, the inode number: unique among the memfds of one machine, and what ties file entries and
// mappings of the same memfd together.
func (ft *fileTable) memfdInode(path, name string, st *unix.Stat_t) (uint32, error) {
	s := kindState[memfdState](ft, "memfd")
	if s.byIno == nil {
		s.byIno, s.mapped = map[uint64]*memfd.MemfdInodeEntry{}, map[string]uint32{}
	}
	if st.Ino > 1<<32-1 {
		return 0, fmt.Errorf("memfd inode %d does not fit the image's 32-bit ids: %w", st.Ino, ErrUnsupported)
	}
	if _, ok := s.byIno[st.Ino]; ok {
		return uint32(st.Ino), nil
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("open memfd %s: %w", name, err)
	}
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	f.Close()
	if err != nil {
		return 0, fmt.Errorf("memfd %s seals: %w", name, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(path, &sfs); err == nil && sfs.Type == unix.HUGETLBFS_MAGIC {
		return 0, fmt.Errorf("memfd %s: hugetlb memfd: %w", name, ErrUnsupported)
	}
	s.byIno[st.Ino] = &memfd.MemfdInodeEntry{
		Name: proto.String(strings.TrimPrefix(name, memfdPrefix)), Uid: proto.Uint32(st.Uid), Gid: proto.Uint32(st.Gid),
		Size: proto.Uint64(uint64(st.Size)), Shmid: proto.Uint32(uint32(st.Ino)), Seals: proto.Uint32(uint32(seals)),
		InodeId: proto.Uint64(st.Ino), Mode: proto.Uint32(st.Mode & 0o7777),
	}
	ft.addShmem(st.Ino, path, uint64(st.Size))
	if !s.registered {
		s.registered = true
		ft.addRawImage(func(d *images.Dir) error {
			inos := make([]uint64, 0, len(s.byIno))
			for ino := range s.byIno {
				inos = append(inos, ino)
			}
			sort.Slice(inos, func(i, j int) bool { return inos[i] < inos[j] })
			entries := make([]proto.Message, len(inos))
			for i, ino := range inos {
				entries[i] = s.byIno[ino]
			}
			return d.Write(images.MemfdName, entries...)
		})
	}
	return uint32(st.Ino), nil
}

// memfdMapped returns the id of a MEMFD file entry for a mapping of a memfd (shared by all mappings of
// the inode with the same open flags), as CRIU records them in VmaEntry.shmid.
func (ft *fileTable) memfdMapped(path, name string, st *unix.Stat_t, flags uint32) (uint32, error) {
	inode, err := ft.memfdInode(path, name, st)
	if err != nil {
		return 0, err
	}
	s := kindState[memfdState](ft, "memfd")
	key := fmt.Sprintf("%d\x00%d", inode, flags)
	if id, ok := s.mapped[key]; ok {
		return id, nil
	}
	id := ft.id()
	ft.entries = append(ft.entries, &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_MEMFD.Enum(),
		Id:   proto.Uint32(id),
		Memfd: &memfd.MemfdFileEntry{
			Id: proto.Uint32(id), Flags: proto.Uint32(flags), Pos: proto.Uint64(0), Fown: zeroFown(), InodeId: proto.Uint32(inode),
		},
	})
	s.mapped[key] = id
	return id, nil
}
