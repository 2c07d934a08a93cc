package images

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
)

// PageSize is the page size of the images (x86-64).
const PageSize = 4096

// Pagemap entry flags, as in CRIU's pagemap.proto users (criu/include/pagemap.h).
const (
	// PEParent: the pages are in the parent (pre-dump) image, not here.
	PEParent uint32 = 1 << 0
	// PELazy: the pages may be restored lazily (on fault).
	PELazy uint32 = 1 << 1
	// PEPresent: the pages are stored in this image's pages file.
	PEPresent uint32 = 1 << 2
)

// Extent is one pagemap entry: NrPages pages from Vaddr, with flags.
type Extent struct {
	Vaddr   uint64
	NrPages uint64
	Flags   uint32
	// Offset is the byte offset of the first page in the pages file, or -1
	// if the extent has no data there (no PEPresent flag).
	Offset int64
}

// End returns the address just past the extent.
func (e Extent) End() uint64 { return e.Vaddr + e.NrPages*PageSize }

// Present reports whether the extent's pages are in the pages file.
func (e Extent) Present() bool { return e.Flags&PEPresent != 0 }

// Pagemap is a decoded pagemap-PID.img.
type Pagemap struct {
	PagesID uint32
	Extents []Extent // sorted by Vaddr, non-overlapping (validated)
}

// TotalPages returns the number of pages stored in the pages file (the
// pages of PEPresent extents); pages only mapped as lazy or parent ones
// are not counted.
func (pm *Pagemap) TotalPages() uint64 {
	var n uint64
	for _, e := range pm.Extents {
		if e.Present() {
			n += e.NrPages
		}
	}
	return n
}

// Find returns the extent containing vaddr.
func (pm *Pagemap) Find(vaddr uint64) (Extent, bool) {
	i := pm.search(vaddr)
	if i < 0 {
		return Extent{}, false
	}
	return pm.Extents[i], true
}

func (pm *Pagemap) search(vaddr uint64) int {
	ex := pm.Extents
	i := sort.Search(len(ex), func(i int) bool { return ex[i].End() > vaddr })
	if i < len(ex) && ex[i].Vaddr <= vaddr {
		return i
	}
	return -1
}

// Validate checks what every reader relies on: page-aligned, non-empty,
// sorted, non-overlapping extents that do not wrap around, and offsets that
// lay the present extents out back to back from 0 in pagemap order.
func (pm *Pagemap) Validate() error {
	var (
		prevEnd uint64
		off     int64
	)
	for i, e := range pm.Extents {
		if err := checkExtent(e.Vaddr, e.NrPages); err != nil {
			return fmt.Errorf("%w: extent %d: %w", ErrCorrupt, i, err)
		}
		if i > 0 && e.Vaddr < prevEnd {
			return fmt.Errorf("%w: extent %d at 0x%x overlaps or precedes the previous one ending at 0x%x", ErrCorrupt, i, e.Vaddr, prevEnd)
		}
		prevEnd = e.End()
		want := int64(-1)
		if e.Present() {
			want = off
			if e.NrPages > uint64(math.MaxInt64-off)/PageSize {
				return fmt.Errorf("%w: extent %d: pages file offset overflows", ErrCorrupt, i)
			}
			off += int64(e.NrPages) * PageSize
		}
		if e.Offset != want {
			return fmt.Errorf("%w: extent %d at 0x%x: offset %d, want %d", ErrCorrupt, i, e.Vaddr, e.Offset, want)
		}
	}
	return nil
}

func checkExtent(vaddr, nr uint64) error {
	if vaddr%PageSize != 0 {
		return fmt.Errorf("address 0x%x is not page aligned", vaddr)
	}
	if nr == 0 {
		return fmt.Errorf("empty extent at 0x%x", vaddr)
	}
	if nr > (math.MaxUint64-vaddr)/PageSize {
		return fmt.Errorf("%d pages at 0x%x wrap around the address space", nr, vaddr)
	}
	return nil
}

// ReadPagemap reads and validates pagemap-PID.img and checks that the pages
// file it names holds exactly its present pages.
func (d *Dir) ReadPagemap(pid int) (*Pagemap, error) {
	return d.readPagemap(PagemapName(pid))
}

func (d *Dir) readPagemap(name string) (*Pagemap, error) {
	f, size, err := d.openImage(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	pm, err := decodePagemap(newReader(f, size, name))
	if err != nil {
		return nil, err
	}
	pages := PagesName(pm.PagesID)
	want := pm.TotalPages() * PageSize
	st, err := os.Stat(d.file(pages))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if want == 0 {
			return pm, nil
		}
		return nil, fmt.Errorf("%s: %w: its %d pages are missing: %w: %w", name, ErrCorrupt, want/PageSize, ErrNotFound, err)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", name, err)
	case uint64(st.Size()) != want:
		return nil, fmt.Errorf("%s: %w: %s has %d bytes, the pagemap lists %d pages (%d bytes)",
			name, ErrCorrupt, pages, st.Size(), want/PageSize, want)
	}
	return pm, nil
}

// pagemapEntryFlags applies CRIU's rules for entries from older versions
// (criu/pagemap.c init_compat_pagemap_entry): in_parent means PE_PARENT,
// and an entry without flags is present.
func pagemapEntryFlags(pe *pagemap.PagemapEntry) uint32 {
	flags := pe.GetFlags()
	if pe.GetInParent() {
		flags |= PEParent
	} else if pe.Flags == nil {
		flags = PEPresent
	}
	return flags
}

// pagemapEntryPages: nr_pages replaced the 32-bit compat_nr_pages, which
// newer CRIU writes as 0.
func pagemapEntryPages(pe *pagemap.PagemapEntry) uint64 {
	if pe.NrPages != nil {
		return pe.GetNrPages()
	}
	return uint64(pe.GetCompatNrPages())
}

func decodePagemap(r *reader) (*Pagemap, error) {
	if err := r.expectHeader(kindByMagic("PAGEMAP")); err != nil {
		return nil, err
	}
	if r.atEOF() {
		return nil, r.corrupt("missing pagemap head")
	}
	head := &pagemap.PagemapHead{}
	if err := r.entry(head); err != nil {
		return nil, err
	}
	pm := &Pagemap{PagesID: head.GetPagesId()}
	var (
		prevEnd uint64
		off     int64
	)
	for !r.atEOF() {
		start := r.off
		pe := &pagemap.PagemapEntry{}
		if err := r.entry(pe); err != nil {
			return nil, err
		}
		e := Extent{Vaddr: pe.GetVaddr(), NrPages: pagemapEntryPages(pe), Flags: pagemapEntryFlags(pe), Offset: -1}
		if err := checkExtent(e.Vaddr, e.NrPages); err != nil {
			r.off = start
			return nil, r.corrupt("pagemap entry %d: %v", len(pm.Extents), err)
		}
		if len(pm.Extents) > 0 && e.Vaddr < prevEnd {
			r.off = start
			return nil, r.corrupt("pagemap entry %d at 0x%x overlaps or precedes the previous one ending at 0x%x",
				len(pm.Extents), e.Vaddr, prevEnd)
		}
		prevEnd = e.End()
		if e.Present() {
			// A pages file larger than 8 EiB cannot exist; this only
			// guards the arithmetic against hostile counts.
			if e.NrPages > uint64(math.MaxInt64-off)/PageSize {
				r.off = start
				return nil, r.corrupt("pagemap entry %d: pages file offset overflows", len(pm.Extents))
			}
			e.Offset = off
			off += int64(e.NrPages) * PageSize
		}
		pm.Extents = append(pm.Extents, e)
	}
	return pm, nil
}
