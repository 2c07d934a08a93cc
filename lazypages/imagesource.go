package lazypages

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/lazyr/lazyr/images"
	"golang.org/x/sys/unix"
)

// imageSource serves pages from a CRIU image directory: pagemap-PID.img
// says where each dumped run is, pages-ID.img holds the present ones. An
// incremental dump marks runs PE_PARENT: their data is in the parent
// image, found through the directory's "parent" symlink (CRIU's layout),
// recursively.
//
// Each pages file is also mapped read-only (MappedPages): UFFDIO_COPY then
// reads the page cache directly, with no pread into a buffer first. The
// daemon never touches the mapping itself; the kernel reads it with
// copy_from_user, so even a file truncated behind our back yields EFAULT
// from the ioctl, never SIGBUS.
type imageSource struct {
	dir    *images.Dir
	mu     sync.Mutex // guards procs
	procs  map[int]*imageProc
	parent *imageSource // nil: no parent link
	depth  int
}

type imageProc struct {
	pm    *images.Pagemap
	pages *images.Pages
	data  []byte // the pages file, mapped; nil when it holds nothing
}

// maxParentDepth bounds the parent chain (and so a symlink loop).
const maxParentDepth = 32

// NewImageSource serves the pages of the processes dumped in imagesDir.
// Pagemaps are read on first use, per process. The source is a
// MappedSource.
func NewImageSource(imagesDir string) (PageSource, error) {
	return openImageSource(imagesDir, 0)
}

func openImageSource(path string, depth int) (*imageSource, error) {
	if depth > maxParentDepth {
		return nil, fmt.Errorf("images %s: parent chain deeper than %d", path, maxParentDepth)
	}
	d, err := images.Open(path)
	if err != nil {
		return nil, err
	}
	s := &imageSource{dir: d, procs: map[int]*imageProc{}, depth: depth}
	parent := filepath.Join(path, "parent")
	if _, err := os.Stat(parent); err == nil {
		if s.parent, err = openImageSource(parent, depth+1); err != nil {
			d.Close()
			return nil, fmt.Errorf("parent images of %s: %w", path, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		d.Close()
		return nil, fmt.Errorf("parent images of %s: %w", path, err)
	}
	return s, nil
}

func (s *imageSource) proc(pid int) (*imageProc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.procs[pid]; p != nil {
		return p, nil
	}
	pm, err := s.dir.ReadPagemap(pid)
	if err != nil {
		return nil, err
	}
	pages, err := s.dir.OpenPages(pm)
	if err != nil {
		return nil, err
	}
	p := &imageProc{pm: pm, pages: pages}
	// Mapping is O(1): no page is read until a copy needs it.
	if f := pages.File(); f != nil && pm.TotalPages() > 0 {
		size := int(pm.TotalPages() * pageSize)
		if p.data, err = unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED); err != nil {
			pages.Close()
			return nil, fmt.Errorf("map %s: %w", f.Name(), err)
		}
	}
	s.procs[pid] = p
	return p, nil
}

// MappedPages returns the mapped bytes of the pages from addr on, as far
// as they are contiguous in one pages file (adjacent pagemap entries
// usually are), at most n bytes.
func (s *imageSource) MappedPages(pid int, addr uint64, n uint64) ([]byte, error) {
	if addr%pageSize != 0 || n%pageSize != 0 || n == 0 {
		return nil, fmt.Errorf("mapped pages: %d bytes at %#x are not whole pages: %w", n, addr, unix.EINVAL)
	}
	p, err := s.proc(pid)
	if err != nil {
		return nil, err
	}
	e, ok := p.pm.Find(addr)
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: pid %d page %#x", ErrNotInImage, pid, addr)
	case e.Present():
		off := uint64(e.Offset) + addr - e.Vaddr
		m := min(n, e.End()-addr)
		for m < n {
			next, ok := p.pm.Find(addr + m)
			if !ok || !next.Present() || uint64(next.Offset) != off+m {
				break
			}
			m = min(n, next.End()-addr)
		}
		if off+m > uint64(len(p.data)) {
			return nil, fmt.Errorf("pages of pid %d at %#x: %w: beyond the pages file", pid, addr, images.ErrCorrupt)
		}
		return p.data[off : off+m : off+m], nil
	case e.Flags&images.PEParent != 0 && s.parent != nil:
		return s.parent.MappedPages(pid, addr, min(n, e.End()-addr))
	}
	return nil, fmt.Errorf("%w: pid %d page %#x (flags %#x)", ErrNotInImage, pid, addr, e.Flags)
}

func (s *imageSource) ReadPages(pid int, addr uint64, dst []byte) error {
	if addr%pageSize != 0 || len(dst)%pageSize != 0 {
		return fmt.Errorf("read pages: %d bytes at %#x are not whole pages", len(dst), addr)
	}
	p, err := s.proc(pid)
	if err != nil {
		return err
	}
	for len(dst) > 0 {
		e, ok := p.pm.Find(addr)
		if !ok {
			return fmt.Errorf("%w: pid %d page %#x", ErrNotInImage, pid, addr)
		}
		n := min(uint64(len(dst)), e.End()-addr)
		switch {
		case e.Present():
			err = p.pages.ReadAt(dst[:n], addr)
		case e.Flags&images.PEParent != 0 && s.parent != nil:
			err = s.parent.ReadPages(pid, addr, dst[:n])
		default:
			err = fmt.Errorf("%w: pid %d page %#x (flags %#x)", ErrNotInImage, pid, addr, e.Flags)
		}
		if err != nil {
			return err
		}
		dst, addr = dst[n:], addr+n
	}
	return nil
}

// Extents lists the runs with data: present here, or in a parent image.
func (s *imageSource) Extents(pid int) ([]Extent, error) {
	p, err := s.proc(pid)
	if err != nil {
		return nil, err
	}
	var out []Extent
	var parentExt []Extent
	parentRead := false
	for _, e := range p.pm.Extents {
		switch {
		case e.Present():
			out = appendExtent(out, Extent{Addr: e.Vaddr, NrPages: e.NrPages})
		case e.Flags&images.PEParent != 0 && s.parent != nil:
			if !parentRead {
				parentRead = true
				if parentExt, err = s.parent.Extents(pid); err != nil {
					return nil, fmt.Errorf("parent image: %w", err)
				}
			}
			for _, pe := range parentExt {
				lo, hi := max(pe.Addr, e.Vaddr), min(pe.End(), e.End())
				if lo < hi {
					out = appendExtent(out, Extent{Addr: lo, NrPages: (hi - lo) / pageSize})
				}
			}
		}
	}
	return out, nil
}

// appendExtent appends e, merging it with the previous extent when they
// touch (extents arrive sorted).
func appendExtent(out []Extent, e Extent) []Extent {
	if n := len(out); n > 0 && out[n-1].End() == e.Addr {
		out[n-1].NrPages += e.NrPages
		return out
	}
	return append(out, e)
}

func (s *imageSource) Close() error {
	var errs []error
	for _, p := range s.procs {
		if p.data != nil {
			errs = append(errs, unix.Munmap(p.data))
		}
		errs = append(errs, p.pages.Close())
	}
	errs = append(errs, s.dir.Close())
	if s.parent != nil {
		errs = append(errs, s.parent.Close())
	}
	return errors.Join(errs...)
}
