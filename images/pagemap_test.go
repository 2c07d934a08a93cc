package images

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// page returns n pages whose bytes encode their address, so misplaced
// pages are detected.
func pagesAt(vaddr uint64, n int) []byte {
	b := make([]byte, n*PageSize)
	for i := 0; i < n; i++ {
		a := vaddr + uint64(i)*PageSize
		for j := 0; j < PageSize; j += 8 {
			v := a + uint64(j)
			for k := 0; k < 8; k++ {
				b[i*PageSize+j+k] = byte(v >> (8 * k))
			}
		}
	}
	return b
}

func TestPagemapWriteRead(t *testing.T) {
	d := newDir(t)
	w, err := d.CreatePagemap(100, 7)
	if err != nil {
		t.Fatal(err)
	}
	const base = 0x7f0000000000
	adds := []struct {
		vaddr uint64
		n     int
		flags uint32
	}{
		{base, 2, PEPresent},
		{base + 2*PageSize, 3, PEPresent},              // contiguous, same flags: merged
		{base + 5*PageSize, 1, PEPresent | PELazy},     // contiguous, other flags: new entry
		{base + 6*PageSize, 1, PEPresent | PELazy},     // merged into the lazy one
		{base + 10*PageSize, 4, 0},                     // gap: new entry; 0 means PEPresent
		{base + 14*PageSize, 0, PEPresent},             // empty: no-op
		{base + 0x100000, 256, PEPresent},              // a 1 MiB run, as one write
		{base + 0x100000 + 256*PageSize, 1, PEPresent}, // merged
	}
	var total uint64
	for _, a := range adds {
		if err := w.Add(a.vaddr, pagesAt(a.vaddr, a.n), a.flags); err != nil {
			t.Fatalf("Add(0x%x, %d): %v", a.vaddr, a.n, err)
		}
		total += uint64(a.n)
		if w.Pages() != total {
			t.Fatalf("Pages() = %d, want %d", w.Pages(), total)
		}
	}
	if err := w.AddNoData(base+0x300000, 16, PELazy); err != nil {
		t.Fatal(err)
	}
	if err := w.AddNoData(base+0x300000+16*PageSize, 4, PEParent); err != nil {
		t.Fatal(err)
	}
	if w.Pages() != total {
		t.Errorf("AddNoData changed Pages()")
	}
	want := []Extent{
		{Vaddr: base, NrPages: 5, Flags: PEPresent, Offset: 0},
		{Vaddr: base + 5*PageSize, NrPages: 2, Flags: PEPresent | PELazy, Offset: 5 * PageSize},
		{Vaddr: base + 10*PageSize, NrPages: 4, Flags: PEPresent, Offset: 7 * PageSize},
		{Vaddr: base + 0x100000, NrPages: 257, Flags: PEPresent, Offset: 11 * PageSize},
		{Vaddr: base + 0x300000, NrPages: 16, Flags: PELazy, Offset: -1},
		{Vaddr: base + 0x300000 + 16*PageSize, NrPages: 4, Flags: PEParent, Offset: -1},
	}
	if got := w.Pagemap().Extents; !equalExtents(got, want) {
		t.Fatalf("writer extents\n got %v\nwant %v", got, want)
	}
	if d.Exists(PagesName(7)) || d.Exists(PagemapName(100)) {
		t.Fatal("images visible before Close")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Add(base+0x400000, pagesAt(0, 1), PEPresent); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Add after Close: %v", err)
	}
	noTempFiles(t, d)

	pm, err := d.ReadPagemap(100)
	if err != nil {
		t.Fatal(err)
	}
	if pm.PagesID != 7 || !equalExtents(pm.Extents, want) {
		t.Fatalf("read extents\n got %v\nwant %v", pm.Extents, want)
	}
	if pm.TotalPages() != total {
		t.Errorf("TotalPages() = %d, want %d", pm.TotalPages(), total)
	}
	st, _ := os.Stat(filepath.Join(d.Path(), PagesName(7)))
	if uint64(st.Size()) != total*PageSize {
		t.Errorf("pages file %d bytes, want %d", st.Size(), total*PageSize)
	}

	// Find.
	for _, c := range []struct {
		vaddr uint64
		idx   int
	}{
		{base, 0}, {base + 4*PageSize + 17, 0}, {base + 5*PageSize, 1}, {base + 7*PageSize, -1},
		{base + 13*PageSize, 2}, {base + 14*PageSize, -1}, {base - 1, -1}, {base + 0x300000 + 19*PageSize, 5},
		{base + 0x300000 + 20*PageSize, -1}, {0, -1}, {^uint64(0), -1},
	} {
		e, ok := pm.Find(c.vaddr)
		if ok != (c.idx >= 0) || ok && e != want[c.idx] {
			t.Errorf("Find(0x%x) = %v %v, want extent %d", c.vaddr, e, ok, c.idx)
		}
	}

	// go-criu's crit decodes the pagemap: head, then entries as CRIU writes them.
	img := critDecode(t, filepath.Join(d.Path(), PagemapName(100)), nil, false)
	if img.Magic != "PAGEMAP" || len(img.Entries) != 1+len(want) {
		t.Fatalf("crit: %s with %d entries", img.Magic, len(img.Entries))
	}
	if h := img.Entries[0].Message.(*pagemap.PagemapHead); h.GetPagesId() != 7 {
		t.Errorf("crit head %v", h)
	}
	for i, e := range want {
		pe := img.Entries[i+1].Message.(*pagemap.PagemapEntry)
		if pe.GetVaddr() != e.Vaddr || pe.GetNrPages() != e.NrPages || pe.GetFlags() != e.Flags || pe.CompatNrPages == nil || pe.InParent != nil {
			t.Errorf("crit entry %d: %v, want %v", i, pe, e)
		}
	}

	// Pages: single pages, whole extents, spans across adjacent extents.
	p, err := d.OpenPages(pm)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Pagemap() != pm || p.File() == nil {
		t.Error("Pagemap()/File() accessors")
	}
	for _, c := range []struct {
		vaddr uint64
		n     int
	}{
		{base, 1}, {base, 7}, {base + 4*PageSize, 3}, {base + 6*PageSize, 1}, {base + 10*PageSize, 4},
		{base + 0x100000, 257}, {base + 0x100000 + 100*PageSize, 50},
	} {
		buf := make([]byte, c.n*PageSize)
		if err := p.ReadAt(buf, c.vaddr); err != nil {
			t.Errorf("ReadAt(0x%x, %d pages): %v", c.vaddr, c.n, err)
			continue
		}
		if !bytes.Equal(buf, pagesAt(c.vaddr, c.n)) {
			t.Errorf("ReadAt(0x%x, %d pages): wrong contents", c.vaddr, c.n)
		}
	}
	if err := p.ReadAt(nil, base+7*PageSize); err != nil {
		t.Errorf("empty read: %v", err)
	}
	for _, c := range []struct {
		vaddr uint64
		n     int
		want  error
	}{
		{base + 7*PageSize, 1, ErrNotInImage},             // gap
		{base + 6*PageSize, 2, ErrNotInImage},             // runs into the gap
		{base + 0x300000, 1, ErrNotInImage},               // lazy, not stored
		{base + 0x300000 + 16*PageSize, 1, ErrNotInImage}, // in the parent
		{base - PageSize, 2, ErrNotInImage},               // starts before
		{base + 1, 1, unix.EINVAL},                        // unaligned address
		{^uint64(0) &^ (PageSize - 1), 2, unix.EINVAL},    // wraps
	} {
		err := p.ReadAt(make([]byte, c.n*PageSize), c.vaddr)
		if !errors.Is(err, c.want) {
			t.Errorf("ReadAt(0x%x, %d pages): %v, want %v", c.vaddr, c.n, err, c.want)
		}
	}
	if err := p.ReadAt(make([]byte, 100), base); !errors.Is(err, unix.EINVAL) {
		t.Errorf("partial page read: %v", err)
	}

	// Concurrent readers (pread only; run with -race to check).
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 3*PageSize)
			for i := range 100 {
				a := base + 0x100000 + uint64((i*7+g)%250)*PageSize
				if err := p.ReadAt(buf, a); err != nil || !bytes.Equal(buf, pagesAt(a, 3)) {
					t.Errorf("concurrent ReadAt(0x%x): %v", a, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func equalExtents(a, b []Extent) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPagemapWriterErrors(t *testing.T) {
	d := newDir(t)
	w, err := d.CreatePagemap(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(0x10000, pagesAt(0x10000, 2), PEPresent); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what string
		err  error
		want string
	}{
		{"unaligned address", w.Add(0x20001, pagesAt(0, 1), PEPresent), "not page aligned"},
		{"partial page", w.Add(0x20000, make([]byte, 100), PEPresent), "not a whole number of pages"},
		{"going back", w.Add(0x10000, pagesAt(0, 1), PEPresent), "addresses must increase"},
		{"overlap", w.Add(0x11000, pagesAt(0, 1), PEPresent), "addresses must increase"},
		{"no PEPresent", w.Add(0x20000, pagesAt(0, 1), PELazy), "use AddNoData"},
		{"unknown flag", w.Add(0x20000, pagesAt(0, 1), PEPresent|8), "invalid flags"},
		{"parent and present", w.Add(0x20000, pagesAt(0, 1), PEPresent|PEParent), "invalid flags"},
		{"AddNoData present", w.AddNoData(0x20000, 1, PEPresent), "without PEPresent"},
		{"AddNoData no flags", w.AddNoData(0x20000, 1, 0), "without PEPresent"},
		{"wrap", w.AddNoData(^uint64(0)&^(PageSize-1), 2, PELazy), "wrap around"},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.what, c.err, c.want)
		}
	}
	// Rejected calls leave the writer usable.
	if err := w.Add(0x20000, pagesAt(0x20000, 1), PEPresent); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	pm, err := d.ReadPagemap(1)
	if err != nil || pm.TotalPages() != 3 || len(pm.Extents) != 2 {
		t.Fatalf("after rejected calls: %v %v", pm, err)
	}
	if err := w.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}

func TestPagemapAbort(t *testing.T) {
	d := newDir(t)
	// Abort before Close: nothing is left.
	w, err := d.CreatePagemap(5, 5)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(0x1000, pagesAt(0x1000, 3), PEPresent); err != nil {
		t.Fatal(err)
	}
	w.Abort()
	w.Abort()
	if err := w.Close(); err == nil {
		t.Error("Close after Abort succeeded")
	}
	if err := w.Add(0x9000, pagesAt(0x9000, 1), PEPresent); err == nil {
		t.Error("Add after Abort succeeded")
	}
	// Abort after Close removes both images.
	w, err = d.CreatePagemap(6, 6)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(0x1000, pagesAt(0x1000, 1), PEPresent); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !d.Exists(PagemapName(6)) || !d.Exists(PagesName(6)) {
		t.Fatal("Close did not create the images")
	}
	w.Abort()
	ents, _ := os.ReadDir(d.Path())
	if len(ents) != 0 {
		t.Errorf("files left after Abort: %v", ents)
	}
}

// An empty pagemap (a task without dumpable pages) is valid.
func TestPagemapEmpty(t *testing.T) {
	d := newDir(t)
	w, err := d.CreatePagemap(3, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	pm, err := d.ReadPagemap(3)
	if err != nil || len(pm.Extents) != 0 || pm.TotalPages() != 0 {
		t.Fatalf("%v %v", pm, err)
	}
	p, err := d.OpenPages(pm)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.ReadAt(make([]byte, PageSize), 0x1000); !errors.Is(err, ErrNotInImage) {
		t.Errorf("ReadAt on empty pagemap: %v", err)
	}
	// Without a pages file at all (only lazy pages, served elsewhere).
	if err := d.Write(PagemapName(4), &pagemap.PagemapHead{PagesId: proto.Uint32(44)},
		pmEntry(0x1000, 3, proto.Uint32(PELazy))); err != nil {
		t.Fatal(err)
	}
	pm, err = d.ReadPagemap(4)
	if err != nil || pm.TotalPages() != 0 {
		t.Fatalf("lazy-only pagemap: %v %v", pm, err)
	}
	p2, err := d.OpenPages(pm)
	if err != nil || p2.File() != nil {
		t.Fatalf("OpenPages without pages: %v %v", p2, err)
	}
	if err := p2.ReadAt(make([]byte, PageSize), 0x1000); !errors.Is(err, ErrNotInImage) {
		t.Errorf("ReadAt of a lazy page: %v", err)
	}
	p2.Close()
}

func pmEntry(vaddr, nr uint64, flags *uint32) *pagemap.PagemapEntry {
	return &pagemap.PagemapEntry{Vaddr: proto.Uint64(vaddr), CompatNrPages: proto.Uint32(0), NrPages: proto.Uint64(nr), Flags: flags}
}

func TestPagemapCompat(t *testing.T) {
	d := newDir(t)
	// Entries as older CRIU versions wrote them: only compat_nr_pages, no
	// flags (present), in_parent instead of PE_PARENT.
	old := []*pagemap.PagemapEntry{
		{Vaddr: proto.Uint64(0x1000), CompatNrPages: proto.Uint32(2)},
		{Vaddr: proto.Uint64(0x5000), CompatNrPages: proto.Uint32(1), InParent: proto.Bool(true)},
		{Vaddr: proto.Uint64(0x8000), CompatNrPages: proto.Uint32(9), NrPages: proto.Uint64(1), Flags: proto.Uint32(PEPresent | PELazy)},
	}
	if err := d.Write(PagemapName(1), &pagemap.PagemapHead{PagesId: proto.Uint32(1)}, old[0], old[1], old[2]); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.Path(), PagesName(1)), pagesAt(0, 3), 0o600); err != nil {
		t.Fatal(err)
	}
	pm, err := d.ReadPagemap(1)
	if err != nil {
		t.Fatal(err)
	}
	want := []Extent{
		{Vaddr: 0x1000, NrPages: 2, Flags: PEPresent, Offset: 0},
		{Vaddr: 0x5000, NrPages: 1, Flags: PEParent, Offset: -1},
		{Vaddr: 0x8000, NrPages: 1, Flags: PEPresent | PELazy, Offset: 2 * PageSize},
	}
	if !equalExtents(pm.Extents, want) {
		t.Fatalf("got %v\nwant %v", pm.Extents, want)
	}
}

func TestPagemapCorrupt(t *testing.T) {
	d := newDir(t)
	head := &pagemap.PagemapHead{PagesId: proto.Uint32(2)}
	present := proto.Uint32(PEPresent)
	for _, c := range []struct {
		what    string
		entries []*pagemap.PagemapEntry
		pages   int // pages file size in pages; -1: no file
		want    string
	}{
		{"unaligned", []*pagemap.PagemapEntry{pmEntry(0x1001, 1, present)}, 1, "not page aligned"},
		{"empty entry", []*pagemap.PagemapEntry{pmEntry(0x1000, 0, present)}, 0, "empty extent"},
		{"overlap", []*pagemap.PagemapEntry{pmEntry(0x1000, 2, present), pmEntry(0x2000, 1, present)}, 3, "overlaps"},
		{"unsorted", []*pagemap.PagemapEntry{pmEntry(0x5000, 1, present), pmEntry(0x1000, 1, present)}, 2, "overlaps or precedes"},
		{"wraps", []*pagemap.PagemapEntry{pmEntry(0xfffffffffffff000, 2, present)}, 2, "wrap around"},
		{"huge count", []*pagemap.PagemapEntry{pmEntry(0, 1<<51, present)}, 0, "overflows"},
		{"pages file short", []*pagemap.PagemapEntry{pmEntry(0x1000, 2, present)}, 1, "pages-2.img has 4096 bytes, the pagemap lists 2 pages"},
		{"pages file long", []*pagemap.PagemapEntry{pmEntry(0x1000, 2, present)}, 3, "has 12288 bytes"},
		{"pages file missing", []*pagemap.PagemapEntry{pmEntry(0x1000, 2, present)}, -1, "missing"},
	} {
		msgs := []proto.Message{head}
		for _, e := range c.entries {
			msgs = append(msgs, e)
		}
		if err := d.Write(PagemapName(1), msgs...); err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(d.Path(), PagesName(2)))
		if c.pages >= 0 {
			if err := os.WriteFile(filepath.Join(d.Path(), PagesName(2)), make([]byte, c.pages*PageSize), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		_, err := d.ReadPagemap(1)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrCorrupt containing %q", c.what, err, c.want)
		}
	}
	// No head at all.
	if err := d.Write(PagemapName(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ReadPagemap(1); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "missing pagemap head") {
		t.Errorf("no head: %v", err)
	}

	// OpenPages validates a caller-built pagemap and the file size.
	bad := &Pagemap{PagesID: 2, Extents: []Extent{{Vaddr: 0x2000, NrPages: 1, Flags: PEPresent, Offset: 0}, {Vaddr: 0x1000, NrPages: 1, Flags: PEPresent, Offset: PageSize}}}
	if _, err := d.OpenPages(bad); !errors.Is(err, ErrCorrupt) {
		t.Errorf("OpenPages of unsorted pagemap: %v", err)
	}
	badOff := &Pagemap{PagesID: 2, Extents: []Extent{{Vaddr: 0x1000, NrPages: 1, Flags: PEPresent, Offset: PageSize}}}
	if _, err := d.OpenPages(badOff); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "offset") {
		t.Errorf("OpenPages with bad offset: %v", err)
	}
	good := &Pagemap{PagesID: 2, Extents: []Extent{{Vaddr: 0x1000, NrPages: 1, Flags: PEPresent, Offset: 0}}}
	if err := os.WriteFile(filepath.Join(d.Path(), PagesName(2)), make([]byte, 2*PageSize), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.OpenPages(good); !errors.Is(err, ErrCorrupt) {
		t.Errorf("OpenPages with a pages file of the wrong size: %v", err)
	}
	os.Remove(filepath.Join(d.Path(), PagesName(2)))
	if _, err := d.OpenPages(good); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenPages without pages file: %v", err)
	}
}
