package dump

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/procfs"
)

// TestDeferredLazyScan: a lazy dump records lazy areas whole, in the images and in its source, and the
// scan after the freeze narrows the source to the pages that hold data; reads of lazy pages wait for
// it, reads of pages that are in the images too do not. An area smaps showed wholly resident is not
// scanned: it is served whole, a page dropped since then as zero.
func TestDeferredLazyScan(t *testing.T) {
	mem, err := unix.Mmap(-1, 0, 24*ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	if err := unix.Madvise(mem, unix.MADV_NOHUGEPAGE); err != nil {
		t.Fatal(err)
	}
	// Pages 0-3 and 8-11 written, 4-7 never touched (lazy area 0-11); 12-13 written, 14-15 not
	// (lazy and unreadable, 12-15); 16-19 written and not lazy (a stack, say); 20-23 lazy and wholly
	// resident when smaps was read, but page 22 dropped since.
	written := []int{0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 16, 17, 18, 19, 20, 21, 23}
	for _, p := range written {
		for i := range ps {
			mem[p*ps+i] = byte(p*37 + i%251)
		}
	}
	if err := unix.Mprotect(mem[12*ps:16*ps], unix.PROT_NONE); err != nil {
		t.Fatal(err)
	}
	base := addrOf(mem)
	areas := []*area{
		{m: procfs.Mapping{Start: base, End: base + 12*ps, Read: true, Write: true}, dumpPages: true, lazy: true},
		{m: procfs.Mapping{Start: base + 12*ps, End: base + 16*ps}, dumpPages: true, lazy: true},
		{m: procfs.Mapping{Start: base + 16*ps, End: base + 20*ps, Read: true, Write: true}, dumpPages: true},
		{m: procfs.Mapping{Start: base + 20*ps, End: base + 24*ps, Read: true, Write: true, Rss: 4 * ps}, dumpPages: true, lazy: true},
	}
	src := newDeferredLazySource()
	defer src.Close()
	st := &Stats{}
	runs, err := scanPages(os.Getpid(), areas, st, src.defersScan())
	if err != nil {
		t.Fatal(err)
	}
	d, err := images.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const vpid = 5
	if err := writePages(d, os.Getpid(), vpid, 1, areas, runs, st, nil, src.proc(os.Getpid(), vpid)); err != nil {
		t.Fatal(err)
	}
	// The images: lazy areas whole (a superset; the writer merges the two), the rest exact, with data.
	pm, err := d.ReadPagemap(vpid)
	if err != nil {
		t.Fatal(err)
	}
	wantExt := []images.Extent{
		{Vaddr: base, NrPages: 16, Flags: images.PELazy, Offset: -1},
		{Vaddr: base + 16*ps, NrPages: 4, Flags: images.PEPresent, Offset: 0},
		{Vaddr: base + 20*ps, NrPages: 4, Flags: images.PELazy, Offset: -1},
	}
	if !slices.Equal(pm.Extents, wantExt) {
		t.Fatalf("pagemap %+v\nwant %+v", pm.Extents, wantExt)
	}

	// While a scan runs (one that does not end until we say so): pages in the images are served at
	// once, lazy ones wait.
	scanning := make(chan struct{})
	src.scanned = scanning
	got := make([]byte, 2*ps)
	if err := src.ReadPages(vpid, base+17*ps, got); err != nil || !bytes.Equal(got, mem[17*ps:19*ps]) {
		t.Fatalf("read of pages in the images during the scan: %v", err)
	}
	read := make(chan error, 1)
	go func() { read <- src.ReadPages(vpid, base+8*ps, got) }()
	select {
	case err := <-read:
		t.Fatalf("a read of lazy pages did not wait for the scan (%v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(scanning)
	if err := <-read; err != nil || !bytes.Equal(got, mem[8*ps:10*ps]) {
		t.Fatalf("read of lazy pages after the scan: %v", err)
	}
	// Now the real scan.
	src.scanned = nil
	src.startScan(zap.NewNop())

	ext, err := src.Extents(vpid)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Extent{{base, 4}, {base + 8*ps, 6}, {base + 16*ps, 8}}; !slices.Equal(ext, want) {
		t.Fatalf("Extents %v, want %v", ext, want)
	}
	if n := src.LazyPages(vpid); n != 14 {
		t.Errorf("LazyPages %d, want 14", n)
	}
	for _, p := range written {
		got := make([]byte, ps)
		if err := src.ReadPages(vpid, base+uint64(p)*ps, got); err != nil {
			t.Fatalf("page %d: %v", p, err)
		}
		want := make([]byte, ps)
		for i := range want {
			want[i] = byte(p*37 + i%251)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("page %d: wrong contents", p)
		}
	}
	if err := src.ReadPages(vpid, base+5*ps, got[:ps]); !errors.Is(err, images.ErrNotInImage) {
		t.Errorf("read of a page without data: %v, want ErrNotInImage", err)
	}
	got[0] = 1
	if err := src.ReadPages(vpid, base+22*ps, got[:ps]); err != nil || !bytes.Equal(got[:ps], make([]byte, ps)) {
		t.Errorf("read of the dropped page of a wholly resident area: %v, want zeros", err)
	}
}
