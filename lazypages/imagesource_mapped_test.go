package lazypages

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// MappedPages returns what ReadPages reads, in contiguous pieces, through
// parent images too, and refuses what the image does not hold.
func TestImageSourceMapped(t *testing.T) {
	root := t.TempDir()
	parent, child := filepath.Join(root, "1"), filepath.Join(root, "2")
	const pid = 78
	const base = 0x7f0000000000
	writeImage(t, parent, pid, []Extent{{Addr: base, NrPages: 16}}, nil)
	// Pages 0-3 and 4-7 are written as separate pagemap entries that are
	// adjacent in the pages file; 8-11 come from the parent; 12 is a hole;
	// 13-15 are present again.
	writeImage(t, child, pid,
		[]Extent{{Addr: base, NrPages: 4}, {Addr: base + 4*pageSize, NrPages: 4}, {Addr: base + 13*pageSize, NrPages: 3}},
		[]Extent{{Addr: base + 8*pageSize, NrPages: 4}})
	if err := os.Symlink("../1", filepath.Join(child, "parent")); err != nil {
		t.Fatal(err)
	}
	src, err := NewImageSource(child)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ms, ok := src.(MappedSource)
	if !ok {
		t.Fatal("the image source is not a MappedSource")
	}
	exp := make([]byte, 16*pageSize)
	fillPattern(exp, base)

	// Walk the whole range as the daemon does: take what comes, go on.
	var pieces []int
	for a := uint64(base); a < base+16*pageSize; {
		b, err := ms.MappedPages(pid, a, base+16*pageSize-a)
		if a == base+12*pageSize {
			if !isNotInImage(err) {
				t.Fatalf("hole at page 12: %v, want not in image", err)
			}
			a += pageSize
			continue
		}
		if err != nil {
			t.Fatalf("MappedPages(%#x): %v", a, err)
		}
		if len(b) == 0 || len(b)%pageSize != 0 {
			t.Fatalf("MappedPages(%#x) returned %d bytes", a, len(b))
		}
		off := a - base
		if !bytes.Equal(b, exp[off:off+uint64(len(b))]) {
			t.Fatalf("MappedPages(%#x): %d bytes differ from the dump", a, len(b))
		}
		// The same bytes through ReadPages.
		rb := make([]byte, len(b))
		if err := src.ReadPages(pid, a, rb); err != nil || !bytes.Equal(rb, b) {
			t.Fatalf("ReadPages(%#x) disagrees: %v", a, err)
		}
		pieces = append(pieces, len(b)/pageSize)
		a += uint64(len(b))
	}
	// Pages 0-7 in one piece (the two entries are adjacent in the file),
	// then the parent's 8-11 (up to the end of that entry), then 13-15.
	if len(pieces) != 3 || pieces[0] != 8 || pieces[1] != 4 || pieces[2] != 3 {
		t.Errorf("pieces %v, want [8 4 3]", pieces)
	}
	// n limits the answer.
	if b, err := ms.MappedPages(pid, base+pageSize, 2*pageSize); err != nil || len(b) != 2*pageSize {
		t.Errorf("MappedPages with n=2 pages: %d bytes, %v", len(b), err)
	}
	if _, err := ms.MappedPages(pid, base+20*pageSize, pageSize); !errors.Is(err, ErrNotInImage) {
		t.Errorf("page in no extent: %v", err)
	}
	if _, err := ms.MappedPages(pid, base+1, pageSize); !errors.Is(err, unix.EINVAL) {
		t.Errorf("unaligned address: %v", err)
	}
	// The mapping is read-only: UFFDIO_COPY only reads it, and nothing
	// may scribble on the page cache of the dump.
	b, _ := ms.MappedPages(pid, base, pageSize)
	if err := unix.Mprotect(b, unix.PROT_READ|unix.PROT_WRITE); err == nil {
		t.Error("the pages file is mapped writable")
	}
}
