package images

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// Pages reads page contents from a pages-ID.img through its pagemap.
type Pages struct {
	f  *os.File // nil when the pagemap stores no pages at all
	pm *Pagemap
}

// OpenPages opens the pages file of pm, which must be valid and match it.
func (d *Dir) OpenPages(pm *Pagemap) (*Pages, error) {
	if err := pm.Validate(); err != nil {
		return nil, fmt.Errorf("pagemap of %s: %w", PagesName(pm.PagesID), err)
	}
	want := pm.TotalPages() * PageSize
	name := PagesName(pm.PagesID)
	f, err := os.Open(d.file(name))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if want == 0 {
				return &Pages{pm: pm}, nil
			}
			return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return nil, fmt.Errorf("open pages: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", name, err)
	}
	if uint64(st.Size()) != want {
		f.Close()
		return nil, fmt.Errorf("%s: %w: %d bytes, the pagemap lists %d", name, ErrCorrupt, st.Size(), want)
	}
	return &Pages{f: f, pm: pm}, nil
}

// ReadAt fills dst (a multiple of PageSize) with the pages starting at
// vaddr. The range may span several adjacent extents, but every page must
// be stored in the image, else the error wraps ErrNotInImage (and dst is
// left partly filled). Safe for concurrent use: it only uses pread.
func (p *Pages) ReadAt(dst []byte, vaddr uint64) error {
	if vaddr%PageSize != 0 || len(dst)%PageSize != 0 {
		return fmt.Errorf("read pages: %d bytes at 0x%x are not whole aligned pages: %w", len(dst), vaddr, unix.EINVAL)
	}
	if end := vaddr + uint64(len(dst)); end < vaddr {
		return fmt.Errorf("read pages: %d bytes at 0x%x wrap around: %w", len(dst), vaddr, unix.EINVAL)
	}
	for len(dst) > 0 {
		i := p.pm.search(vaddr)
		if i < 0 {
			return fmt.Errorf("%w: page 0x%x is not in the pagemap of %s", ErrNotInImage, vaddr, PagesName(p.pm.PagesID))
		}
		e := p.pm.Extents[i]
		if !e.Present() {
			return fmt.Errorf("%w: page 0x%x is in an extent without data (flags 0x%x)", ErrNotInImage, vaddr, e.Flags)
		}
		n := min(uint64(len(dst)), e.End()-vaddr)
		off := e.Offset + int64(vaddr-e.Vaddr)
		if _, err := p.f.ReadAt(dst[:n], off); err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%s: %w: file ends before offset %d", PagesName(p.pm.PagesID), ErrCorrupt, off+int64(n))
			}
			return fmt.Errorf("read %s: %w", PagesName(p.pm.PagesID), err)
		}
		dst = dst[n:]
		vaddr += n
	}
	return nil
}

// File returns the pages file (nil if the pagemap stores no pages), for
// callers that move data without copying it through user space.
func (p *Pages) File() *os.File { return p.f }

// Pagemap returns the pagemap the pages are read through.
func (p *Pages) Pagemap() *Pagemap { return p.pm }

// Close closes the pages file.
func (p *Pages) Close() error {
	if p.f == nil {
		return nil
	}
	return p.f.Close()
}
