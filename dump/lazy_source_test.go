package dump

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/procfs"
)

const ps = images.PageSize

// selfMemory maps 16 pages of this process with a known pattern; the last 4 are made PROT_NONE (the
// dump reads such areas through /proc/PID/mem). It returns the memory and the areas a dump would see.
func selfMemory(t *testing.T) ([]byte, uint64, []*area) {
	t.Helper()
	mem, err := unix.Mmap(-1, 0, 16*ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	for i := range mem {
		mem[i] = byte(i/ps*37 + i%251)
	}
	if err := unix.Mprotect(mem[12*ps:], unix.PROT_NONE); err != nil {
		t.Fatal(err)
	}
	base := addrOf(mem)
	areas := []*area{
		{m: procfs.Mapping{Start: base, End: base + 12*ps, Read: true, Write: true}, dumpPages: true, lazy: true},
		{m: procfs.Mapping{Start: base + 12*ps, End: base + 16*ps}, dumpPages: true, lazy: true},
	}
	return mem, base, areas
}

// want is what the pattern held before the last 4 pages were protected.
func want(page, n int) []byte {
	b := make([]byte, n*ps)
	for i := range b {
		j := page*ps + i
		b[i] = byte(j/ps*37 + j%251)
	}
	return b
}

// TestLazyWritePages: a lazy dump writes lazy runs as pagemap entries without data, the rest with data,
// and its LazySource serves every run from the task's memory, unreadable areas included.
func TestLazyWritePages(t *testing.T) {
	_, base, areas := selfMemory(t)
	lazyFlags := images.PEPresent | images.PELazy
	runs := []run{
		{addr: base, pages: 4, flags: lazyFlags},
		{addr: base + 4*ps, pages: 2, flags: images.PEPresent}, // not lazy (a stack, say): into the images
		{addr: base + 8*ps, pages: 2, flags: lazyFlags},
		{addr: base + 12*ps, pages: 3, flags: lazyFlags}, // PROT_NONE
	}
	d, err := images.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	src := newLazySource()
	defer src.Close()
	st := &Stats{}
	const vpid = 7
	if err := writePages(d, os.Getpid(), vpid, 1, areas, slices.Clone(runs), st, nil, src.proc(os.Getpid(), vpid)); err != nil {
		t.Fatal(err)
	}
	if st.PagesWritten != 2 || st.PagesLazy != 9 {
		t.Errorf("stats: %d written, %d lazy; want 2 and 9", st.PagesWritten, st.PagesLazy)
	}
	pm, err := d.ReadPagemap(vpid)
	if err != nil {
		t.Fatal(err)
	}
	wantExt := []images.Extent{
		{Vaddr: base, NrPages: 4, Flags: images.PELazy, Offset: -1},
		{Vaddr: base + 4*ps, NrPages: 2, Flags: images.PEPresent, Offset: 0},
		{Vaddr: base + 8*ps, NrPages: 2, Flags: images.PELazy, Offset: -1},
		{Vaddr: base + 12*ps, NrPages: 3, Flags: images.PELazy, Offset: -1},
	}
	if !slices.Equal(pm.Extents, wantExt) {
		t.Fatalf("pagemap %+v\nwant %+v", pm.Extents, wantExt)
	}
	pages, err := d.OpenPages(pm)
	if err != nil {
		t.Fatal(err)
	}
	defer pages.Close()
	got := make([]byte, 2*ps)
	if err := pages.ReadAt(got, base+4*ps); err != nil || !bytes.Equal(got, want(4, 2)) {
		t.Fatalf("pages image: %v", err)
	}

	if pids := src.Pids(); !slices.Equal(pids, []int{vpid}) {
		t.Fatalf("Pids %v", pids)
	}
	if n := src.LazyPages(vpid); n != 9 {
		t.Errorf("LazyPages %d, want 9", n)
	}
	ext, err := src.Extents(vpid)
	if err != nil {
		t.Fatal(err)
	}
	if wantE := []Extent{{base, 6}, {base + 8*ps, 2}, {base + 12*ps, 3}}; !slices.Equal(ext, wantE) {
		t.Fatalf("Extents %v, want %v", ext, wantE)
	}
	for _, r := range []struct{ page, n int }{{0, 6}, {3, 3}, {8, 2}, {12, 3}, {13, 1}} {
		got := make([]byte, r.n*ps)
		if err := src.ReadPages(vpid, base+uint64(r.page)*ps, got); err != nil {
			t.Fatalf("ReadPages %d+%d: %v", r.page, r.n, err)
		}
		if !bytes.Equal(got, want(r.page, r.n)) {
			t.Fatalf("ReadPages %d+%d: wrong contents", r.page, r.n)
		}
	}
	buf := make([]byte, 4*ps)
	if err := src.ReadPages(vpid, base+8*ps, buf); !errors.Is(err, images.ErrNotInImage) {
		t.Errorf("read over a hole: %v, want ErrNotInImage", err)
	}
	if err := src.ReadPages(vpid, base+16*ps, buf[:ps]); !errors.Is(err, images.ErrNotInImage) {
		t.Errorf("read past the end: %v, want ErrNotInImage", err)
	}
	if err := src.ReadPages(vpid+1, base, buf[:ps]); !errors.Is(err, unix.ESRCH) || !errors.Is(err, ErrNoProcess) {
		t.Errorf("unknown pid: %v", err)
	}
	if _, err := src.Extents(vpid + 1); !errors.Is(err, unix.ESRCH) {
		t.Errorf("Extents of an unknown pid: %v", err)
	}
	if err := src.ReadPages(vpid, base+1, buf[:ps]); !errors.Is(err, unix.EINVAL) {
		t.Errorf("unaligned read: %v", err)
	}
}

// TestPlainWritePages: without a lazy source every run goes into the images with its data, lazy flag
// kept, as before.
func TestPlainWritePages(t *testing.T) {
	_, base, areas := selfMemory(t)
	runs := []run{
		{addr: base, pages: 4, flags: images.PEPresent | images.PELazy},
		{addr: base + 12*ps, pages: 2, flags: images.PEPresent | images.PELazy},
	}
	d, err := images.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	st := &Stats{}
	if err := writePages(d, os.Getpid(), 3, 1, areas, runs, st, nil, (*LazySource)(nil).proc(os.Getpid(), 3)); err != nil {
		t.Fatal(err)
	}
	if st.PagesWritten != 6 || st.PagesLazy != 6 {
		t.Errorf("stats: %d written, %d lazy; want 6 and 6", st.PagesWritten, st.PagesLazy)
	}
	pm, err := d.ReadPagemap(3)
	if err != nil {
		t.Fatal(err)
	}
	pages, err := d.OpenPages(pm)
	if err != nil {
		t.Fatal(err)
	}
	defer pages.Close()
	got := make([]byte, 2*ps)
	if err := pages.ReadAt(got, base+12*ps); err != nil || !bytes.Equal(got, want(12, 2)) {
		t.Fatalf("unreadable pages in the image: %v", err)
	}
}
