package dump

import (
	"errors"
	"fmt"
	"os"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/kernel"
	"github.com/lazyr/lazyr/internal/procfs"
)

// pageScanner finds the pages of a private area that hold data: present or swapped, and anonymous (in a
// private file mapping: the pages the process wrote). The kernel's shared zero page is skipped, it reads
// as zero anyway, and so are guard regions (MADV_GUARD_INSTALL), which hold nothing and fault on access.
//
// It asks the kernel with the PAGEMAP_SCAN ioctl (Linux 6.7+), which walks the page tables and returns
// runs: about twice as fast as reading /proc/PID/pagemap, 8 bytes a page, and without the buffer. On a
// kernel without it, it reads the pagemap as before.
type pageScanner struct {
	f     *os.File // /proc/PID/pagemap
	query kernel.PagemapQuery
	vec   []kernel.PageRegion
	scan  bool // PAGEMAP_SCAN works

	pm      *procfs.Pagemap // fallback, opened on first use
	pid     int
	zeroPFN uint64
	buf     []uint64
}

// dataPages asks for anonymous pages in memory or swap, not the zero page, not a guard region.
var dataPages = kernel.PagemapQuery{
	Inverted: kernel.PageIsPFNZero | kernel.PageIsFile | kernel.PageIsGuard,
	Mask:     kernel.PageIsPFNZero | kernel.PageIsFile | kernel.PageIsGuard,
	AnyOf:    kernel.PageIsPresent | kernel.PageIsSwapped,
}

func newPageScanner(pid int) (*pageScanner, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, fmt.Errorf("open pagemap: %w", err)
	}
	return &pageScanner{f: f, pid: pid, query: dataPages, scan: true}, nil
}

func (s *pageScanner) close() {
	s.f.Close()
	if s.pm != nil {
		s.pm.Close()
	}
}

// scanArea appends the runs of [start, end) (one area) that hold data, with flags, to runs, and returns
// them with the number of pages found. Runs are merged only within the area: the next area may differ in
// what reading it takes (lazy_source.go reads areas without read permission another way).
func (s *pageScanner) scanArea(start, end uint64, flags uint32, runs []run) ([]run, uint64, error) {
	if s.scan {
		out, found, err := s.scanIoctl(start, end, flags, runs)
		if !errors.Is(err, kernel.ErrNotSupported) {
			return out, found, err
		}
		if s.query.Mask&kernel.PageIsGuard != 0 {
			// Before Linux 6.14 the kernel knows no guard regions (and rejects the bit).
			s.query.Inverted &^= kernel.PageIsGuard
			s.query.Mask &^= kernel.PageIsGuard
			return s.scanArea(start, end, flags, runs)
		}
		s.scan = false
	}
	return s.scanPagemap(start, end, flags, runs)
}

// addRun appends the pages [addr, addr+n pages) to runs, extending the last run when it ends at addr
// inside the same area (it starts at or after areaStart).
func addRun(runs []run, areaStart, addr, n uint64, flags uint32) []run {
	if l := len(runs); l > 0 {
		last := &runs[l-1]
		if last.flags == flags && last.addr >= areaStart && last.addr+last.pages*images.PageSize == addr {
			last.pages += n
			return runs
		}
	}
	return append(runs, run{addr: addr, pages: n, flags: flags})
}

func (s *pageScanner) scanIoctl(start, end uint64, flags uint32, runs []run) ([]run, uint64, error) {
	if s.vec == nil {
		s.vec = make([]kernel.PageRegion, 512)
	}
	var found uint64
	q := s.query
	q.Start, q.End = start, end
	for q.Start < q.End {
		n, walkEnd, err := kernel.PagemapScan(int(s.f.Fd()), q, s.vec)
		if err != nil {
			return runs, 0, fmt.Errorf("scan pages [%#x, %#x): %w", q.Start, q.End, err)
		}
		for _, r := range s.vec[:n] {
			pages := (r.End - r.Start) / images.PageSize
			runs = addRun(runs, start, r.Start, pages, flags)
			found += pages
		}
		if walkEnd <= q.Start {
			return runs, 0, fmt.Errorf("scan pages [%#x, %#x): the walk stopped at %#x", q.Start, q.End, walkEnd)
		}
		q.Start = walkEnd
	}
	return runs, found, nil
}

// scanPagemap is scanIoctl for kernels without PAGEMAP_SCAN: it reads the pagemap entries.
func (s *pageScanner) scanPagemap(start, end uint64, flags uint32, runs []run) ([]run, uint64, error) {
	if s.pm == nil {
		pm, err := procfs.OpenPagemap(s.pid)
		if err != nil {
			return runs, 0, fmt.Errorf("open pagemap: %w", err)
		}
		s.pm = pm
		s.zeroPFN, _ = procfs.ZeroPFN()
	}
	const batch = 64 << 10 // pagemap entries per read: 256 MiB of address space
	n := (end - start) / images.PageSize
	var found uint64
	for off := uint64(0); off < n; off += batch {
		cnt := min(n-off, batch)
		if uint64(cap(s.buf)) < cnt {
			s.buf = make([]uint64, cnt)
		}
		buf := s.buf[:cnt]
		base := start + off*images.PageSize
		if err := s.pm.Read(base, buf); err != nil {
			return runs, 0, fmt.Errorf("read pagemap at %#x: %w", base, err)
		}
		for i, e := range buf {
			dump := false
			switch {
			case e&procfs.PMSwapped != 0:
				dump = true
			case e&procfs.PMPresent != 0:
				dump = e&procfs.PMFileShared == 0 && (s.zeroPFN == 0 || e&procfs.PMPFNMask != s.zeroPFN)
			}
			if dump {
				runs = addRun(runs, start, base+uint64(i)*images.PageSize, 1, flags)
				found++
			}
		}
	}
	return runs, found, nil
}
