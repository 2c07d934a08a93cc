package lazypages

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lazyr/lazyr/images"
)

// writeImage writes pagemap-pid.img/pages-id.img: runs of pattern pages
// (PE_PRESENT|PE_LAZY) and runs that are only in the parent (PE_PARENT).
func writeImage(t *testing.T, dir string, pid int, present, inParent []Extent) {
	t.Helper()
	d, err := images.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	w, err := d.CreatePagemap(pid, uint32(pid))
	if err != nil {
		t.Fatal(err)
	}
	type run struct {
		e      Extent
		parent bool
	}
	var runs []run
	for _, e := range present {
		runs = append(runs, run{e, false})
	}
	for _, e := range inParent {
		runs = append(runs, run{e, true})
	}
	// The writer wants increasing addresses.
	for i := range runs {
		for j := i + 1; j < len(runs); j++ {
			if runs[j].e.Addr < runs[i].e.Addr {
				runs[i], runs[j] = runs[j], runs[i]
			}
		}
	}
	for _, r := range runs {
		if r.parent {
			err = w.AddNoData(r.e.Addr, r.e.NrPages, images.PEParent)
		} else {
			data := make([]byte, r.e.NrPages*pageSize)
			fillPattern(data, r.e.Addr)
			err = w.Add(r.e.Addr, data, images.PEPresent|images.PELazy)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestImageSourceParentChain(t *testing.T) {
	root := t.TempDir()
	parent, child := filepath.Join(root, "1"), filepath.Join(root, "2")
	const pid = 77
	const base = 0x7f0000000000
	writeImage(t, parent, pid, []Extent{{Addr: base, NrPages: 8}, {Addr: base + 20*pageSize, NrPages: 4}}, nil)
	// The child dump has page 0-1 fresh, 2-7 unchanged (in parent), a
	// new run at 10, and 20-27 "in parent" although the parent has only
	// 20-23.
	writeImage(t, child, pid,
		[]Extent{{Addr: base, NrPages: 2}, {Addr: base + 10*pageSize, NrPages: 1}},
		[]Extent{{Addr: base + 2*pageSize, NrPages: 6}, {Addr: base + 20*pageSize, NrPages: 8}})
	if err := os.Symlink("../1", filepath.Join(child, "parent")); err != nil {
		t.Fatal(err)
	}
	src, err := NewImageSource(child)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ext, err := src.Extents(pid)
	if err != nil {
		t.Fatal(err)
	}
	want := []Extent{{Addr: base, NrPages: 8}, {Addr: base + 10*pageSize, NrPages: 1}, {Addr: base + 20*pageSize, NrPages: 4}}
	if len(ext) != len(want) {
		t.Fatalf("extents %+v, want %+v", ext, want)
	}
	for i := range want {
		if ext[i] != want[i] {
			t.Errorf("extent %d: %+v, want %+v", i, ext[i], want[i])
		}
	}
	got := make([]byte, 8*pageSize)
	if err := src.ReadPages(pid, base, got); err != nil {
		t.Fatalf("ReadPages across present and parent pages: %v", err)
	}
	exp := make([]byte, len(got))
	fillPattern(exp, base)
	if !bytes.Equal(got, exp) {
		t.Error("pages read through the parent differ")
	}
	if err := src.ReadPages(pid, base+24*pageSize, got[:pageSize]); !isNotInImage(err) {
		t.Errorf("page in parent's hole: %v, want not in image", err)
	}
	if err := src.ReadPages(pid, base+9*pageSize, got[:pageSize]); !errors.Is(err, ErrNotInImage) {
		t.Errorf("page in no extent: %v", err)
	}
	if _, err := src.Extents(pid + 1); !errors.Is(err, images.ErrNotFound) {
		t.Errorf("unknown pid: %v", err)
	}
}

// The default source: a victim served from a real image directory.
func TestServeFromImages(t *testing.T) {
	const pages = 2048
	v := startVictim(t, pages, "read")
	dir := t.TempDir()
	writeImage(t, dir, v.pid, []Extent{
		{Addr: v.addr, NrPages: 1000},
		{Addr: v.addr + 1024*pageSize, NrPages: pages - 1024},
	}, nil)
	res := runVictim(t, v, Options{ImagesDir: dir, Prefetch: true})
	hole := func(i int) bool { return i >= 1000 && i < 1024 }
	if got, want := v.expect(t, "SUM"), sumLine(hashPages(fnvInit, v.addr, 0, pages, hole)); got != want {
		t.Errorf("hash %s, want %s", got, want)
	}
	v.wait(t, 10*time.Second)
	r := waitServe(t, res)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got := r.stats.PagesByFault + r.stats.PagesByPrefetch; got != pages-24 {
		t.Errorf("%d pages copied, want %d", got, pages-24)
	}
}
