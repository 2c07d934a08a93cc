package restore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/memfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	remap_file_path "github.com/checkpoint-restore/go-criu/v8/crit/images/remap-file-path"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/compel"
	"github.com/lazyr/lazyr/images"
)

// images.VMAAreaMemfd is CRIU's VMA_AREA_MEMFD: VmaEntry.shmid is the id of a MEMFD file entry.

// Shared memory objects (MAP_SHARED anonymous memory, memfds) and deleted files are not in the task's
// pagemap: their contents are in images of their own (pagemap-shmem-SHMID.img, ghost-file-ID.img), and
// every mapping and fd of one object must end up on the same inode, so that a write through one is seen
// through the others. The first user creates the object; mappings are made before fds, and an fd of a
// mapped object is opened through /proc/self/map_files of its mapping, an fd of an object opened earlier
// through /proc/self/fd of that fd. Contents are written from lazyr with pwrite() into a file of the
// object, data extents only, so holes stay holes.

// shmemData returns the pagemap of shared memory object shmid and its pages (Pages.ReadAt takes byte
// offsets into the object as "addresses").
func shmemData(d *images.Dir, shmid uint64) (*images.Pages, error) {
	name := images.PagemapShmemName(shmid)
	img, err := images.DecodeFile(filepath.Join(d.Path(), name))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadImages, name, err)
	}
	if img.Magic != "PAGEMAP" || len(img.Entries) == 0 {
		return nil, fmt.Errorf("%w: %s is not a pagemap", ErrBadImages, name)
	}
	head, ok := img.Entries[0].(*pagemap.PagemapHead)
	if !ok {
		return nil, fmt.Errorf("%w: %s: no pagemap head", ErrBadImages, name)
	}
	pm := &images.Pagemap{PagesID: head.GetPagesId()}
	var off int64
	for _, m := range img.Entries[1:] {
		pe, ok := m.(*pagemap.PagemapEntry)
		if !ok {
			return nil, fmt.Errorf("%w: %s: entry of type %T", ErrBadImages, name, m)
		}
		n := pe.GetNrPages()
		if pe.NrPages == nil {
			n = uint64(pe.GetCompatNrPages())
		}
		e := images.Extent{Vaddr: pe.GetVaddr(), NrPages: n, Flags: pe.GetFlags(), Offset: -1}
		if pe.Flags == nil {
			e.Flags = images.PEPresent
		}
		if !e.Present() {
			return nil, fmt.Errorf("%w: %s: pages at %#x are not in the images (flags %#x)", ErrBadImages, name, e.Vaddr, e.Flags)
		}
		e.Offset = off
		off += int64(n) * images.PageSize
		pm.Extents = append(pm.Extents, e)
	}
	pages, err := d.OpenPages(pm) // validates the extents and the pages file's size
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadImages, name, err)
	}
	return pages, nil
}

// fillShmem writes object shmid's saved contents below limit into the file at path (a /proc path of the
// object that lazyr opens).
func fillShmem(d *images.Dir, shmid uint64, path string, limit uint64) error {
	pages, err := shmemData(d, shmid)
	if err != nil {
		return err
	}
	defer pages.Close()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open shared memory %d: %w", shmid, err)
	}
	defer f.Close()
	buf := make([]byte, fillChunk)
	for _, e := range pages.Pagemap().Extents {
		for addr := e.Vaddr; addr < e.End() && addr < limit; {
			n := min(uint64(len(buf)), e.End()-addr, (limit-addr+images.PageSize-1)&^(images.PageSize-1))
			if err := pages.ReadAt(buf[:n], addr); err != nil {
				return err
			}
			w := min(n, limit-addr) // the last page may stick out of the object
			if _, err := f.WriteAt(buf[:w], int64(addr)); err != nil {
				return fmt.Errorf("write shared memory %d at %d: %w", shmid, addr, err)
			}
			addr += n
		}
	}
	return nil
}

// sharedState is what the address space keeps about shared objects while it maps them.
type sharedState struct {
	memfds map[uint64]*memfd.MemfdInodeEntry // by inode id (memfd.img)
	remaps map[uint32]uint32                 // file id -> ghost id (remap-fpath.img)
}

func loadShared(d *images.Dir) (*sharedState, error) {
	s := &sharedState{memfds: map[uint64]*memfd.MemfdInodeEntry{}, remaps: map[uint32]uint32{}}
	inodes, err := images.Read[memfd.MemfdInodeEntry](d, images.MemfdName)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadImages, images.MemfdName, err)
	}
	for _, e := range inodes {
		s.memfds[e.GetInodeId()] = e
	}
	remaps, err := images.Read[remap_file_path.RemapFilePathEntry](d, images.RemapFpathName)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadImages, images.RemapFpathName, err)
	}
	for _, e := range remaps {
		if e.GetRemapType() != remap_file_path.RemapType_GHOST {
			return nil, fmt.Errorf("file %d is remapped as %v: %w", e.GetOrigId(), e.GetRemapType(), ErrUnsupported)
		}
		s.remaps[e.GetOrigId()] = e.GetRemapId()
	}
	return s, nil
}

// memfdOf returns the memfd inode a MEMFD file entry refers to.
func (s *sharedState) memfdOf(p *plan, fileID uint32) (*memfd.MemfdInodeEntry, error) {
	m := p.files[fileID].GetMemfd()
	if m == nil {
		return nil, fmt.Errorf("%w: file %d is not a memfd", ErrBadImages, fileID)
	}
	inode := s.memfds[uint64(m.GetInodeId())]
	if inode == nil {
		return nil, fmt.Errorf("%w: memfd inode %d missing from %s", ErrBadImages, m.GetInodeId(), images.MemfdName)
	}
	return inode, nil
}

// createMemfd makes a memfd like inode in the task and returns its fd (O_RDWR): memfd_create, size,
// contents, owner and mode, and last the seals (a write seal would forbid filling it).
func createMemfd(t *compel.Task, d *images.Dir, inode *memfd.MemfdInodeEntry) (uint64, error) {
	name := inode.GetName()
	if len(name) > 249 {
		return 0, fmt.Errorf("%w: memfd name of %d bytes", ErrBadImages, len(name))
	}
	addr, err := t.WriteScratch(0, append([]byte(name), 0))
	if err != nil {
		return 0, err
	}
	fd, err := t.Syscall(unix.SYS_MEMFD_CREATE, addr, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return 0, fmt.Errorf("memfd_create %q: %w", name, err)
	}
	if err := setupMemfd(t, d, fd, inode); err != nil {
		closeInTask(t, fd)
		return 0, fmt.Errorf("memfd %q: %w", name, err)
	}
	return fd, nil
}

func setupMemfd(t *compel.Task, d *images.Dir, fd uint64, inode *memfd.MemfdInodeEntry) error {
	if _, err := t.Syscall(unix.SYS_FTRUNCATE, fd, inode.GetSize()); err != nil {
		return fmt.Errorf("ftruncate %d: %w", inode.GetSize(), err)
	}
	path := fmt.Sprintf("/proc/%d/fd/%d", t.Pid, fd)
	if err := fillShmem(d, uint64(inode.GetShmid()), path, inode.GetSize()); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Chown(int(inode.GetUid()), int(inode.GetGid())); err != nil {
		return err
	}
	if inode.Mode != nil {
		if err := unix.Fchmod(int(f.Fd()), inode.GetMode()&0o7777); err != nil {
			return fmt.Errorf("fchmod: %w", err)
		}
	}
	if seals := inode.GetSeals(); seals != 0 {
		if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, int(seals)); err != nil {
			return fmt.Errorf("seals %#x: %w", seals, err)
		}
	}
	return nil
}

// mapShared maps the VMAs backed by shared memory objects and deleted files, which mapAll leaves out
// (it returns their start addresses). Their fds go to as.fileFds, closed with the other mapping fds.
func (as *addressSpace) mapShared(hasPages func(v *vma.VmaEntry) bool) (map[uint64]bool, error) {
	special := map[uint64]bool{}
	var anon = map[uint64][]*vma.VmaEntry{} // anonymous shared memory, by object
	var sysv []*vma.VmaEntry                // System V attaches (VMA_ANON_SHARED too, in CRIU's images)
	for _, v := range as.p.vmas {
		st := v.GetStatus()
		switch {
		case st&images.VMAAreaSysVIPC != 0:
			sysv = append(sysv, v)
		case st&images.VMAAnonShared != 0:
			anon[v.GetShmid()] = append(anon[v.GetShmid()], v)
		case st&images.VMAAreaMemfd != 0 && st&(images.VMAFileShared|images.VMAFilePrivate) != 0:
		case st&(images.VMAFileShared|images.VMAFilePrivate) != 0:
			if as.shared == nil {
				// Load lazily: most processes have neither ghosts nor memfds.
				s, err := loadShared(as.p.dir)
				if err != nil {
					return nil, err
				}
				as.shared = s
			}
			if _, ghost := as.shared.remaps[uint32(v.GetShmid())]; !ghost {
				continue
			}
		default:
			continue
		}
		special[v.GetStart()] = true
	}
	if len(special) == 0 {
		return special, nil
	}
	// System V attaches first: an attach maps its whole segment before the parts the task had unmapped
	// go again, which must not meet the other mappings.
	if err := as.attachSysv(sysv); err != nil {
		return nil, err
	}
	if as.shared == nil {
		s, err := loadShared(as.p.dir)
		if err != nil {
			return nil, err
		}
		as.shared = s
	}
	shmids := make([]uint64, 0, len(anon))
	for id := range anon {
		shmids = append(shmids, id)
	}
	sort.Slice(shmids, func(i, j int) bool { return shmids[i] < shmids[j] })
	for _, id := range shmids {
		if err := as.mapAnonShared(id, anon[id]); err != nil {
			return nil, err
		}
	}
	for _, v := range as.p.vmas {
		st := v.GetStatus()
		if !special[v.GetStart()] || st&(images.VMAAnonShared|images.VMAAreaSysVIPC) != 0 {
			continue
		}
		fd, err := as.sharedFileFd(v)
		if err != nil {
			return nil, fmt.Errorf("mapping %#x-%#x: %w", v.GetStart(), v.GetEnd(), err)
		}
		prot := v.GetProt()
		if v.GetFlags()&unix.MAP_SHARED == 0 && hasPages(v) && prot&(unix.PROT_READ|unix.PROT_WRITE) != unix.PROT_READ|unix.PROT_WRITE {
			prot |= unix.PROT_READ | unix.PROT_WRITE
			as.mappedProt[v.GetStart()] = prot
		}
		if err := as.mmapAt(v, prot, uint64(v.GetFlags()), fd, v.GetPgoff()); err != nil {
			return nil, err
		}
	}
	return special, nil
}

func (as *addressSpace) mmapAt(v *vma.VmaEntry, prot uint32, flags, fd, off uint64) error {
	got, err := as.t.Syscall(unix.SYS_MMAP, v.GetStart(), v.GetEnd()-v.GetStart(), uint64(prot), flags|unix.MAP_FIXED, fd, off)
	if err != nil {
		return fmt.Errorf("map %#x-%#x: %w", v.GetStart(), v.GetEnd(), err)
	}
	if got != v.GetStart() {
		return fmt.Errorf("mapping %#x landed at %#x", v.GetStart(), got)
	}
	return nil
}

// mapAnonShared recreates one MAP_SHARED anonymous object and its mappings. One mapping of the whole
// object is made directly; otherwise (the object was split by mprotect, or mapped twice) the object is
// made at a free address first and every mapping maps it through /proc/self/map_files.
func (as *addressSpace) mapAnonShared(shmid uint64, vmas []*vma.VmaEntry) error {
	var size uint64
	for _, v := range vmas {
		size = max(size, v.GetPgoff()+v.GetEnd()-v.GetStart())
	}
	key := fmt.Sprintf("anon %d", shmid)
	if path, ok := as.shm[key]; ok {
		// Created by a process restored earlier (a parent, say): map that very object, so the memory
		// stays shared as it was.
		fd, err := openInTask(as.t, path, unix.O_RDWR)
		if err != nil {
			return fmt.Errorf("shared memory %d: %w", shmid, err)
		}
		as.fileFds["\x00"+key] = fd
		for _, v := range vmas {
			if err := as.mmapAt(v, v.GetProt(), unix.MAP_SHARED, fd, v.GetPgoff()); err != nil {
				return err
			}
		}
		return nil
	}
	// Later processes of the tree find the object through the first mapping (lazyr's /proc is the task's:
	// the path uses the pid lazyr sees).
	defer func() {
		v := vmas[0]
		as.shm[key] = fmt.Sprintf("/proc/%d/map_files/%x-%x", as.t.Pid, v.GetStart(), v.GetEnd())
	}()
	if len(vmas) == 1 && vmas[0].GetPgoff() == 0 {
		v := vmas[0]
		if err := as.mmapAt(v, v.GetProt(), unix.MAP_SHARED|unix.MAP_ANONYMOUS, ^uint64(0), 0); err != nil {
			return err
		}
		return fillShmem(as.p.dir, shmid, fmt.Sprintf("/proc/%d/map_files/%x-%x", as.t.Pid, v.GetStart(), v.GetEnd()), size)
	}
	used := []span{{as.restorer, as.restorer + restorerSize}}
	for _, v := range as.p.vmas {
		used = append(used, span{v.GetStart(), v.GetEnd()})
	}
	tmp, err := freeSpan(used, size)
	if err != nil {
		return err
	}
	if _, err := as.t.Syscall(unix.SYS_MMAP, tmp, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0); err != nil {
		return fmt.Errorf("shared memory %d of %d bytes: %w", shmid, size, err)
	}
	defer as.t.Syscall(unix.SYS_MUNMAP, tmp, size)
	if err := fillShmem(as.p.dir, shmid, fmt.Sprintf("/proc/%d/map_files/%x-%x", as.t.Pid, tmp, tmp+size), size); err != nil {
		return err
	}
	fd, err := openInTask(as.t, fmt.Sprintf("/proc/self/map_files/%x-%x", tmp, tmp+size), unix.O_RDWR)
	if err != nil {
		return err
	}
	as.fileFds[fmt.Sprintf("\x00shmem %d", shmid)] = fd
	for _, v := range vmas {
		if err := as.mmapAt(v, v.GetProt(), unix.MAP_SHARED, fd, v.GetPgoff()); err != nil {
			return err
		}
	}
	return nil
}

// sharedFileFd returns a task fd, opened with the mapping's flags, of the memfd or ghost file a file
// mapping maps, creating the object on first use.
func (as *addressSpace) sharedFileFd(v *vma.VmaEntry) (uint64, error) {
	id, flags := uint32(v.GetShmid()), v.GetFdflags()
	var key, rwKey string
	var create func() (uint64, error)
	if v.GetStatus()&images.VMAAreaMemfd != 0 {
		inode, err := as.shared.memfdOf(as.p, id)
		if err != nil {
			return 0, err
		}
		key, rwKey = fmt.Sprintf("\x00memfd %d %d", inode.GetInodeId(), flags), fmt.Sprintf("\x00memfd %d %d", inode.GetInodeId(), unix.O_RDWR)
		create = func() (uint64, error) { return createMemfd(as.t, as.p.dir, inode) }
	} else {
		gid := as.shared.remaps[id]
		key, rwKey = fmt.Sprintf("\x00ghost %d %d", gid, flags), fmt.Sprintf("\x00ghost %d %d", gid, unix.O_RDWR)
		name := as.p.files[id].GetReg().GetName()
		create = func() (uint64, error) { return openGhost(as.t, as.p.dir, gid, name, unix.O_RDWR) }
	}
	if fd, ok := as.fileFds[key]; ok {
		return fd, nil
	}
	rw, ok := as.fileFds[rwKey]
	if !ok {
		var err error
		if rw, err = create(); err != nil {
			return 0, err
		}
		as.fileFds[rwKey] = rw
	}
	if key == rwKey {
		return rw, nil
	}
	fd, err := reopenInTask(as.t, rw, flags)
	if err != nil {
		return 0, err
	}
	as.fileFds[key] = fd
	return fd, nil
}
