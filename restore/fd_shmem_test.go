package restore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	sk_unix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/tty"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
)

// writeShmemImage writes pagemap-shmem-SHMID.img and its pages the way a dump does: pages at the given
// page indexes, each filled with its index + 1.
func writeShmemImage(t *testing.T, d *images.Dir, shmid uint64, pagesID uint32, pages []uint64) {
	t.Helper()
	entries := []proto.Message{&pagemap.PagemapHead{PagesId: proto.Uint32(pagesID)}}
	var data []byte
	for _, p := range pages {
		entries = append(entries, &pagemap.PagemapEntry{Vaddr: proto.Uint64(p * images.PageSize), NrPages: proto.Uint64(1),
			CompatNrPages: proto.Uint32(0), Flags: proto.Uint32(images.PEPresent)})
		data = append(data, bytes.Repeat([]byte{byte(p + 1)}, images.PageSize)...)
	}
	if err := d.Write(images.PagemapShmemName(shmid), entries...); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.Path(), images.PagesName(pagesID)), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestFillShmem: a shared memory object's pages land at their offsets, holes stay holes, and a limit
// (the object's size) cuts the last page.
func TestFillShmem(t *testing.T) {
	d, err := images.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	writeShmemImage(t, d, 77, 1<<30, []uint64{0, 3, 4, 9})
	target := filepath.Join(t.TempDir(), "object")
	const size = 9*images.PageSize + 100
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(target, size); err != nil {
		t.Fatal(err)
	}
	if err := fillShmem(d, 77, target, size); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(target)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != size {
		t.Fatalf("object is %d bytes, want %d (the last page cut at the size)", len(b), size)
	}
	for p := 0; p*images.PageSize < size; p++ {
		want := byte(0)
		switch p {
		case 0, 3, 4, 9:
			want = byte(p + 1)
		}
		if got := b[p*images.PageSize]; got != want {
			t.Errorf("page %d holds %d, want %d", p, got, want)
		}
	}
	f, err := os.Open(target)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hole, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE)
	if err != nil || hole != images.PageSize {
		t.Errorf("first hole at %d (%v), want %d: holes were written", hole, err, images.PageSize)
	}
	if err := fillShmem(d, 78, target, size); !errors.Is(err, ErrBadImages) {
		t.Errorf("missing pagemap: %v, want ErrBadImages", err)
	}
	// A pages file shorter than the pagemap says is refused.
	writeShmemImage(t, d, 79, 1<<30+1, []uint64{1})
	if err := os.Truncate(filepath.Join(d.Path(), images.PagesName(1<<30+1)), 100); err != nil {
		t.Fatal(err)
	}
	if err := fillShmem(d, 79, target, size); !errors.Is(err, ErrBadImages) {
		t.Errorf("truncated pages: %v, want ErrBadImages", err)
	}
}

// TestTermiosBytes: the bytes given to TCSETS decode as the kernel's struct termios.
func TestTermiosBytes(t *testing.T) {
	te := &tty.TermiosEntry{CIflag: proto.Uint32(1), COflag: proto.Uint32(2), CCflag: proto.Uint32(3), CLflag: proto.Uint32(4),
		CLine: proto.Uint32(5), CIspeed: proto.Uint32(6), COspeed: proto.Uint32(7)}
	for i := 0; i < 19; i++ {
		te.CCc = append(te.CCc, uint32(40+i))
	}
	var got unix.Termios
	if err := binary.Read(bytes.NewReader(termiosBytes(te)), binary.LittleEndian, &got); err != nil {
		t.Fatal(err)
	}
	want := unix.Termios{Iflag: 1, Oflag: 2, Cflag: 3, Lflag: 4, Line: 5, Ispeed: 6, Ospeed: 7}
	for i := range want.Cc {
		want.Cc[i] = byte(40 + i)
	}
	if got != want {
		t.Errorf("termios %+v, want %+v", got, want)
	}
}

func TestSockaddrUn(t *testing.T) {
	b, err := sockaddrUn([]byte("\x00abstract"))
	if err != nil || !bytes.Equal(b, append([]byte{unix.AF_UNIX, 0}, "\x00abstract"...)) {
		t.Errorf("abstract: %q %v", b, err)
	}
	if _, err := sockaddrUn(bytes.Repeat([]byte("a"), 109)); !errors.Is(err, ErrBadImages) {
		t.Errorf("too long: %v", err)
	}
	e := &sk_unix.UnixSkEntry{Name: []byte("rel.sock"), NameDir: proto.String("/srv")}
	if p := unixPath(e); p != "/srv/rel.sock" {
		t.Errorf("relative name resolves to %s", p)
	}
}
