package restore

import (
	"errors"
	"fmt"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/compel"
	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/uffd"
)

const (
	fillChunk = 4 << 20
	// smallFill: below this (a lazy restore's stack pages, say) setting up a userfaultfd costs more than
	// it saves; the pages go in with process_vm_writev.
	smallFill = 1 << 20
	// offTracerFill: from this size on a mapping is filled off the tracer thread.
	offTracerFill = 16 << 20
)

func fillSmall(t *compel.Task, p *plan, pages *images.Pages, skip func(images.Extent) bool) (uint64, error) {
	var n uint64
	for _, e := range p.pagemap.Extents {
		if skip(e) || !e.Present() {
			continue
		}
		buf := make([]byte, e.NrPages*images.PageSize)
		if err := pages.ReadAt(buf, e.Vaddr); err != nil {
			return n, fmt.Errorf("read pages at %#x: %w", e.Vaddr, err)
		}
		if err := t.WriteMem(e.Vaddr, buf); err != nil {
			return n, err
		}
		n += e.NrPages
	}
	return n, nil
}

// filler copies the image's pages into the task.
//
// Anonymous memory is filled with UFFDIO_COPY straight from the pages file mapped into lazyr: the kernel
// allocates each page and copies into it, with no page fault and no zeroing first. That is about three
// times faster than process_vm_writev into fresh memory, which faults and zeroes every page before
// writing it. Private file mappings cannot be registered with userfaultfd; their (few) written pages go
// in with process_vm_writev.
type filler struct {
	t        *compel.Task
	p        *plan
	src      []byte // the pages file, mapped
	u        *uffd.FD
	regs     []span
	progress func(done, total uint64)
}

// fillEager copies every extent skip does not leave to the lazy-pages daemon and returns the number of
// pages written.
// Preconditions: called from Tracer.Do; mappings exist and are writable where pages go.
func fillEager(t *compel.Task, p *plan, skip func(images.Extent) bool, progress func(done, total uint64)) (uint64, error) {
	var total uint64
	for _, e := range p.pagemap.Extents {
		if !skip(e) && e.Present() {
			total += e.NrPages * images.PageSize
		}
	}
	if total == 0 {
		return 0, nil
	}
	pages, err := p.dir.OpenPages(p.pagemap)
	if err != nil {
		return 0, err
	}
	defer pages.Close()
	if total <= smallFill {
		return fillSmall(t, p, pages, skip)
	}
	st, err := pages.File().Stat()
	if err != nil {
		return 0, err
	}
	src, err := unix.Mmap(int(pages.File().Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		return 0, fmt.Errorf("map pages file: %w", err)
	}
	defer unix.Munmap(src)
	_ = unix.Madvise(src, unix.MADV_SEQUENTIAL)
	f := &filler{t: t, p: p, src: src, progress: progress}
	defer f.release()
	var done uint64
	last := time.Now()
	for _, e := range p.pagemap.Extents {
		if skip(e) || !e.Present() {
			continue
		}
		// An extent may run over adjacent mappings of different kinds: go mapping by mapping.
		for addr := e.Vaddr; addr < e.End(); {
			v := p.vmaAt(addr)
			end := min(e.End(), v.GetEnd())
			off := e.Offset + int64(addr-e.Vaddr)
			if err := f.fill(v, addr, f.src[off:off+int64(end-addr)]); err != nil {
				return done / images.PageSize, err
			}
			done += end - addr
			addr = end
			if progress != nil && time.Since(last) > 100*time.Millisecond {
				progress(done, total)
				last = time.Now()
			}
		}
	}
	if progress != nil {
		progress(total, total)
	}
	return done / images.PageSize, nil
}

func (f *filler) fill(v *vma.VmaEntry, addr uint64, data []byte) error {
	if v.GetStatus()&images.VMAAnonPrivate == 0 {
		return f.t.WriteMem(addr, data)
	}
	if err := f.register(v); err != nil {
		return err
	}
	if len(data) < offTracerFill {
		return f.copy(addr, data)
	}
	// UFFDIO_COPY needs no ptrace: a big copy runs on a thread of its own, which the scheduler may move
	// to an idle CPU, whereas the tracer thread may be pinned (compel.Tracer.Pin).
	errc := make(chan error, 1)
	go func() { errc <- f.copy(addr, data) }()
	return <-errc
}

// copy fills data into the registered anonymous memory at addr.
func (f *filler) copy(addr uint64, data []byte) error {
	for len(data) > 0 {
		n := min(len(data), fillChunk)
		got, err := f.u.Copy(addr, data[:n], uffd.CopyModeDontWake)
		switch {
		case err == nil:
		case got > 0 && errors.Is(err, unix.EAGAIN):
			// Stopped part-way: go on from where it got.
		case errors.Is(err, unix.EEXIST):
			got = images.PageSize // already present (cannot happen in a fresh mapping, but harmless)
		default:
			return fmt.Errorf("fill %#x: %w", addr, err)
		}
		addr += uint64(got)
		data = data[got:]
	}
	return nil
}

// register registers an anonymous mapping with the task's userfaultfd (created on first use).
func (f *filler) register(v *vma.VmaEntry) error {
	for _, r := range f.regs {
		if r.start == v.GetStart() {
			return nil
		}
	}
	if f.u == nil {
		u, pidfd, err := taskUffd(f.t, 0)
		if err != nil {
			return err
		}
		unix.Close(pidfd)
		f.u = u
	}
	if _, err := f.u.Register(v.GetStart(), v.GetEnd()-v.GetStart(), uffd.ModeMissing); err != nil {
		return fmt.Errorf("register %#x-%#x for filling: %w", v.GetStart(), v.GetEnd(), err)
	}
	f.regs = append(f.regs, span{v.GetStart(), v.GetEnd()})
	return nil
}

// release unregisters the filled mappings: afterwards they are plain memory again.
func (f *filler) release() {
	if f.u == nil {
		return
	}
	for _, r := range f.regs {
		_ = f.u.Unregister(r.start, r.end-r.start)
	}
	f.u.Close()
	f.u = nil
}
