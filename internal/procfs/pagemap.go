package procfs

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Bits of a /proc/PID/pagemap entry (Documentation/admin-guide/mm/pagemap.rst).
const (
	PMPresent    uint64 = 1 << 63
	PMSwapped    uint64 = 1 << 62
	PMFileShared uint64 = 1 << 61 // page is a file page or shared anon
	PMExclusive  uint64 = 1 << 56 // page is mapped exactly once
	PMSoftDirty  uint64 = 1 << 55 // only with CONFIG_MEM_SOFT_DIRTY
	// PMPFNMask selects the PFN of a present page. The kernel reports 0
	// there to readers without CAP_SYS_ADMIN. For a swapped page the low
	// bits hold swap type and offset instead.
	PMPFNMask uint64 = (1 << 55) - 1
)

// pmEntrySize is the size of one pagemap entry.
const pmEntrySize = 8

// pmMaxChunk bounds one pread (entries): 8 Mi entries = 64 MiB of buffer,
// 32 GiB of address space; read(2) caps a single call near 2 GiB anyway.
const pmMaxChunk = 8 << 20

// Pagemap is an open /proc/PID/pagemap. Read may be called from several
// goroutines at once (it only uses pread).
type Pagemap struct {
	f        *os.File
	pageSize uint64
}

// OpenPagemap opens /proc/PID/pagemap. The caller must Close it.
func OpenPagemap(pid int) (*Pagemap, error) {
	f, err := os.Open(path(pid, "pagemap"))
	if err != nil {
		return nil, fmt.Errorf("procfs: %w", err)
	}
	return &Pagemap{f: f, pageSize: uint64(unix.Getpagesize())}, nil
}

// Read fills out with the entries of pages [start, start+len(out)*pagesize),
// start rounded down to its page. Large requests are split into several
// preads. Reading past the end of the user address space fails with
// io.ErrUnexpectedEOF.
func (p *Pagemap) Read(start uint64, out []uint64) error {
	return p.read(start, out, pmMaxChunk)
}

func (p *Pagemap) read(start uint64, out []uint64, chunk int) error {
	page := start / p.pageSize
	for len(out) > 0 {
		n := min(len(out), chunk)
		off := page * pmEntrySize // < 2^56 for any 64-bit address
		// ReadAt loops over short reads itself and reports io.EOF when
		// the kernel returns 0 (past TASK_SIZE).
		if _, err := p.f.ReadAt(entryBytes(out[:n]), int64(off)); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("procfs: pagemap read at %#x: %w", page*p.pageSize, err)
		}
		out = out[n:]
		page += uint64(n)
	}
	return nil
}

// Close closes the pagemap file.
func (p *Pagemap) Close() error {
	return p.f.Close()
}

// ZeroPFN returns the PFN of the kernel's shared zero page, so the dump can
// skip pages that are the zero page: it maps a fresh read-only anonymous
// page in this process, reads it (a read fault on private anonymous memory
// maps the shared zero page rather than allocating) and looks the page up in
// its own pagemap. It returns 0 and no error when the PFN is hidden (the
// caller lacks CAP_SYS_ADMIN) or the kernel did not map the zero page.
func ZeroPFN() (uint64, error) {
	ps := unix.Getpagesize()
	// One page, so transparent huge pages cannot get involved.
	b, err := unix.Mmap(-1, 0, ps, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, fmt.Errorf("procfs: zero pfn: mmap: %w", err)
	}
	defer unix.Munmap(b)
	if b[0] != 0 {
		return 0, fmt.Errorf("procfs: zero pfn: fresh anonymous page is not zero")
	}
	pm, err := OpenPagemap(os.Getpid())
	if err != nil {
		return 0, err
	}
	defer pm.Close()
	var e [1]uint64
	if err := pm.Read(sliceAddr(b), e[:]); err != nil {
		return 0, fmt.Errorf("procfs: zero pfn: %w", err)
	}
	// The zero page is a "special" pte: present, not exclusive.
	if e[0]&PMPresent == 0 || e[0]&PMExclusive != 0 {
		return 0, nil
	}
	return e[0] & PMPFNMask, nil
}
