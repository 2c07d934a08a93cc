package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/compel"
	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/procfs"
)

// The restorer area: a page of code (the syscall gadget at its start, compel's batch executor at
// restorerBatch), then scratch memory for syscall arguments, whose last restorerTable bytes hold batch
// tables.
const (
	restorerCode    = images.PageSize
	restorerBatch   = 64
	restorerScratch = 1 << 20
	restorerTable   = 128 << 10
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
	// shared: memfd inodes and ghost files of the image set, loaded when a mapping needs them (shmem.go).
	shared *sharedState
	// shm: shared memory objects already created by a process restored earlier, by object key, as a
	// path the task can open to map the same object (its creator's /proc/PID/map_files entry).
	shm map[string]string
	// sysv: the tree's System V segments, created before any task is built (ipc_shm.go).
	sysv *ipcRestore
}

// setupRestorer maps the restorer area where neither the task's current mappings nor any of avoid lie
// (the mappings of every process it will be forked into), and moves injection into it.
// Preconditions: called from Tracer.Do.
func (as *addressSpace) setupRestorer(avoid []span) error {
	cur, err := procfs.Maps(as.t.Pid)
	if err != nil {
		return err
	}
	var used []span
	for _, m := range cur {
		used = append(used, span{m.Start, m.End})
	}
	used = append(used, avoid...)
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
	as.t.SetScratch(addr+restorerCode, restorerScratch-restorerTable)
	return as.t.InstallBatch(addr+restorerBatch, addr+restorerCode+restorerScratch-restorerTable, restorerTable)
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
	var calls []compel.Call
	for _, fd := range fds {
		calls = append(calls, compel.NewCall(unix.SYS_CLOSE, uint64(fd.Num)))
	}
	cur, err := procfs.Maps(as.t.Pid)
	if err != nil {
		return err
	}
	for _, m := range cur {
		if isSpecial(m.Path) || (m.Start >= as.restorer && m.End <= as.restorer+restorerSize) {
			continue
		}
		calls = append(calls, compel.NewCall(unix.SYS_MUNMAP, m.Start, m.End-m.Start))
	}
	if err := as.t.Batch(calls); err != nil {
		return fmt.Errorf("clear the stub's fds and mappings: %w", err)
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
// written into them are mapped writable first and get their final protection in protectAll. Files are
// opened in one batch, the mappings made in a second one.
func (as *addressSpace) mapAll(hasPages func(v *vma.VmaEntry) bool) error {
	as.fileFds = map[string]uint64{}
	as.mappedProt = map[uint64]uint32{}
	// Shared memory objects and deleted files first (shmem.go); the two phases below leave them out.
	special, err := as.mapShared(hasPages)
	if err != nil {
		return err
	}
	// Phase 1: open every mapped file once.
	var opens []compel.Call
	var keys, order []string // file names for messages, fileFds keys
	var buf []byte
	scratch, size := as.t.Scratch()
	for _, v := range as.p.vmas {
		if v.GetStatus()&(images.VMAFilePrivate|images.VMAFileShared) == 0 || special[v.GetStart()] {
			continue
		}
		path := as.p.path(uint32(v.GetShmid()))
		oflags := v.GetFdflags()
		key := fmt.Sprintf("%s\x00%d", path, oflags)
		if _, ok := as.fileFds[key]; ok {
			continue
		}
		as.fileFds[key] = 0
		if uint64(len(buf)+len(path)+1) > size {
			return fmt.Errorf("mapped file names do not fit in %d bytes of scratch", size)
		}
		opens = append(opens, compel.NewCall(unix.SYS_OPENAT, uint64(atFdcwd), scratch+uint64(len(buf)),
			uint64((oflags&^(unix.O_CREAT|unix.O_TRUNC|unix.O_EXCL))|unix.O_CLOEXEC)))
		keys = append(keys, path)
		order = append(order, key)
		buf = append(append(buf, path...), 0)
	}
	if len(opens) > 0 {
		if _, err := as.t.WriteScratch(0, buf); err != nil {
			return err
		}
		if err := as.t.Batch(opens); err != nil {
			var se *compel.SyscallError
			if errors.As(err, &se) {
				return fmt.Errorf("open mapped file %s: %w", keys[se.Index], err)
			}
			return err
		}
		for i, key := range order {
			as.fileFds[key] = opens[i].Ret
		}
	}
	// Phase 2: the mappings.
	var maps []compel.Call
	var mapped []*vma.VmaEntry
	for _, v := range as.p.vmas {
		st := v.GetStatus()
		if st&(images.VMAAreaVDSO|images.VMAAreaVVAR|images.VMAAreaVsyscall) != 0 || special[v.GetStart()] {
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
		fd := ^uint64(0)
		if st&(images.VMAFilePrivate|images.VMAFileShared) != 0 {
			fd = as.fileFds[fmt.Sprintf("%s\x00%d", as.p.path(uint32(v.GetShmid())), v.GetFdflags())]
		}
		maps = append(maps, compel.NewCall(unix.SYS_MMAP, v.GetStart(), v.GetEnd()-v.GetStart(), uint64(mprot),
			uint64(v.GetFlags())|unix.MAP_FIXED, fd, v.GetPgoff()))
		mapped = append(mapped, v)
	}
	if err := as.t.Batch(maps); err != nil {
		var se *compel.SyscallError
		if errors.As(err, &se) {
			v := mapped[se.Index]
			return fmt.Errorf("map %#x-%#x: %w", v.GetStart(), v.GetEnd(), err)
		}
		return err
	}
	for i, c := range maps {
		if c.Ret != mapped[i].GetStart() {
			return fmt.Errorf("mapping %#x landed at %#x", mapped[i].GetStart(), c.Ret)
		}
	}
	return nil
}

// closeFiles closes the fds opened for file mappings.
func (as *addressSpace) closeFiles() error {
	var calls []compel.Call
	for _, fd := range as.fileFds {
		calls = append(calls, compel.NewCall(unix.SYS_CLOSE, fd))
	}
	as.fileFds = nil
	if err := as.t.Batch(calls); err != nil {
		return fmt.Errorf("close mapping fds: %w", err)
	}
	return nil
}

// protectAll gives mappings mapped writable for filling their final protection, and replays madvise bits.
func (as *addressSpace) protectAll() error {
	var calls []compel.Call
	var what []string
	for _, v := range as.p.vmas {
		if _, ok := as.mappedProt[v.GetStart()]; ok {
			calls = append(calls, compel.NewCall(unix.SYS_MPROTECT, v.GetStart(), v.GetEnd()-v.GetStart(), uint64(v.GetProt())))
			what = append(what, fmt.Sprintf("mprotect %#x-%#x", v.GetStart(), v.GetEnd()))
		}
		madv := v.GetMadv()
		for bit := uint64(0); madv != 0 && bit < 64; bit++ {
			if madv&(1<<bit) != 0 {
				calls = append(calls, compel.NewCall(unix.SYS_MADVISE, v.GetStart(), v.GetEnd()-v.GetStart(), bit))
				what = append(what, fmt.Sprintf("madvise(%d) %#x-%#x", bit, v.GetStart(), v.GetEnd()))
			}
		}
	}
	if err := as.t.Batch(calls); err != nil {
		var se *compel.SyscallError
		if errors.As(err, &se) {
			return fmt.Errorf("%s: %w", what[se.Index], err)
		}
		return err
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
