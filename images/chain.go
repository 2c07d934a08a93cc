package images

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"golang.org/x/sys/unix"
)

// PageChain reads the dumped memory of the processes of an image directory: pagemap-PID.img says where
// each dumped run is, pages-ID.img holds the present ones, and runs an incremental dump marked PE_PARENT
// have their data in the image behind the directory's "parent" symlink (CRIU's layout), recursively.
// Runs marked only PE_LAZY (a migration source kept them) have no data here.
//
// It is what both the lazy-pages daemon and the page server read local images through. Pagemaps are read
// and pages files mapped read-only on first use, per process; a PageChain is safe for concurrent use.
type PageChain struct {
	dir    *Dir
	mu     sync.Mutex // guards procs
	procs  map[int]*chainProc
	parent *PageChain // nil: no parent link
}

type chainProc struct {
	pm    *Pagemap
	pages *Pages
	data  []byte // the pages file, mapped; nil when it holds nothing
}

// Run is a run of pages with data.
type Run struct {
	Addr    uint64
	NrPages uint64
}

// End is the address just past the run.
func (r Run) End() uint64 { return r.Addr + r.NrPages*PageSize }

// maxParentChain bounds the parent chain (and so a symlink loop).
const maxParentChain = 32

// OpenPageChain opens the image directory path and the chain of its parents.
func OpenPageChain(path string) (*PageChain, error) { return openPageChain(path, 0) }

func openPageChain(path string, depth int) (*PageChain, error) {
	if depth > maxParentChain {
		return nil, fmt.Errorf("images %s: parent chain longer than %d", path, maxParentChain)
	}
	d, err := Open(path)
	if err != nil {
		return nil, err
	}
	c := &PageChain{dir: d, procs: map[int]*chainProc{}}
	parent := filepath.Join(path, "parent")
	switch _, err := os.Stat(parent); {
	case err == nil:
		if c.parent, err = openPageChain(parent, depth+1); err != nil {
			d.Close()
			return nil, fmt.Errorf("parent images of %s: %w", path, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		d.Close()
		return nil, fmt.Errorf("parent images of %s: %w", path, err)
	}
	return c, nil
}

// Dir is the chain's own (newest) image directory.
func (c *PageChain) Dir() *Dir { return c.dir }

func (c *PageChain) proc(pid int) (*chainProc, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.procs[pid]; p != nil {
		return p, nil
	}
	pm, err := c.dir.ReadPagemap(pid)
	if err != nil {
		return nil, err
	}
	pages, err := c.dir.OpenPages(pm)
	if err != nil {
		return nil, err
	}
	p := &chainProc{pm: pm, pages: pages}
	// Mapping is O(1): no page is read until someone copies from it. Whoever copies from the mapping
	// should let the kernel do it (UFFDIO_COPY reads it with copy_from_user): a file truncated behind
	// our back then yields EFAULT, never SIGBUS.
	if f := pages.File(); f != nil && pm.TotalPages() > 0 {
		if p.data, err = unix.Mmap(int(f.Fd()), 0, int(pm.TotalPages()*PageSize), unix.PROT_READ, unix.MAP_SHARED); err != nil {
			pages.Close()
			return nil, fmt.Errorf("map %s: %w", f.Name(), err)
		}
	}
	c.procs[pid] = p
	return p, nil
}

func checkPages(addr, n uint64) error {
	if addr%PageSize != 0 || n%PageSize != 0 {
		return fmt.Errorf("pages: %d bytes at %#x are not whole pages: %w", n, addr, unix.EINVAL)
	}
	return nil
}

// Mapped returns the mapped bytes of pid's pages from addr on, as far as they are contiguous in one
// pages file (adjacent pagemap entries usually are): at least one page, at most n bytes. A first page
// without data is an error wrapping ErrNotInImage.
func (c *PageChain) Mapped(pid int, addr, n uint64) ([]byte, error) {
	if err := checkPages(addr, n); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("mapped pages: nothing asked at %#x: %w", addr, unix.EINVAL)
	}
	p, err := c.proc(pid)
	if err != nil {
		return nil, err
	}
	e, ok := p.pm.Find(addr)
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: pid %d page %#x is not in the pagemap", ErrNotInImage, pid, addr)
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
			return nil, fmt.Errorf("pages of pid %d at %#x: %w: beyond the pages file", pid, addr, ErrCorrupt)
		}
		return p.data[off : off+m : off+m], nil
	case e.Flags&PEParent != 0 && c.parent != nil:
		return c.parent.Mapped(pid, addr, min(n, e.End()-addr))
	}
	return nil, fmt.Errorf("%w: pid %d page %#x has no data (flags %#x)", ErrNotInImage, pid, addr, e.Flags)
}

// ReadPages fills dst (whole pages) with pid's pages from addr on, from this image or its parents. A page
// without data anywhere is an error wrapping ErrNotInImage (dst is then partly filled).
func (c *PageChain) ReadPages(pid int, addr uint64, dst []byte) error {
	if err := checkPages(addr, uint64(len(dst))); err != nil {
		return err
	}
	p, err := c.proc(pid)
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
		case e.Flags&PEParent != 0 && c.parent != nil:
			err = c.parent.ReadPages(pid, addr, dst[:n])
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

// Preload reads the pagemaps of every process in the image directory's pstree (and what they need of the
// parent chain) ahead of their first use, so that the first lookup of a process costs no image reading.
// It is best-effort: a process whose pagemap cannot be read is left for its first use to report.
func (c *PageChain) Preload() {
	tree, err := Read[pstree.PstreeEntry](c.dir, PstreeName)
	if err != nil {
		return
	}
	for _, t := range tree {
		_, _ = c.Runs(int(t.GetPid()))
	}
}

// Runs lists pid's runs with data, here or in a parent image, sorted, touching runs merged.
func (c *PageChain) Runs(pid int) ([]Run, error) {
	p, err := c.proc(pid)
	if err != nil {
		return nil, err
	}
	var out, parentRuns []Run
	parentRead := false
	for _, e := range p.pm.Extents {
		switch {
		case e.Present():
			out = appendRun(out, Run{Addr: e.Vaddr, NrPages: e.NrPages})
		case e.Flags&PEParent != 0 && c.parent != nil:
			if !parentRead {
				parentRead = true
				if parentRuns, err = c.parent.Runs(pid); err != nil {
					return nil, fmt.Errorf("parent image: %w", err)
				}
			}
			// Only the part of the parent's data this image points at.
			for _, pr := range parentRuns {
				if lo, hi := max(pr.Addr, e.Vaddr), min(pr.End(), e.End()); lo < hi {
					out = appendRun(out, Run{Addr: lo, NrPages: (hi - lo) / PageSize})
				}
			}
		}
	}
	return out, nil
}

func appendRun(out []Run, r Run) []Run {
	if n := len(out); n > 0 && out[n-1].End() == r.Addr {
		out[n-1].NrPages += r.NrPages
		return out
	}
	return append(out, r)
}

// Close unmaps and closes every image file of the chain.
func (c *PageChain) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, p := range c.procs {
		if p.data != nil {
			errs = append(errs, unix.Munmap(p.data))
		}
		errs = append(errs, p.pages.Close())
	}
	c.procs = map[int]*chainProc{}
	errs = append(errs, c.dir.Close())
	if c.parent != nil {
		errs = append(errs, c.parent.Close())
	}
	return errors.Join(errs...)
}
