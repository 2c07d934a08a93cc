package pagesrv

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
// says where each dumped run is, pages-ID.img holds the present ones, and
// runs marked PE_PARENT (incremental dumps) are read from the image behind
// the directory's "parent" symlink, recursively, as CRIU's page server does.
// Runs marked only PE_LAZY have no data here: they are not in the image.
type imageSource struct {
	mu     sync.Mutex
	dir    *images.Dir
	procs  map[int]*imageProc
	parent *imageSource
}

type imageProc struct {
	pm    *images.Pagemap
	pages *images.Pages
}

// maxParentChain bounds the parent chain (and so a symlink loop).
const maxParentChain = 32

// NewImageSource serves the pages of the processes dumped in dir. Pagemaps
// are read on first use per process. The returned Source also implements
// io.Closer, which closes the image files; it is safe for concurrent use.
func NewImageSource(dir string) (Source, error) {
	return openImageSource(dir, 0)
}

func openImageSource(path string, depth int) (*imageSource, error) {
	if depth > maxParentChain {
		return nil, fmt.Errorf("pagesrv: images %s: parent chain longer than %d", path, maxParentChain)
	}
	d, err := images.Open(path)
	if err != nil {
		return nil, fmt.Errorf("pagesrv: %w", err)
	}
	s := &imageSource{dir: d, procs: map[int]*imageProc{}}
	parent := filepath.Join(path, "parent")
	switch _, err := os.Stat(parent); {
	case err == nil:
		if s.parent, err = openImageSource(parent, depth+1); err != nil {
			d.Close()
			return nil, err
		}
	case !errors.Is(err, fs.ErrNotExist):
		d.Close()
		return nil, fmt.Errorf("pagesrv: parent images of %s: %w", path, err)
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
		if errors.Is(err, fs.ErrNotExist) {
			// Reaches the client as "not found" with ESRCH.
			return nil, fmt.Errorf("pid %d has no pagemap in %s: %w: %w", pid, s.dir.Path(), unix.ESRCH, err)
		}
		return nil, err
	}
	pages, err := s.dir.OpenPages(pm)
	if err != nil {
		return nil, err
	}
	p := &imageProc{pm: pm, pages: pages}
	s.procs[pid] = p
	return p, nil
}

func (s *imageSource) ReadPages(pid int, addr uint64, dst []byte) error {
	ps := uint64(images.PageSize)
	if addr%ps != 0 || uint64(len(dst))%ps != 0 {
		return fmt.Errorf("read pages: %d bytes at %#x are not whole pages: %w", len(dst), addr, unix.EINVAL)
	}
	p, err := s.proc(pid)
	if err != nil {
		return err
	}
	for len(dst) > 0 {
		e, ok := p.pm.Find(addr)
		if !ok {
			return fmt.Errorf("%w: pid %d page %#x is not in the pagemap", ErrNotInImage, pid, addr)
		}
		n := min(uint64(len(dst)), e.End()-addr)
		switch {
		case e.Present():
			err = p.pages.ReadAt(dst[:n], addr)
		case e.Flags&images.PEParent != 0 && s.parent != nil:
			err = s.parent.ReadPages(pid, addr, dst[:n])
		default:
			err = fmt.Errorf("%w: pid %d page %#x has no data (flags %#x)", ErrNotInImage, pid, addr, e.Flags)
		}
		if err != nil {
			return err
		}
		dst, addr = dst[n:], addr+n
	}
	return nil
}

// Extents lists the runs that have data, here or in a parent image.
func (s *imageSource) Extents(pid int) ([]Extent, error) {
	p, err := s.proc(pid)
	if err != nil {
		return nil, err
	}
	var out, parentExt []Extent
	parentRead := false
	for _, e := range p.pm.Extents {
		switch {
		case e.Present():
			out = append(out, Extent{Addr: e.Vaddr, NrPages: e.NrPages})
		case e.Flags&images.PEParent != 0 && s.parent != nil:
			if !parentRead {
				parentRead = true
				if parentExt, err = s.parent.Extents(pid); err != nil {
					return nil, fmt.Errorf("parent image: %w", err)
				}
			}
			// Only the part of the parent's data this image points at.
			for _, pe := range parentExt {
				lo := max(pe.Addr, e.Vaddr)
				hi := min(pe.Addr+pe.NrPages*images.PageSize, e.End())
				if lo < hi {
					out = append(out, Extent{Addr: lo, NrPages: (hi - lo) / images.PageSize})
				}
			}
		}
	}
	return out, nil
}

// Close closes every image file of the chain.
func (s *imageSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, p := range s.procs {
		errs = append(errs, p.pages.Close())
	}
	s.procs = map[int]*imageProc{}
	errs = append(errs, s.dir.Close())
	if s.parent != nil {
		errs = append(errs, s.parent.Close())
	}
	return errors.Join(errs...)
}
