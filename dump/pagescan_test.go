package dump

import (
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/images"
)

// scanMemory maps 16 pages of this process: pages 1, 2 and 5 written (present), page 8 only read (the
// shared zero page), the rest never touched.
func scanMemory(t *testing.T) ([]byte, uint64) {
	t.Helper()
	mem, err := unix.Mmap(-1, 0, 16*ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	// A huge page would make them all present at once.
	if err := unix.Madvise(mem, unix.MADV_NOHUGEPAGE); err != nil {
		t.Fatal(err)
	}
	for _, p := range []int{1, 2, 5} {
		mem[p*ps] = byte(p)
	}
	if mem[8*ps] != 0 {
		t.Fatal("fresh page not zero")
	}
	return mem, addrOf(mem)
}

// TestScanArea: PAGEMAP_SCAN and the pagemap fallback find the same pages with data (not the zero
// page, not untouched pages), and runs of two adjacent areas stay apart.
func TestScanArea(t *testing.T) {
	_, base := scanMemory(t)
	for _, ioctl := range []bool{true, false} {
		sc, err := newPageScanner(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		sc.scan = ioctl
		// Two areas as the dump would see them, split between pages 1 and 2.
		runs, found, err := sc.scanArea(base, base+2*ps, images.PEPresent, nil)
		if err != nil {
			t.Fatal(err)
		}
		runs, found2, err := sc.scanArea(base+2*ps, base+16*ps, images.PEPresent, runs)
		if err != nil {
			t.Fatal(err)
		}
		sc.close()
		want := []run{
			{addr: base + ps, pages: 1, flags: images.PEPresent},
			{addr: base + 2*ps, pages: 1, flags: images.PEPresent},
			{addr: base + 5*ps, pages: 1, flags: images.PEPresent},
		}
		if !slices.Equal(runs, want) || found != 1 || found2 != 2 {
			t.Errorf("ioctl %v: runs %+v (found %d+%d), want %+v", ioctl, runs, found, found2, want)
		}
	}
}
