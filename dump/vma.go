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

// area is one VMA with what the dump needs to know about it.
type area struct {
	m     procfs.Mapping
	entry *vma.VmaEntry
	// dumpPages: private memory whose anonymous pages go into the images.
	dumpPages bool
	// lazy: pages a lazy restore may fill on demand (private anonymous, not the stack).
	lazy bool
}

// classify builds the VMA entries. Mappings lazyr cannot restore yet are refused with their address.
func classify(maps []procfs.Mapping, files *fileTable, skip [2]uint64) ([]*area, error) {
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
		case strings.HasPrefix(m.Path, "["):
			return nil, fmt.Errorf("%s: special mapping: %w", where, ErrUnsupported)
		default:
			if m.Deleted {
				return nil, fmt.Errorf("%s: mapping of a deleted file: %w", where, ErrUnsupported)
			}
			if strings.HasPrefix(m.Path, "/memfd:") || strings.HasPrefix(m.Path, "/SYSV") || strings.HasPrefix(m.Path, "/dev/zero") {
				return nil, fmt.Errorf("%s: shared memory object: %w", where, ErrUnsupported)
			}
			openFlags := uint32(unix.O_RDONLY)
			if m.Shared && m.Write {
				openFlags = unix.O_RDWR
			}
			id, err := files.mapped(m.Path, openFlags)
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
