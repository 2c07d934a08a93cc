package dump

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	ipc_shm "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-shm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/procfs"
	"github.com/lazyr/lazyr/internal/sys"
)

// System V shared memory. A task's attach of a segment shows in its maps as "/SYSV<key> (deleted)", the
// inode number being the segment id. The VMA is recorded the way CRIU does (VMA_ANON_SHARED |
// VMA_AREA_SYSVIPC, MAP_SHARED|MAP_ANONYMOUS, shmid = the segment id, pgoff = the offset in the segment),
// plus fdflags O_RDONLY for a SHM_RDONLY attach (one without VM_MAYWRITE, smaps "mw"), which a restore
// needs to attach it the same way; CRIU guesses that from the protection.
//
// The segments themselves (key, id, size, owner, mode, contents) belong to the IPC namespace, not to a
// task: they go to ipcns-shm-NSID.img, the contents to pagemap-shmem-ID.img and a pages file, data
// pages only. lazyr reads a segment through an attach of its own (SHM_RDONLY, in the tree's IPC
// namespace): the pages in memory (mincore) that hold more than zeros are the data, holes and zero
// pages are left out, and a segment with pages in swap, which mincore does not see, is read whole.

// sysvPagesBase is the first pages-ID.img number of System V segments (shmemPagesBase's for the other
// shared memory objects, which never reach it).
const sysvPagesBase = shmemPagesBase + 1<<29

// isSysvShm reports whether m is an attach of a System V shared memory segment (whose inode, the
// segment id, may well be 0).
func isSysvShm(m procfs.Mapping) bool {
	return m.Deleted && strings.HasPrefix(m.Path, "/SYSV")
}

// sysvArea fills the VMA entry of a System V attach and records the segment for the dump.
func sysvArea(m procfs.Mapping, e *vma.VmaEntry, ft *fileTable) error {
	if !m.Shared {
		return fmt.Errorf("private mapping of System V shared memory: %w", ErrUnsupported)
	}
	if m.HasFlag("ht") {
		return fmt.Errorf("System V shared memory in huge pages (SHM_HUGETLB): %w", ErrUnsupported)
	}
	e.Shmid = proto.Uint64(m.Inode)
	fdflags := uint32(unix.O_RDWR)
	if !m.HasFlag("mw") {
		fdflags = unix.O_RDONLY
	}
	e.Fdflags = proto.Uint32(fdflags)
	s := kindState[sysvAttached](ft, "sysvshm")
	if s.ids == nil {
		s.ids = map[int]bool{}
	}
	s.ids[int(m.Inode)] = true
	return nil
}

// sysvAttached is the set of segments the tree's tasks have attached.
type sysvAttached struct {
	ids map[int]bool
}

// dumpShm writes ipcns-shm-NSID.img and the contents of the segments: the attached ones, or with all
// every segment of the namespace.
// Preconditions: runs in the tree's IPC namespace (sys.InNamespaceOf), the tree frozen.
func dumpShm(d *images.Dir, ft *fileTable, nsID uint32, all bool) error {
	var ids []int
	if all {
		maxIdx, err := sys.ShmMaxIndex()
		if err != nil {
			return fmt.Errorf("shmctl(SHM_INFO): %w", err)
		}
		for i := 0; i <= maxIdx; i++ {
			id, _, err := sys.ShmStatIndex(i)
			if errors.Is(err, unix.EINVAL) {
				continue // a free slot
			}
			if err != nil {
				return fmt.Errorf("shmctl(SHM_STAT) of index %d: %w", i, err)
			}
			ids = append(ids, id)
		}
	} else {
		for id := range kindState[sysvAttached](ft, "sysvshm").ids {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 && !all {
		return nil // a namespace dumped whole has its (empty) image, as CRIU expects
	}
	sort.Ints(ids)
	// pagemap-shmem-ID.img is named by the segment id here, by the inode for the other shared memory.
	others := kindState[shmemState](ft, "shmem").objs
	for _, id := range ids {
		if others[uint64(id)] != nil {
			return fmt.Errorf("System V segment %d and shared memory inode %d would share pagemap-shmem-%d.img: %w", id, id, id, ErrUnsupported)
		}
	}
	swapped, err := sysvSwapped()
	if err != nil {
		return err
	}
	var entries []*ipc_shm.IpcShmEntry
	for i, id := range ids {
		e, err := dumpSegment(d, id, sysvPagesBase+uint32(i), swapped[id])
		if err != nil {
			return fmt.Errorf("System V shared memory segment %d: %w", id, err)
		}
		if e != nil {
			entries = append(entries, e)
		}
	}
	return d.WriteIpcShm(nsID, entries)
}

// dumpSegment writes one segment's contents and returns its entry; nil: a segment marked for
// destruction that no task has attached any more, which a restore would destroy again at once.
func dumpSegment(d *images.Dir, id int, pagesID uint32, swapped bool) (*ipc_shm.IpcShmEntry, error) {
	var ds unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &ds); err != nil {
		return nil, fmt.Errorf("shmctl(IPC_STAT): %w", err)
	}
	if ds.Perm.Mode&sys.ShmDest != 0 && ds.Nattch == 0 {
		return nil, nil
	}
	b, err := unix.SysvShmAttach(id, 0, unix.SHM_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("shmat: %w", err)
	}
	defer unix.SysvShmDetach(b)
	if len(b) == 0 {
		return nil, fmt.Errorf("segment of size 0: %w", unix.EINVAL)
	}
	if huge, err := mappedHuge(sys.ShmAddr(b)); err != nil {
		return nil, err
	} else if huge {
		return nil, fmt.Errorf("segment in huge pages (SHM_HUGETLB): %w", ErrUnsupported)
	}
	exts, err := residentExtents(b, swapped)
	if err != nil {
		return nil, err
	}
	if err := writeShmemData(d, uint64(id), pagesID, bytes.NewReader(b), exts); err != nil {
		return nil, err
	}
	return &ipc_shm.IpcShmEntry{Desc: ipcDesc(id, ds.Perm), Size: proto.Uint64(ds.Segsz), InPagemaps: proto.Bool(true)}, nil
}

// residentExtents lists the byte ranges of the attached segment b that hold data: the pages in memory
// (or all of them when some are in swap, which mincore does not report) that are not all zeros. Reading a
// hole of shared memory allocates a page, so a segment a program has only read is all in memory; a zero
// page is restored as a hole, which reads the same.
func residentExtents(b []byte, swapped bool) ([][2]int64, error) {
	vec := make([]byte, (len(b)+images.PageSize-1)/images.PageSize)
	if swapped {
		for i := range vec {
			vec[i] = 1
		}
	} else if err := sys.Mincore(b, vec); err != nil {
		return nil, fmt.Errorf("mincore: %w", err)
	}
	zero := make([]byte, images.PageSize)
	var out [][2]int64
	for i, v := range vec {
		start, end := int64(i)*images.PageSize, min(int64(i+1)*images.PageSize, int64(len(b)))
		if v&1 == 0 || bytes.Equal(b[start:end], zero[:end-start]) {
			continue
		}
		if n := len(out); n > 0 && out[n-1][1] == start {
			out[n-1][1] = end
		} else {
			out = append(out, [2]int64{start, end})
		}
	}
	return out, nil
}

// mappedHuge reports whether lazyr's own mapping at addr is in huge pages (smaps "ht").
func mappedHuge(addr uint64) (bool, error) {
	maps, err := procfs.Smaps(os.Getpid())
	if err != nil {
		return false, err
	}
	for _, m := range maps {
		if m.Start == addr {
			return m.HasFlag("ht"), nil
		}
	}
	return false, fmt.Errorf("lazyr's attach at %#x is not in its maps", addr)
}

// sysvSwapped returns the segments of the calling thread's IPC namespace with pages in swap, from
// /proc/sysvipc/shm (which lists the namespace of whoever opens it).
func sysvSwapped() (map[int]bool, error) {
	f, err := os.Open("/proc/sysvipc/shm")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[int]bool{}
	sc := bufio.NewScanner(f)
	var idCol, swapCol = -1, -1
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if idCol < 0 {
			for i, h := range fields {
				switch h {
				case "shmid":
					idCol = i
				case "swap":
					swapCol = i
				}
			}
			if idCol < 0 || swapCol < 0 {
				return nil, fmt.Errorf("/proc/sysvipc/shm: no shmid and swap columns in %q", sc.Text())
			}
			continue
		}
		if len(fields) <= max(idCol, swapCol) {
			continue
		}
		id, err1 := strconv.Atoi(fields[idCol])
		swap, err2 := strconv.ParseUint(fields[swapCol], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("/proc/sysvipc/shm: bad line %q", sc.Text())
		}
		out[id] = swap > 0
	}
	return out, sc.Err()
}
