package images

import (
	"bufio"
	"errors"
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"google.golang.org/protobuf/proto"
)

// pagesBufSize: pages go out in writes of at least this size (or the
// caller's chunk, if bigger), so small runs do not cost a syscall each.
const pagesBufSize = 1 << 20

// PagemapWriter writes pagemap-PID.img and pages-ID.img together. Pages go
// to a temporary pages file as they are added; Close renames it into place
// and then writes the pagemap, so a pagemap never names a missing or
// partial pages file.
type PagemapWriter struct {
	d       *Dir
	pid     int
	pagesID uint32
	tmp     *os.File
	buf     *bufio.Writer
	extents []Extent
	pages   uint64 // pages written to the pages file
	err     error  // sticky write error
	closed  bool
	renamed []string // final names created by Close, for Abort
}

// CreatePagemap starts the pagemap of task pid, storing its pages in
// pages-<pagesID>.img.
func (d *Dir) CreatePagemap(pid int, pagesID uint32) (*PagemapWriter, error) {
	f, err := d.tempFile(PagesName(pagesID))
	if err != nil {
		return nil, err
	}
	return &PagemapWriter{d: d, pid: pid, pagesID: pagesID, tmp: f, buf: bufio.NewWriterSize(f, pagesBufSize)}, nil
}

// Add appends len(data)/PageSize pages at vaddr (page aligned, at or above
// the end of the previous run). A run contiguous with the previous one and
// with the same flags extends the previous entry. flags must include
// PEPresent (0 is taken as PEPresent alone); use AddNoData for pages that
// are not stored here. Empty data is a no-op.
func (w *PagemapWriter) Add(vaddr uint64, data []byte, flags uint32) error {
	if flags == 0 {
		flags = PEPresent
	}
	if flags&PEPresent == 0 {
		return fmt.Errorf("pagemap %d: Add without PEPresent (flags 0x%x): use AddNoData", w.pid, flags)
	}
	if len(data)%PageSize != 0 {
		return fmt.Errorf("pagemap %d: %d bytes at 0x%x is not a whole number of pages", w.pid, len(data), vaddr)
	}
	if len(data) == 0 {
		return w.usable()
	}
	if err := w.addExtent(vaddr, uint64(len(data)/PageSize), flags); err != nil {
		return err
	}
	if _, err := w.buf.Write(data); err != nil {
		w.err = fmt.Errorf("pagemap %d: write %s: %w", w.pid, PagesName(w.pagesID), err)
		return w.err
	}
	w.pages += uint64(len(data) / PageSize)
	return nil
}

// AddNoData records nrPages pages at vaddr whose contents are not in this
// image: PELazy alone (served later by a page server) or PEParent (in the
// parent image of an incremental dump). flags must not include PEPresent.
func (w *PagemapWriter) AddNoData(vaddr, nrPages uint64, flags uint32) error {
	if flags == 0 || flags&PEPresent != 0 {
		return fmt.Errorf("pagemap %d: AddNoData needs PELazy or PEParent without PEPresent (flags 0x%x)", w.pid, flags)
	}
	if nrPages == 0 {
		return w.usable()
	}
	return w.addExtent(vaddr, nrPages, flags)
}

func (w *PagemapWriter) usable() error {
	if w.closed {
		return fmt.Errorf("pagemap %d: %w", w.pid, os.ErrClosed)
	}
	return w.err
}

func (w *PagemapWriter) addExtent(vaddr, nr uint64, flags uint32) error {
	if err := w.usable(); err != nil {
		return err
	}
	if flags&^(PEParent|PELazy|PEPresent) != 0 || flags&(PEParent|PEPresent) == PEParent|PEPresent {
		return fmt.Errorf("pagemap %d: invalid flags 0x%x", w.pid, flags)
	}
	if err := checkExtent(vaddr, nr); err != nil {
		return fmt.Errorf("pagemap %d: %w", w.pid, err)
	}
	if n := len(w.extents); n > 0 {
		last := &w.extents[n-1]
		if vaddr < last.End() {
			return fmt.Errorf("pagemap %d: pages at 0x%x added after pages up to 0x%x (addresses must increase)", w.pid, vaddr, last.End())
		}
		if vaddr == last.End() && flags == last.Flags {
			last.NrPages += nr
			return nil
		}
	}
	off := int64(-1)
	if flags&PEPresent != 0 {
		off = int64(w.pages) * PageSize
	}
	w.extents = append(w.extents, Extent{Vaddr: vaddr, NrPages: nr, Flags: flags, Offset: off})
	return nil
}

// Pages returns the number of pages written to the pages file so far.
func (w *PagemapWriter) Pages() uint64 { return w.pages }

// Pagemap returns the pagemap as written so far (a copy).
func (w *PagemapWriter) Pagemap() *Pagemap {
	return &Pagemap{PagesID: w.pagesID, Extents: append([]Extent(nil), w.extents...)}
}

// Close flushes and fsyncs the pages file, renames it into place and writes
// the pagemap image. On failure both files are removed.
func (w *PagemapWriter) Close() error {
	if err := w.usable(); err != nil {
		w.Abort()
		return err
	}
	pagesName := PagesName(w.pagesID)
	if err := w.buf.Flush(); err != nil {
		w.Abort()
		return fmt.Errorf("pagemap %d: write %s: %w", w.pid, pagesName, err)
	}
	tmp := w.tmp
	w.tmp = nil
	if err := w.d.commit(tmp, pagesName); err != nil {
		w.Abort()
		return err
	}
	w.renamed = append(w.renamed, pagesName)
	entries := make([]proto.Message, 0, 1+len(w.extents))
	entries = append(entries, &pagemap.PagemapHead{PagesId: proto.Uint32(w.pagesID)})
	for _, e := range w.extents {
		// CRIU writes nr_pages and leaves the old 32-bit compat_nr_pages
		// (a required field) at 0.
		entries = append(entries, &pagemap.PagemapEntry{
			Vaddr:         proto.Uint64(e.Vaddr),
			CompatNrPages: proto.Uint32(0),
			Flags:         proto.Uint32(e.Flags),
			NrPages:       proto.Uint64(e.NrPages),
		})
	}
	name := PagemapName(w.pid)
	if err := w.d.Write(name, entries...); err != nil {
		w.Abort()
		return err
	}
	w.renamed = append(w.renamed, name)
	w.closed = true
	return nil
}

// Abort discards the pagemap: the temporary pages file and, if Close had
// already put them in place, both images. Safe to call more than once and
// after Close (a dump that fails later removes what it wrote).
func (w *PagemapWriter) Abort() {
	w.closed = true
	if w.err == nil {
		w.err = errors.New("pagemap aborted")
	}
	if w.tmp != nil {
		w.tmp.Close()
		os.Remove(w.tmp.Name())
		w.tmp = nil
	}
	for _, name := range w.renamed {
		os.Remove(w.d.file(name))
	}
	w.renamed = nil
}
