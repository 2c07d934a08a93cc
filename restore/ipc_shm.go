package restore

import (
	"errors"
	"fmt"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/compel"
	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/sys"
)

// System V shared memory. Segments are created (or found) and filled by lazyr in the tree's IPC
// namespace before any task is built (ipc_ns.go), so they are shared memory that is complete before
// anything runs, lazy restore or not; every task then attaches them with an injected shmat at the dumped
// address, which makes all the processes of the tree share the one segment again.

// prepareSegment makes segment s exist with its dumped id and contents.
// Preconditions: runs in the tree's IPC namespace.
func (ir *ipcRestore) prepareSegment(d *images.Dir, s images.IpcShm) error {
	desc := s.Entry.GetDesc()
	id, size := int(desc.GetId()), s.Entry.GetSize()
	if s.Entry.GetHugetlbFlag() != 0 {
		return fmt.Errorf("segment in huge pages (SHM_HUGETLB): %w", ErrUnsupported)
	}
	var ds unix.SysvShmDesc
	_, err := unix.SysvShmCtl(id, unix.IPC_STAT, &ds)
	switch {
	case err == nil:
		// It outlived the dumped tree (or is another one): the same key and size make it the tree's, and
		// it is attached as it is, with the contents it has now, which other processes may share.
		if uint32(ds.Perm.Key) == desc.GetKey() && ds.Segsz == size {
			return nil
		}
		return fmt.Errorf("id %d belongs to another segment (key %#x, %d bytes; the image has key %#x, %d bytes): %w",
			id, uint32(ds.Perm.Key), ds.Segsz, desc.GetKey(), size, ErrIPCIDInUse)
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIDRM):
	default:
		return fmt.Errorf("shmctl(IPC_STAT): %w", err)
	}
	mode := desc.GetMode()
	err = createWithID("shm", id, func() (int, error) {
		return unix.SysvShmGet(int(int32(desc.GetKey())), int(size), int(mode&0o777)|unix.IPC_CREAT|unix.IPC_EXCL)
	}, func(got int) { _, _ = unix.SysvShmCtl(got, unix.IPC_RMID, nil) })
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	if !ir.newNS {
		ir.created = append(ir.created, id)
	}
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &ds); err != nil {
		return fmt.Errorf("shmctl(IPC_STAT): %w", err)
	}
	ds.Perm.Uid, ds.Perm.Gid, ds.Perm.Mode = desc.GetUid(), desc.GetGid(), mode&0o777
	if _, err := unix.SysvShmCtl(id, unix.IPC_SET, &ds); err != nil {
		return fmt.Errorf("shmctl(IPC_SET) owner %d:%d mode %#o: %w", desc.GetUid(), desc.GetGid(), mode&0o777, err)
	}
	if err := fillSegment(d, id, s); err != nil {
		return err
	}
	if mode&sys.ShmLocked != 0 {
		if _, err := unix.SysvShmCtl(id, sys.ShmLock, nil); err != nil {
			return fmt.Errorf("shmctl(SHM_LOCK): %w", err)
		}
	}
	if mode&sys.ShmDest != 0 {
		ir.rmid = append(ir.rmid, id)
	}
	return nil
}

// fillSegment writes the dumped contents into the fresh segment id through an attach of lazyr's own:
// only the data pages, holes stay holes.
func fillSegment(d *images.Dir, id int, s images.IpcShm) error {
	b, err := unix.SysvShmAttach(id, 0, 0)
	if err != nil {
		return fmt.Errorf("shmat: %w", err)
	}
	defer unix.SysvShmDetach(b)
	if s.Data != nil { // contents inline, from an older CRIU
		copy(b, s.Data)
		return nil
	}
	pages, err := shmemData(d, uint64(id))
	if err != nil {
		return err
	}
	defer pages.Close()
	size := uint64(len(b))
	tail := make([]byte, images.PageSize)
	for _, e := range pages.Pagemap().Extents {
		for addr := e.Vaddr; addr < e.End() && addr < size; {
			n := min(e.End()-addr, uint64(fillChunk))
			if addr+n <= size {
				if err := pages.ReadAt(b[addr:addr+n], addr); err != nil {
					return err
				}
				addr += n
				continue
			}
			// The last page sticks out of the segment: whole pages up to it, then the part of it inside.
			if whole := (size - addr) &^ (images.PageSize - 1); whole > 0 {
				if err := pages.ReadAt(b[addr:addr+whole], addr); err != nil {
					return err
				}
				addr += whole
			}
			if err := pages.ReadAt(tail, addr); err != nil {
				return err
			}
			copy(b[addr:], tail)
			addr = e.End()
		}
	}
	return nil
}

// segmentSize returns the size of segment id.
func (ir *ipcRestore) segmentSize(id uint32) uint64 {
	if ir == nil || ir.byID[id] == nil {
		return 0
	}
	return ir.byID[id].GetSize()
}

// sysvAttach is one shmat of a task: the VMAs (split by mprotect, or partly unmapped) of one segment at
// one address.
type sysvAttach struct {
	shmid uint32
	base  uint64 // the attach address: each VMA's start minus its offset in the segment
	vmas  []*vma.VmaEntry
}

// attachSysv attaches the segments the dumped task had attached, where it had them, and unmaps the parts
// of an attach the task had unmapped. The attach is read-only if the dump says so (fdflags, or without
// it, as CRIU does, no writable VMA), executable if a VMA is; VMAs with another protection get theirs in
// protectAll.
func (as *addressSpace) attachSysv(vmas []*vma.VmaEntry) error {
	byKey := map[[2]uint64]*sysvAttach{}
	var attaches []*sysvAttach
	for _, v := range vmas {
		k := [2]uint64{v.GetShmid(), v.GetStart() - v.GetPgoff()}
		a := byKey[k]
		if a == nil {
			a = &sysvAttach{shmid: uint32(v.GetShmid()), base: k[1]}
			byKey[k] = a
			attaches = append(attaches, a)
		}
		a.vmas = append(a.vmas, v)
	}
	sort.Slice(attaches, func(i, j int) bool { return attaches[i].base < attaches[j].base })
	for _, a := range attaches {
		if err := as.attachOne(a); err != nil {
			return fmt.Errorf("System V segment %d at %#x: %w", a.shmid, a.base, err)
		}
	}
	return nil
}

func (as *addressSpace) attachOne(a *sysvAttach) error {
	size := (as.sysv.segmentSize(a.shmid) + images.PageSize - 1) &^ (images.PageSize - 1)
	if size == 0 {
		return fmt.Errorf("%w: segment of size 0", ErrBadImages)
	}
	rdonly, exec := true, false
	for _, v := range a.vmas {
		if v.GetEnd() > a.base+size {
			return fmt.Errorf("%w: mapping %#x-%#x runs past the segment's %d bytes", ErrBadImages, v.GetStart(), v.GetEnd(), size)
		}
		if v.Fdflags != nil {
			rdonly = rdonly && v.GetFdflags()&unix.O_ACCMODE == unix.O_RDONLY
		} else {
			rdonly = rdonly && v.GetProt()&unix.PROT_WRITE == 0
		}
		exec = exec || v.GetProt()&unix.PROT_EXEC != 0
	}
	flags, prot := uint64(0), uint32(unix.PROT_READ|unix.PROT_WRITE)
	if rdonly {
		flags |= unix.SHM_RDONLY
		prot &^= unix.PROT_WRITE
	}
	if exec {
		flags |= sys.ShmExec
		prot |= unix.PROT_EXEC
	}
	got, err := as.t.Syscall(unix.SYS_SHMAT, uint64(a.shmid), a.base, flags)
	if err != nil {
		return fmt.Errorf("shmat: %w", err)
	}
	if got != a.base {
		return fmt.Errorf("shmat attached it at %#x", got)
	}
	// Unmap what the dumped task had unmapped of the attach (the VMAs are sorted by address).
	var calls []compel.Call
	next := a.base
	for _, v := range a.vmas {
		if v.GetStart() > next {
			calls = append(calls, compel.NewCall(unix.SYS_MUNMAP, next, v.GetStart()-next))
		}
		next = v.GetEnd()
		if v.GetProt() != prot {
			as.mappedProt[v.GetStart()] = prot
		}
	}
	if next < a.base+size {
		calls = append(calls, compel.NewCall(unix.SYS_MUNMAP, next, a.base+size-next))
	}
	if err := as.t.Batch(calls); err != nil {
		return fmt.Errorf("unmap the parts the task had unmapped: %w", err)
	}
	return nil
}
