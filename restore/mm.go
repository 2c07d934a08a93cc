package restore

import (
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/compel"
	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/procfs"
)

const (
	restorerCode    = images.PageSize
	restorerScratch = 1 << 20
	restorerSize    = restorerCode + restorerScratch
	// mmapMinAddr: never place anything below the usual vm.mmap_min_addr.
	mmapMinAddr = 0x10000
	// userTop is the end of the 47-bit user address space.
	userTop = 0x7ffffffff000
)

// atFdcwd is AT_FDCWD as a variable, so that it converts to the register value -100.
var atFdcwd int64 = unix.AT_FDCWD

type span struct{ start, end uint64 }

// freeSpan finds size bytes of address space that overlap none of the used spans, searching downwards
// from the top of the lower half of the address space (away from typical binaries and heaps).
func freeSpan(used []span, size uint64) (uint64, error) {
	sort.Slice(used, func(i, j int) bool { return used[i].start < used[j].start })
	hi := uint64(userTop)
	for i := len(used) - 1; i >= -1; i-- {
		lo := uint64(mmapMinAddr)
		if i >= 0 {
			lo = used[i].end
		}
		if hi > lo && hi-lo >= size {
			return hi - size, nil
		}
		if i >= 0 && used[i].start < hi {
			hi = used[i].start
		}
	}
	return 0, fmt.Errorf("no free %d bytes of address space for the restorer", size)
}

// addressSpace rebuilds the dumped mappings in the task.
type addressSpace struct {
	t        *compel.Task
	p        *plan
	restorer uint64
	// fds opened in the task for file mappings, by path and flags; closed by closeFiles.
	fileFds map[string]uint64
	// mappedProt is the protection each VMA was mapped with when it differs from the final one.
	mappedProt map[uint64]uint32
}

// setupRestorer maps the restorer area and moves injection into it.
// Preconditions: called from Tracer.Do.
func (as *addressSpace) setupRestorer() error {
	cur, err := procfs.Maps(as.t.Pid)
	if err != nil {
		return err
	}
	var used []span
	for _, m := range cur {
		used = append(used, span{m.Start, m.End})
	}
	for _, v := range as.p.vmas {
		used = append(used, span{v.GetStart(), v.GetEnd()})
	}
	addr, err := freeSpan(used, restorerSize)
	if err != nil {
		return err
	}
	got, err := as.t.Syscall(unix.SYS_MMAP, addr, restorerSize, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0)
	if err != nil {
		return fmt.Errorf("map restorer area at %#x: %w", addr, err)
	}
	if got != addr {
		return fmt.Errorf("restorer area mapped at %#x, not %#x", got, addr)
	}
	if err := as.t.WriteMem(addr, []byte{0x0f, 0x05}); err != nil { // syscall
		return err
	}
	as.restorer = addr
	as.t.SetGadget(addr)
	as.t.SetScratch(addr+restorerCode, restorerScratch)
	return nil
}

func isSpecial(path string) bool {
	return path == "[vdso]" || path == "[vvar]" || path == "[vvar_vclock]" || path == "[vsyscall]"
}

// clearStub unmaps everything the stub left in the task but the vDSO areas and the restorer, and closes
// the fds the stub inherited from lazyr's parent without O_CLOEXEC.
func (as *addressSpace) clearStub() error {
	fds, err := procfs.ListFds(as.t.Pid)
	if err != nil {
		return err
	}
	for _, fd := range fds {
		if _, err := as.t.Syscall(unix.SYS_CLOSE, uint64(fd.Num)); err != nil {
			return fmt.Errorf("close inherited fd %d: %w", fd.Num, err)
		}
	}
	cur, err := procfs.Maps(as.t.Pid)
	if err != nil {
		return err
	}
	for _, m := range cur {
		if isSpecial(m.Path) || (m.Start >= as.restorer && m.End <= as.restorer+restorerSize) {
			continue
		}
		if _, err := as.t.Syscall(unix.SYS_MUNMAP, m.Start, m.End-m.Start); err != nil {
			return fmt.Errorf("unmap stub mapping %#x-%#x: %w", m.Start, m.End, err)
		}
	}
	return nil
}

// moveVDSO puts the task's vDSO areas where the dumped task had them. They are the same kernel's areas,
// so they only move (mremap, which also updates the kernel's idea of where the vDSO is); a different
// layout means the image comes from another kernel, which needs vDSO proxying lazyr does not do.
func (as *addressSpace) moveVDSO() error {
	cur, err := procfs.Maps(as.t.Pid)
	if err != nil {
		return err
	}
	var have []procfs.Mapping
	for _, m := range cur {
		if m.Path == "[vdso]" || m.Path == "[vvar]" || m.Path == "[vvar_vclock]" {
			have = append(have, m)
		}
	}
	var want []*vma.VmaEntry
	for _, v := range as.p.vmas {
		if v.GetStatus()&(images.VMAAreaVDSO|images.VMAAreaVVAR) != 0 {
			want = append(want, v)
		}
	}
	if len(want) == 0 {
		for _, m := range have {
			if _, err := as.t.Syscall(unix.SYS_MUNMAP, m.Start, m.End-m.Start); err != nil {
				return fmt.Errorf("unmap %s: %w", m.Path, err)
			}
		}
		return nil
	}
	if len(want) != len(have) {
		return fmt.Errorf("the image has %d vDSO areas, this kernel %d (images from another kernel): %w", len(want), len(have), ErrUnsupported)
	}
	for i := range want {
		isVDSO := want[i].GetStatus()&images.VMAAreaVDSO != 0
		if isVDSO != (have[i].Path == "[vdso]") || want[i].GetEnd()-want[i].GetStart() != have[i].End-have[i].Start {
			return fmt.Errorf("vDSO layout differs from the image's (images from another kernel): %w", ErrUnsupported)
		}
	}
	// Two steps, through free space, so that no move lands on an area that has not moved yet.
	used := []span{{as.restorer, as.restorer + restorerSize}}
	for _, v := range as.p.vmas {
		used = append(used, span{v.GetStart(), v.GetEnd()})
	}
	for _, m := range have {
		used = append(used, span{m.Start, m.End})
	}
	tmp := make([]uint64, len(have))
	for i, m := range have {
		size := m.End - m.Start
		addr, err := freeSpan(used, size)
		if err != nil {
			return err
		}
		used = append(used, span{addr, addr + size})
		if _, err := as.t.Syscall(unix.SYS_MREMAP, m.Start, size, size, unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, addr); err != nil {
			return fmt.Errorf("move %s: %w", m.Path, err)
		}
		tmp[i] = addr
	}
	for i, m := range have {
		size := m.End - m.Start
		if _, err := as.t.Syscall(unix.SYS_MREMAP, tmp[i], size, size, unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, want[i].GetStart()); err != nil {
			return fmt.Errorf("move %s to %#x: %w", m.Path, want[i].GetStart(), err)
		}
	}
	return nil
}

// openInTask opens path inside the task and returns the task's fd.
func openInTask(t *compel.Task, path string, flags uint32) (uint64, error) {
	addr, err := t.WriteScratch(0, append([]byte(path), 0))
	if err != nil {
		return 0, err
	}
	flags &^= unix.O_CREAT | unix.O_TRUNC | unix.O_EXCL
	fd, err := t.Syscall(unix.SYS_OPENAT, uint64(atFdcwd), addr, uint64(flags|unix.O_CLOEXEC), 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", path, err)
	}
	return fd, nil
}

// mapAll creates every dumped mapping (but the vDSO areas) at its address. Private mappings that get pages
// written into them are mapped writable first and get their final protection in protectAll.
func (as *addressSpace) mapAll(hasPages func(v *vma.VmaEntry) bool) error {
	as.fileFds = map[string]uint64{}
	as.mappedProt = map[uint64]uint32{}
	for _, v := range as.p.vmas {
		st := v.GetStatus()
		if st&(images.VMAAreaVDSO|images.VMAAreaVVAR|images.VMAAreaVsyscall) != 0 {
			continue
		}
		prot := v.GetProt()
		if v.GetFlags()&unix.MAP_SHARED == 0 && hasPages(v) && prot&(unix.PROT_READ|unix.PROT_WRITE) != unix.PROT_READ|unix.PROT_WRITE {
			as.mappedProt[v.GetStart()] = prot | unix.PROT_READ | unix.PROT_WRITE
		}
		mprot := prot
		if p, ok := as.mappedProt[v.GetStart()]; ok {
			mprot = p
		}
		flags := uint64(v.GetFlags()) | unix.MAP_FIXED
		fd := ^uint64(0)
		if st&(images.VMAFilePrivate|images.VMAFileShared) != 0 {
			path := as.p.path(uint32(v.GetShmid()))
			oflags := v.GetFdflags()
			key := fmt.Sprintf("%s\x00%d", path, oflags)
			f, ok := as.fileFds[key]
			if !ok {
				var err error
				if f, err = openInTask(as.t, path, oflags); err != nil {
					return fmt.Errorf("mapping %#x-%#x: %w", v.GetStart(), v.GetEnd(), err)
				}
				as.fileFds[key] = f
			}
			fd = f
		}
		got, err := as.t.Syscall(unix.SYS_MMAP, v.GetStart(), v.GetEnd()-v.GetStart(), uint64(mprot), flags, fd, v.GetPgoff())
		if err != nil {
			return fmt.Errorf("map %#x-%#x: %w", v.GetStart(), v.GetEnd(), err)
		}
		if got != v.GetStart() {
			return fmt.Errorf("mapping %#x landed at %#x", v.GetStart(), got)
		}
	}
	return nil
}

// closeFiles closes the fds opened for file mappings.
func (as *addressSpace) closeFiles() error {
	for _, fd := range as.fileFds {
		if _, err := as.t.Syscall(unix.SYS_CLOSE, fd); err != nil {
			return fmt.Errorf("close mapping fd: %w", err)
		}
	}
	as.fileFds = nil
	return nil
}

// protectAll gives mappings mapped writable for filling their final protection, and replays madvise bits.
func (as *addressSpace) protectAll() error {
	for _, v := range as.p.vmas {
		if _, ok := as.mappedProt[v.GetStart()]; ok {
			if _, err := as.t.Syscall(unix.SYS_MPROTECT, v.GetStart(), v.GetEnd()-v.GetStart(), uint64(v.GetProt())); err != nil {
				return fmt.Errorf("mprotect %#x-%#x: %w", v.GetStart(), v.GetEnd(), err)
			}
		}
		madv := v.GetMadv()
		for bit := uint64(0); madv != 0 && bit < 64; bit++ {
			if madv&(1<<bit) == 0 {
				continue
			}
			if _, err := as.t.Syscall(unix.SYS_MADVISE, v.GetStart(), v.GetEnd()-v.GetStart(), bit); err != nil {
				return fmt.Errorf("madvise(%d) %#x-%#x: %w", bit, v.GetStart(), v.GetEnd(), err)
			}
		}
	}
	return nil
}

// setMM restores the kernel's mm fields (code/data/brk/stack/args/env, auxv, /proc/PID/exe) with
// PR_SET_MM_MAP, which needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE but not CAP_SYS_RESOURCE.
func (as *addressSpace) setMM() error {
	m := as.p.mm
	exe, err := openInTask(as.t, as.p.path(m.GetExeFileId()), unix.O_RDONLY)
	if err != nil {
		return fmt.Errorf("executable: %w", err)
	}
	auxv := m.GetMmSavedAuxv()
	const hdr = 104 // sizeof(struct prctl_mm_map)
	buf := make([]byte, hdr+8*len(auxv))
	le := binary.LittleEndian
	for i, v := range []uint64{m.GetMmStartCode(), m.GetMmEndCode(), m.GetMmStartData(), m.GetMmEndData(),
		m.GetMmStartBrk(), m.GetMmBrk(), m.GetMmStartStack(), m.GetMmArgStart(), m.GetMmArgEnd(),
		m.GetMmEnvStart(), m.GetMmEnvEnd()} {
		le.PutUint64(buf[8*i:], v)
	}
	scratch, _ := as.t.Scratch()
	le.PutUint64(buf[88:], scratch+hdr) // auxv pointer: right after the struct
	le.PutUint32(buf[96:], uint32(8*len(auxv)))
	le.PutUint32(buf[100:], uint32(exe))
	for i, v := range auxv {
		le.PutUint64(buf[hdr+8*i:], v)
	}
	addr, err := as.t.WriteScratch(0, buf)
	if err != nil {
		return err
	}
	if _, err := as.t.Syscall(unix.SYS_PRCTL, unix.PR_SET_MM, unix.PR_SET_MM_MAP, addr, hdr); err != nil {
		return fmt.Errorf("prctl(PR_SET_MM_MAP): %w", err)
	}
	if _, err := as.t.Syscall(unix.SYS_CLOSE, exe); err != nil {
		return fmt.Errorf("close executable fd: %w", err)
	}
	return nil
}
