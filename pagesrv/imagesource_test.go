package pagesrv

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/lazyr/lazyr/images"
	"golang.org/x/sys/unix"
)

func pagesOf(seed byte, n int) []byte {
	b := make([]byte, n*images.PageSize)
	for i := range b {
		b[i] = seed + byte(i/images.PageSize)*17 + byte(i)
	}
	return b
}

// writeImages makes an incremental dump of pid 10: a parent image and a
// child pointing at it through the "parent" symlink.
//
//	child page 0        present (data B)
//	child pages 1..3    PE_PARENT -> parent pages 1..3 (data A)
//	child pages 4..5    PE_LAZY only: no data anywhere
//	child pages 8..9    PE_PARENT -> parent pages 8..9 (data C)
//	child pages 20..21  present (data D)
func writeImages(t *testing.T) (dir string, want map[uint64][]byte) {
	t.Helper()
	root := t.TempDir()
	pdir, cdir := filepath.Join(root, "parent-img"), filepath.Join(root, "child-img")
	a, b, c, d := pagesOf(1, 4), pagesOf(2, 1), pagesOf(3, 2), pagesOf(4, 2)
	write := func(path string, add func(w *images.PagemapWriter) error) {
		dir, err := images.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer dir.Close()
		w, err := dir.CreatePagemap(10, 10)
		if err != nil {
			t.Fatal(err)
		}
		if err := add(w); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	write(pdir, func(w *images.PagemapWriter) error {
		return errors.Join(w.Add(base, a, 0), w.Add(base+pg(8), c, 0))
	})
	write(cdir, func(w *images.PagemapWriter) error {
		return errors.Join(
			w.Add(base, b, 0),
			w.AddNoData(base+pg(1), 3, images.PEParent),
			w.AddNoData(base+pg(4), 2, images.PELazy),
			w.AddNoData(base+pg(8), 2, images.PEParent),
			w.Add(base+pg(20), d, 0))
	})
	if err := os.Symlink(pdir, filepath.Join(cdir, "parent")); err != nil {
		t.Fatal(err)
	}
	want = map[uint64][]byte{base: b}
	for i := 1; i < 4; i++ {
		want[base+pg(i)] = a[pg(i):pg(i+1)]
	}
	for i := range 2 {
		want[base+pg(8+i)] = c[pg(i):pg(i+1)]
		want[base+pg(20+i)] = d[pg(i):pg(i+1)]
	}
	return cdir, want
}

func TestImageSource(t *testing.T) {
	dir, want := writeImages(t)
	src, err := NewImageSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.(io.Closer).Close()

	ext, err := src.Extents(10)
	if err != nil {
		t.Fatal(err)
	}
	norm, _ := normalizeExtents(ext, uint64(pageSize))
	wantExt := []Extent{{Addr: base, NrPages: 4}, {Addr: base + pg(8), NrPages: 2}, {Addr: base + pg(20), NrPages: 2}}
	if !slices.Equal(norm, wantExt) {
		t.Fatalf("extents %+v, want %+v", norm, wantExt)
	}
	dst := make([]byte, pg(4))
	if err := src.ReadPages(10, base, dst); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if !bytes.Equal(dst[pg(i):pg(i+1)], want[base+pg(i)]) {
			t.Fatalf("page %d wrong", i)
		}
	}
	if err := src.ReadPages(10, base+pg(4), make([]byte, pg(1))); !errors.Is(err, ErrNotInImage) {
		t.Fatalf("lazy page: %v", err)
	}
	if err := src.ReadPages(10, base+pg(3), make([]byte, pg(2))); !errors.Is(err, ErrNotInImage) {
		t.Fatalf("range into the lazy pages: %v", err)
	}
	if err := src.ReadPages(11, base, make([]byte, pg(1))); !errors.Is(err, unix.ESRCH) {
		t.Fatalf("unknown pid: %v", err)
	}
	if _, err := NewImageSource(filepath.Join(dir, "nope")); err == nil {
		t.Fatal("missing images dir accepted")
	}
}

// TestImageSourceServed: the page server over real images, end to end.
func TestImageSourceServed(t *testing.T) {
	dir, want := writeImages(t)
	src, err := NewImageSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.(io.Closer).Close()
	ts := startServer(t, ServerOptions{Source: src, Files: dir})
	c := dialT(t, ts.port, ClientOptions{})

	dst := make([]byte, pg(22))
	err = c.ReadPages(10, base, dst)
	var nie *NotInImageError
	if !errors.As(err, &nie) {
		t.Fatalf("got %v", err)
	}
	wantAbsent := []Extent{{Addr: base + pg(4), NrPages: 4}, {Addr: base + pg(10), NrPages: 10}}
	if !slices.Equal(nie.Absent, wantAbsent) {
		t.Fatalf("absent %+v, want %+v", nie.Absent, wantAbsent)
	}
	zero := make([]byte, pageSize)
	for i := range 22 {
		w, ok := want[base+pg(i)]
		if !ok {
			w = zero
		}
		if !bytes.Equal(dst[pg(i):pg(i+1)], w) {
			t.Fatalf("page %d wrong", i)
		}
	}
	// The images themselves can be fetched too (the "parent" symlink is
	// not a regular file and is not offered).
	out := t.TempDir()
	if err := c.FetchFiles(out); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{images.PagemapName(10), images.PagesName(10)} {
		a, _ := os.ReadFile(filepath.Join(dir, name))
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(out, "parent")); err == nil {
		t.Fatal("parent symlink fetched")
	}
}
