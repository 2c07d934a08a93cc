package lazypages

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/lazyr/lazyr/images"
)

// imageSource serves pages from a CRIU image directory: pagemap-PID.img
// says where each dumped run is, pages-ID.img holds the present ones. An
// incremental dump marks runs PE_PARENT: their data is in the parent
// image, found through the directory's "parent" symlink (CRIU's layout),
// recursively.
type imageSource struct {
	dir    *images.Dir
	procs  map[int]*imageProc
	parent *imageSource // nil: no parent link
	depth  int
}

type imageProc struct {
	pm    *images.Pagemap
	pages *images.Pages
}

// maxParentDepth bounds the parent chain (and so a symlink loop).
const maxParentDepth = 32

// NewImageSource serves the pages of the processes dumped in imagesDir.
// Pagemaps are read on first use, per process.
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
	s.procs[pid] = p
	return p, nil
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
		errs = append(errs, p.pages.Close())
	}
	errs = append(errs, s.dir.Close())
	if s.parent != nil {
		errs = append(errs, s.parent.Close())
	}
	return errors.Join(errs...)
}
