package kernel

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Page categories of PAGEMAP_SCAN (linux/fs.h PAGE_IS_*).
const (
	PageIsWritten = 1 << 1
	PageIsFile    = 1 << 2 // mapped, and not an anonymous page (page cache, shmem)
	PageIsPresent = 1 << 3
	PageIsSwapped = 1 << 4
	PageIsPFNZero = 1 << 5 // the shared zero page (or huge zero page)
	PageIsHuge    = 1 << 6
	PageIsGuard   = 1 << 8 // a guard region (MADV_GUARD_INSTALL), Linux 6.14+
)

// PagemapQuery selects pages for PagemapScan: a page is selected when every category in Mask has the
// wanted value (set, or clear where Inverted has the bit) and, if AnyOf is not zero, at least one
// category of AnyOf matches (Inverted applies there too). Return is the categories regions report.
type PagemapQuery struct {
	Start, End                    uint64
	Inverted, Mask, AnyOf, Return uint64
}

// PageRegion is a run of selected pages, [Start, End), and its categories (masked by the query's Return).
type PageRegion struct {
	Start, End, Categories uint64
}

// ProbePagemapScan runs the PAGEMAP_SCAN ioctl (Linux 6.7+) on
// /proc/self/pagemap over four fresh pages of which the middle two were
// written, asking for present pages, and checks that exactly those two come
// back as one region. The dump finds the pages to save with it (and would
// track dirty pages with it and UFFD_FEATURE_WP_ASYNC, soft-dirty not
// being built in here).
func ProbePagemapScan() error {
	ps := os.Getpagesize()
	b, err := unix.Mmap(-1, 0, 4*ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("pagemap_scan: mmap: %w", err)
	}
	defer unix.Munmap(b)
	// A huge page would make all four present at once.
	if err := unix.Madvise(b, unix.MADV_NOHUGEPAGE); err != nil {
		return fmt.Errorf("pagemap_scan: madvise: %w", err)
	}
	b[1*ps] = 1
	b[2*ps] = 1

	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return fmt.Errorf("pagemap_scan: %w", err)
	}
	defer f.Close()
	start := sliceStart(b)
	vec := make([]PageRegion, 4)
	q := PagemapQuery{Start: start, End: start + uint64(len(b)), Mask: PageIsPresent, Return: PageIsPresent}
	n, _, err := PagemapScan(int(f.Fd()), q, vec)
	if err != nil {
		return err
	}
	regions := vec[:n]
	if len(regions) != 1 || regions[0].Start != start+uint64(ps) || regions[0].End != start+3*uint64(ps) ||
		regions[0].Categories != PageIsPresent {
		return fmt.Errorf("pagemap_scan: want one present region [%#x, %#x), got %+v",
			start+uint64(ps), start+3*uint64(ps), regions)
	}
	return nil
}
