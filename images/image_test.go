package images

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit"
	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	"google.golang.org/protobuf/proto"
)

// critDecode decodes an image with go-criu's own crit library.
func critDecode(t testing.TB, path string, entryType proto.Message, noPayload bool) *crit.CriuImage {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := crit.New(f, nil, "", false, noPayload).Decode(entryType)
	if err != nil {
		t.Fatalf("crit decode %s: %v", filepath.Base(path), err)
	}
	return img
}

// TestWriteReadEveryKind writes three filled entries into every image kind
// with plain entries, reads them back, and decodes them with go-criu's crit.
func TestWriteReadEveryKind(t *testing.T) {
	d := newDir(t)
	for i := range kinds {
		k := &kinds[i]
		if k.layout != layoutPlain {
			continue
		}
		name := sampleName(k)
		t.Run(name, func(t *testing.T) {
			var want []proto.Message
			for seed := range 3 {
				want = append(want, filled(k.newEntry(), seed*100+1))
			}
			if err := d.Write(name, want...); err != nil {
				t.Fatal(err)
			}
			// Read through the generic path with the kind's own type.
			f, size, err := d.openImage(name)
			if err != nil {
				t.Fatal(err)
			}
			r := newReader(f, size, name)
			if err := r.expectHeader(k); err != nil {
				t.Fatal(err)
			}
			for j := 0; !r.atEOF(); j++ {
				got := k.newEntry()
				if err := r.entry(got); err != nil {
					t.Fatal(err)
				}
				if j >= len(want) || !proto.Equal(got, want[j]) {
					t.Fatalf("entry %d: got %v", j, got)
				}
			}
			f.Close()
			if r.entries != len(want) {
				t.Fatalf("read %d entries, want %d", r.entries, len(want))
			}

			// go-criu's crit must decode it to the same entries.
			img := critDecode(t, filepath.Join(d.Path(), name), k.newEntry(), false)
			if img.Magic != k.magic {
				t.Errorf("crit magic %s, want %s", img.Magic, k.magic)
			}
			if len(img.Entries) != len(want) {
				t.Fatalf("crit: %d entries, want %d", len(img.Entries), len(want))
			}
			for j, e := range img.Entries {
				if !proto.Equal(e.Message, want[j]) {
					t.Errorf("crit entry %d differs: %v", j, e.Message)
				}
			}
		})
	}
	noTempFiles(t, d)
}

func TestReadTyped(t *testing.T) {
	d := newDir(t)
	core := filled(&criu_core.CoreEntry{}, 5)
	core.Tc = filled(&criu_core.TaskCoreEntry{}, 6)
	core.Tc.Comm = proto.String("victim")
	if err := d.Write(CoreName(12), core); err != nil {
		t.Fatal(err)
	}
	got, err := ReadOne[criu_core.CoreEntry](d, CoreName(12))
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, core) || got.GetTc().GetComm() != "victim" {
		t.Fatalf("got %v", got)
	}
	all, err := Read[criu_core.CoreEntry](d, CoreName(12))
	if err != nil || len(all) != 1 || !proto.Equal(all[0], core) {
		t.Fatalf("Read: %v %v", all, err)
	}

	// Several entries; ReadOne refuses them.
	var procs []proto.Message
	for pid := uint32(1); pid <= 4; pid++ {
		procs = append(procs, &pstree.PstreeEntry{Pid: proto.Uint32(pid), Ppid: proto.Uint32(pid - 1), Pgid: proto.Uint32(1), Sid: proto.Uint32(1), Threads: []uint32{pid}})
	}
	if err := d.Write(PstreeName, procs...); err != nil {
		t.Fatal(err)
	}
	tree, err := Read[pstree.PstreeEntry](d, PstreeName)
	if err != nil || len(tree) != 4 {
		t.Fatalf("pstree: %d entries, %v", len(tree), err)
	}
	for i, p := range tree {
		if !proto.Equal(p, procs[i]) {
			t.Errorf("pstree %d: %v", i, p)
		}
	}
	if _, err := ReadOne[pstree.PstreeEntry](d, PstreeName); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "4 entries") {
		t.Errorf("ReadOne on 4 entries: %v", err)
	}

	// An empty image is valid and has no entries.
	if err := d.Write(MmName(3)); err != nil {
		t.Fatal(err)
	}
	if got, err := Read[mm.MmEntry](d, MmName(3)); err != nil || len(got) != 0 {
		t.Errorf("empty image: %v %v", got, err)
	}
	if _, err := ReadOne[mm.MmEntry](d, MmName(3)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("ReadOne on empty image: %v", err)
	}
}

func TestWriteErrors(t *testing.T) {
	d := newDir(t)
	core := filled(&criu_core.CoreEntry{}, 1)
	for _, c := range []struct {
		name    string
		entries []proto.Message
		want    string
	}{
		{"nosuch.img", []proto.Message{core}, "unknown image name"},
		{MmName(1), []proto.Message{core}, "holds mm_entry entries, not core_entry"},
		{CoreName(1), []proto.Message{(*criu_core.CoreEntry)(nil)}, "nil entry"},
		{CoreName(1), []proto.Message{nil}, "nil entry"},
		{CoreName(1), []proto.Message{&criu_core.CoreEntry{}}, "required field"},
		{PipesDataName, nil, "use WriteRecords"},
		{PagesName(1), nil, "not supported"},
		{GhostFileName(1), nil, "WriteGhostFile"},
		{PagemapName(1), []proto.Message{core}, "pagemap_head"},
	} {
		err := d.Write(c.name, c.entries...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Write(%s): %v, want error containing %q", c.name, err, c.want)
		}
		if d.Exists(c.name) {
			t.Errorf("Write(%s) failed but left the image", c.name)
		}
	}
	noTempFiles(t, d)

	// Read with a type that is not the image's.
	if err := d.Write(CoreName(1), core); err != nil {
		t.Fatal(err)
	}
	if _, err := Read[mm.MmEntry](d, CoreName(1)); err == nil || !strings.Contains(err.Error(), "holds core_entry") {
		t.Errorf("Read with wrong type: %v", err)
	}
	if _, err := Read[criu_core.CoreEntry](d, "nosuch.img"); err == nil {
		t.Error("Read of unknown name succeeded")
	}
}

func TestWriteReplaces(t *testing.T) {
	d := newDir(t)
	for i := range 3 {
		e := &pstree.PstreeEntry{Pid: proto.Uint32(uint32(10 + i)), Ppid: proto.Uint32(0), Pgid: proto.Uint32(0), Sid: proto.Uint32(0)}
		if err := d.Write(PstreeName, e); err != nil {
			t.Fatal(err)
		}
		got, err := ReadOne[pstree.PstreeEntry](d, PstreeName)
		if err != nil || got.GetPid() != uint32(10+i) {
			t.Fatalf("round %d: %v %v", i, got, err)
		}
	}
	st, err := os.Stat(filepath.Join(d.Path(), PstreeName))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("image mode %v, want 0600", st.Mode().Perm())
	}
	noTempFiles(t, d)
}

func TestMissingImage(t *testing.T) {
	d := newDir(t)
	_, err := Read[criu_core.CoreEntry](d, CoreName(99))
	if !errors.Is(err, ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing image: %v", err)
	}
	if !strings.Contains(err.Error(), "core-99.img") {
		t.Errorf("error does not name the image: %v", err)
	}
	if _, err := d.ReadPagemap(99); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing pagemap: %v", err)
	}
	if _, err := DecodeFile(filepath.Join(d.Path(), CoreName(99))); !errors.Is(err, ErrNotFound) {
		t.Errorf("DecodeFile of missing file: %v", err)
	}
}

// The header words of the three header styles, as CRIU writes them.
func TestHeaders(t *testing.T) {
	d := newDir(t)
	le := func(b []byte, i int) uint32 { return binary.LittleEndian.Uint32(b[4*i:]) }
	const (
		imgCommon  = 0x54564319
		imgService = 0x55105940
	)
	if err := d.Write(InventoryName, &inventory.InventoryEntry{ImgVersion: proto.Uint32(2), FdinfoPerId: proto.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	b := readFile(t, filepath.Join(d.Path(), InventoryName))
	if le(b, 0) != 0x58313116 {
		t.Errorf("inventory starts with 0x%x, want INVENTORY_MAGIC alone", le(b, 0))
	}
	st := &stats.StatsEntry{Dump: &stats.DumpStatsEntry{
		FreezingTime: proto.Uint32(1), FrozenTime: proto.Uint32(2), MemdumpTime: proto.Uint32(3), MemwriteTime: proto.Uint32(4),
		PagesScanned: proto.Uint64(5), PagesSkippedParent: proto.Uint64(6), PagesWritten: proto.Uint64(7), PagesLazy: proto.Uint64(8),
	}}
	if err := d.Write(StatsDumpName, st); err != nil {
		t.Fatal(err)
	}
	b = readFile(t, filepath.Join(d.Path(), StatsDumpName))
	if le(b, 0) != imgService || le(b, 1) != 0x57093306 {
		t.Errorf("stats header 0x%x 0x%x, want IMG_SERVICE STATS", le(b, 0), le(b, 1))
	}
	got, err := ReadOne[stats.StatsEntry](d, StatsDumpName)
	if err != nil || !proto.Equal(got, st) {
		t.Fatalf("stats: %v %v", got, err)
	}
	if err := d.Write(CoreName(1), filled(&criu_core.CoreEntry{}, 1)); err != nil {
		t.Fatal(err)
	}
	b = readFile(t, filepath.Join(d.Path(), CoreName(1)))
	if le(b, 0) != imgCommon || le(b, 1) != 0x55053847 {
		t.Errorf("core header 0x%x 0x%x, want IMG_COMMON CORE", le(b, 0), le(b, 1))
	}
	if n := le(b, 2); int(n) != len(b)-12 {
		t.Errorf("entry size %d, file has %d bytes after the header", n, len(b)-12)
	}
}

// corruptCase writes bytes under an image name and expects Read to fail
// with ErrCorrupt and a message containing want.
func TestCorruptImages(t *testing.T) {
	d := newDir(t)
	core := filled(&criu_core.CoreEntry{}, 3)
	core.Tc = filled(&criu_core.TaskCoreEntry{}, 4)
	if err := d.Write(CoreName(1), core, core); err != nil {
		t.Fatal(err)
	}
	good := readFile(t, filepath.Join(d.Path(), CoreName(1)))
	first := 12 + int(binary.LittleEndian.Uint32(good[8:]))
	put := func(name string, b []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(d.Path(), name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for _, c := range []struct {
		what string
		data []byte
		want string
	}{
		{"empty file", nil, "magic: only 0 bytes left"},
		{"short magic", good[:3], "magic: only 3 bytes left"},
		{"unknown magic", mutate(func(b []byte) []byte { b[0] ^= 0xff; return b }), "unknown magic"},
		{"other image's magic", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[4:], 0x57492820); return b }), "magic MM, want CORE"},
		{"service header", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint32(b, 0x55105940); return b }), "CORE image under IMG_SERVICE"},
		{"header only half", good[:6], "only 2 bytes left"},
		{"truncated size", good[:10], "entry size: only 2 bytes left"},
		{"truncated entry", good[:first-1], "exceeds the"},
		{"second entry truncated", good[:len(good)-5], "exceeds the"},
		{"huge size", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], 0xffffffff); return b }), "entry of 4294967295 bytes exceeds"},
		{"bad protobuf", mutate(func(b []byte) []byte { b[12] = 0xff; b[13] = 0xff; return b }), "entry 0 (core_entry"},
		{"trailing garbage", append(bytes.Clone(good), 1, 2), "only 2 bytes left"},
	} {
		put(CoreName(2), c.data)
		_, err := Read[criu_core.CoreEntry](d, CoreName(2))
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrCorrupt containing %q", c.what, err, c.want)
			continue
		}
		if !strings.Contains(err.Error(), "core-2.img") {
			t.Errorf("%s: error does not name the image: %v", c.what, err)
		}
		if _, err := DecodeFile(filepath.Join(d.Path(), CoreName(2))); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: DecodeFile: %v", c.what, err)
		}
	}

	// An entry missing a required field is corrupt too.
	raw, err := proto.MarshalOptions{AllowPartial: true}.Marshal(&criu_core.CoreEntry{})
	if err != nil {
		t.Fatal(err)
	}
	b := binary.LittleEndian.AppendUint32(bytes.Clone(good[:8]), uint32(len(raw)))
	put(CoreName(3), append(b, raw...))
	if _, err := Read[criu_core.CoreEntry](d, CoreName(3)); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "required field") {
		t.Errorf("missing required field: %v", err)
	}

	// Every truncation either fails with ErrCorrupt or, when it falls on
	// an entry boundary, yields a prefix of the entries.
	for n := 0; n < len(good); n++ {
		put(CoreName(4), good[:n])
		got, err := Read[criu_core.CoreEntry](d, CoreName(4))
		switch {
		case n == 8 || n == first:
			if err != nil || len(got) != map[int]int{8: 0, first: 1}[n] {
				t.Errorf("cut at boundary %d: %d entries, %v", n, len(got), err)
			}
		case !errors.Is(err, ErrCorrupt):
			t.Errorf("cut at %d: %v, want ErrCorrupt", n, err)
		}
	}
}

func TestDirOpenCreate(t *testing.T) {
	base := t.TempDir()
	if _, err := Open(filepath.Join(base, "nope")); !errors.Is(err, ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open missing dir: %v", err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(file); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Open on a file: %v", err)
	}
	if _, err := Create(filepath.Join(file, "sub")); err == nil {
		t.Error("Create under a file succeeded")
	}
	p := filepath.Join(base, "a", "b", "c")
	d, err := Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("created dir: %v %v", st, err)
	}
	if d.Path() != p {
		t.Errorf("Path() = %s", d.Path())
	}
	if d.Exists(PstreeName) {
		t.Error("Exists on empty dir")
	}
	if err := d.Write(PstreeName, &pstree.PstreeEntry{Pid: proto.Uint32(1), Ppid: proto.Uint32(0), Pgid: proto.Uint32(1), Sid: proto.Uint32(1)}); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	if !d.Exists(PstreeName) {
		t.Error("Exists after Write")
	}
	d2, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if got, err := ReadOne[pstree.PstreeEntry](d2, PstreeName); err != nil || got.GetPid() != 1 {
		t.Errorf("read through second Dir: %v %v", got, err)
	}
	if err := d2.Remove(PstreeName); err != nil || d2.Exists(PstreeName) {
		t.Errorf("Remove: %v", err)
	}
	if err := d2.Remove(PstreeName); err != nil {
		t.Errorf("Remove of a missing image: %v", err)
	}
	if err := d2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d2.Sync(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Sync after Close: %v", err)
	}
}

func TestDeferSync(t *testing.T) {
	d, err := CreateWithOptions(filepath.Join(t.TempDir(), "img"), Options{DeferSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	e := &pstree.PstreeEntry{Pid: proto.Uint32(7), Ppid: proto.Uint32(0), Pgid: proto.Uint32(7), Sid: proto.Uint32(7)}
	if err := d.Write(PstreeName, e); err != nil {
		t.Fatal(err)
	}
	w, err := d.CreatePagemap(7, 7)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(0x1000, pagesAt(0x1000, 2), PEPresent); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadOne[pstree.PstreeEntry](d, PstreeName); err != nil || !proto.Equal(got, e) {
		t.Fatalf("%v %v", got, err)
	}
	if pm, err := d.ReadPagemap(7); err != nil || pm.TotalPages() != 2 {
		t.Fatalf("%v %v", pm, err)
	}
	noTempFiles(t, d)
}
