package dump

import (
	"fmt"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/procfs"
)

// madvise bits recorded from smaps VmFlags: CRIU stores 1<<MADV_x.
var madvFlags = map[string]uint64{
	"rr": 1 << unix.MADV_RANDOM,
	"sr": 1 << unix.MADV_SEQUENTIAL,
	"dc": 1 << unix.MADV_DONTFORK,
	"mg": 1 << unix.MADV_MERGEABLE,
	"hg": 1 << unix.MADV_HUGEPAGE,
	"nh": 1 << unix.MADV_NOHUGEPAGE,
	"dd": 1 << unix.MADV_DONTDUMP,
	"wf": 1 << unix.MADV_WIPEONFORK,
}

// images.VMAAreaMemfd is CRIU's VMA_AREA_MEMFD status bit: a mapping of a memfd, whose VmaEntry.shmid is the
// id of a MEMFD file entry.

// isAnonShared reports whether m is MAP_SHARED anonymous memory: an unlinked shmem inode the kernel
// names "/dev/zero (deleted)", or "[anon_shmem:NAME]" once named with PR_SET_VMA_ANON_NAME.
func isAnonShared(m procfs.Mapping) bool {
	return m.Shared && m.Inode != 0 && ((m.Deleted && m.Path == "/dev/zero") || strings.HasPrefix(m.Path, "[anon_shmem:"))
}

// mappedFile stats the file a mapping maps, through /proc/PID/map_files (which lazyr can also open, even
// for deleted files and shmem objects), and checks that it is the inode the maps line names.
func mappedFile(pid int, m procfs.Mapping) (*unix.Stat_t, string, error) {
	path := fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End)
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, "", fmt.Errorf("stat mapped file: %w", err)
	}
	if st.Ino != m.Inode {
		return nil, "", fmt.Errorf("%s is inode %d, the maps line says %d", path, st.Ino, m.Inode)
	}
	return &st, path, nil
}

// area is one VMA with what the dump needs to know about it.
type area struct {
	m     procfs.Mapping
	entry *vma.VmaEntry
	// dumpPages: private memory whose anonymous pages go into the images.
	dumpPages bool
	// lazy: pages a lazy restore may fill on demand (private anonymous, not the stack).
	lazy bool
}

// classify builds the VMA entries of process pid. Mappings lazyr cannot restore yet are refused with their address.
func classify(pid int, maps []procfs.Mapping, files *fileTable, skip [2]uint64) ([]*area, error) {
	var out []*area
	for _, m := range maps {
		if m.Start >= skip[0] && m.End <= skip[1] {
			continue // our own scratch mapping
		}
		e := &vma.VmaEntry{
			Start: proto.Uint64(m.Start),
			End:   proto.Uint64(m.End),
			Pgoff: proto.Uint64(m.Offset),
			Shmid: proto.Uint64(0),
			Fd:    proto.Int64(-1),
		}
		prot := uint32(0)
		if m.Read {
			prot |= unix.PROT_READ
		}
		if m.Write {
			prot |= unix.PROT_WRITE
		}
		if m.Exec {
			prot |= unix.PROT_EXEC
		}
		e.Prot = proto.Uint32(prot)
		var madv uint64
		for _, f := range m.VmFlags {
			madv |= madvFlags[f]
		}
		if madv != 0 {
			e.Madv = proto.Uint64(madv)
		}
		a := &area{m: m, entry: e}
		flags := uint32(unix.MAP_PRIVATE)
		if m.Shared {
			flags = unix.MAP_SHARED
		}
		status := uint32(images.VMAAreaRegular)
		where := fmt.Sprintf("mapping %#x-%#x %q", m.Start, m.End, m.Path)
		switch {
		case m.Path == "[vsyscall]":
			continue // fixed by the kernel, never restored
		case m.Path == "[vdso]":
			status |= images.VMAAreaVDSO
			flags |= unix.MAP_ANONYMOUS
		case m.Path == "[vvar]" || m.Path == "[vvar_vclock]":
			status |= images.VMAAreaVVAR
			flags |= unix.MAP_ANONYMOUS
		case m.Inode == 0 && (m.Path == "" || m.Path == "[heap]" || m.Path == "[stack]" || strings.HasPrefix(m.Path, "[anon:")):
			if m.Shared {
				return nil, fmt.Errorf("%s: shared anonymous memory: %w", where, ErrUnsupported)
			}
			flags |= unix.MAP_ANONYMOUS
			status |= images.VMAAnonPrivate
			a.dumpPages = true
			a.lazy = true
			if m.Path == "[heap]" {
				status |= images.VMAAreaHeap
			}
			if m.Path == "[stack]" || m.HasFlag("gd") {
				status |= images.VMAAreaStack
				flags |= unix.MAP_GROWSDOWN
				a.lazy = false // the stack in use is filled eagerly
			}
		case isAnonShared(m):
			// MAP_SHARED|MAP_ANONYMOUS: the kernel backs it with an unlinked shmem inode; its pages are
			// the object's, not the task's, and go to the object's own pagemap.
			st, path, err := mappedFile(pid, m)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			flags |= unix.MAP_ANONYMOUS
			status |= images.VMAAnonShared
			e.Shmid = proto.Uint64(st.Ino)
			files.addShmem(st.Ino, path, uint64(st.Size))
		case isSysvShm(m):
			// System V shared memory (ipc_shm.go): the segment is dumped with the IPC namespace.
			if err := sysvArea(m, e, files); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			flags |= unix.MAP_ANONYMOUS
			status |= images.VMAAnonShared | images.VMAAreaSysVIPC
		case strings.HasPrefix(m.Path, "["):
			return nil, fmt.Errorf("%s: special mapping: %w", where, ErrUnsupported)
		default:
			openFlags := uint32(unix.O_RDONLY)
			if m.Shared && m.Write {
				openFlags = unix.O_RDWR
			}
			var id uint32
			var err error
			switch {
			case m.Deleted && strings.HasPrefix(m.Path, memfdPrefix):
				st, path, serr := mappedFile(pid, m)
				if serr != nil {
					return nil, fmt.Errorf("%s: %w", where, serr)
				}
				id, err = files.memfdMapped(path, m.Path, st, openFlags)
				status |= images.VMAAreaMemfd
			case m.Deleted:
				st, path, serr := mappedFile(pid, m)
				if serr != nil {
					return nil, fmt.Errorf("%s: %w", where, serr)
				}
				if st.Mode&unix.S_IFMT != unix.S_IFREG {
					return nil, fmt.Errorf("%s: mapping of a deleted file of mode %#o: %w", where, st.Mode&unix.S_IFMT, ErrUnsupported)
				}
				id, err = files.ghostMapped(path, m.Path, st, openFlags)
			default:
				id, err = files.mapped(m.Path, openFlags)
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			e.Shmid = proto.Uint64(uint64(id))
			e.Fdflags = proto.Uint32(openFlags)
			if m.Shared {
				status |= images.VMAFileShared
			} else {
				status |= images.VMAFilePrivate
				a.dumpPages = true // written (COW) pages of a private file mapping are anonymous
			}
		}
		e.Flags = proto.Uint32(flags)
		e.Status = proto.Uint32(status)
		out = append(out, a)
	}
	return out, nil
}
