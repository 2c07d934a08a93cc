package pagesrv

import (
	"fmt"
	"slices"
)

// Extent is a run of pages that exist in a source: [Addr, Addr+NrPages*pagesize).
type Extent struct {
	Addr    uint64
	NrPages uint64
}

// Source provides the pages the server serves: local images (NewImageSource)
// or, for dump --lazy-pages, the memory of a frozen process.
//
// The server calls a Source from its single loop goroutine only; a source
// used by nothing else needs no locking. The server caches Extents per pid
// for its lifetime, so the set of pages must not change while it serves.
type Source interface {
	// ReadPages fills dst (a whole number of pages) with the pages starting
	// at addr (page aligned). If any page of the range is not in the source
	// it returns an error matching ErrNotInImage; the server then uses
	// Extents to send the present parts and mark the rest absent.
	ReadPages(pid int, addr uint64, dst []byte) error
	// Extents lists the pages of pid that exist, in any order. A pid the
	// source does not know returns an error (wrap unix.ESRCH for "no such
	// process" so it reaches the client as such).
	Extents(pid int) ([]Extent, error)
}

// MappedSource is a Source whose pages are in memory already (image files it maps). The server then
// queues those bytes themselves for the socket, with no read into a reply buffer first: every page is
// copied once (into the socket) instead of twice, which is most of a page server's work.
type MappedSource interface {
	Source
	// MappedPages returns the bytes of pid's pages from addr on: at least one page, at most n bytes
	// (whole pages), fewer where they continue elsewhere. They stay valid, and must not be written,
	// until the source is closed. A first page the source lacks is reported as ReadPages does
	// (ErrNotInImage).
	MappedPages(pid int, addr uint64, n uint64) ([]byte, error)
}

// normalizeExtents returns a sorted copy of ext with empty extents dropped
// and touching or overlapping extents merged. It rejects extents that wrap
// the address space.
func normalizeExtents(ext []Extent, pageSize uint64) ([]Extent, error) {
	out := make([]Extent, 0, len(ext))
	for _, e := range ext {
		if e.NrPages == 0 {
			continue
		}
		if e.Addr%pageSize != 0 || e.NrPages > (^uint64(0)-e.Addr)/pageSize {
			return nil, fmt.Errorf("%w: extent %#x+%d pages is unaligned or wraps", ErrBadRequest, e.Addr, e.NrPages)
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Extent) int {
		switch {
		case a.Addr < b.Addr:
			return -1
		case a.Addr > b.Addr:
			return 1
		}
		return 0
	})
	merged := out[:0]
	for _, e := range out {
		if n := len(merged); n > 0 {
			last := &merged[n-1]
			end := last.Addr + last.NrPages*pageSize
			if e.Addr <= end {
				if eEnd := e.Addr + e.NrPages*pageSize; eEnd > end {
					last.NrPages = (eEnd - last.Addr) / pageSize
				}
				continue
			}
		}
		merged = append(merged, e)
	}
	return merged, nil
}

// runsFor splits the nrPages pages at addr into present and absent runs
// according to ext (normalized). It appends to runs and returns them with
// the number of present pages.
func runsFor(runs []Run, ext []Extent, addr uint64, nrPages uint32, pageSize uint64) ([]Run, int) {
	end := addr + uint64(nrPages)*pageSize
	// First extent that ends after addr.
	i, _ := slices.BinarySearchFunc(ext, addr, func(e Extent, a uint64) int {
		if e.Addr+e.NrPages*pageSize <= a {
			return -1
		}
		return 1
	})
	add := func(n uint64, present bool) {
		if n == 0 {
			return
		}
		if l := len(runs); l > 0 && runs[l-1].Present == present {
			runs[l-1].NrPages += uint32(n)
			return
		}
		runs = append(runs, Run{NrPages: uint32(n), Present: present})
	}
	present := 0
	cur := addr
	for ; i < len(ext) && cur < end; i++ {
		e := ext[i]
		if e.Addr >= end {
			break
		}
		if e.Addr > cur {
			add((e.Addr-cur)/pageSize, false)
			cur = e.Addr
		}
		eEnd := min(e.Addr+e.NrPages*pageSize, end)
		n := (eEnd - cur) / pageSize
		add(n, true)
		present += int(n)
		cur = eEnd
	}
	add((end-cur)/pageSize, false)
	return runs, present
}
