package images

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	pipe_data "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"google.golang.org/protobuf/proto"
)

// fuzzNames are the file names fuzz inputs are stored under: one per
// decoding path.
var fuzzNames = []string{
	CoreName(1), MmName(1), PstreeName, InventoryName, StatsDumpName, PipesDataName,
	TCPStreamName(1), GhostFileName(1), PagemapName(1), FilesName, "ipcns-shm-1.img", PagesName(1),
}

// fuzzSeeds writes one valid image per fuzz name and returns their bytes.
func fuzzSeeds(f *testing.F) map[string][]byte {
	d := newDir(f)
	core := filled(&criu_core.CoreEntry{}, 1)
	core.Tc = filled(&criu_core.TaskCoreEntry{}, 2)
	m := filled(&mm.MmEntry{}, 3)
	tcp := filled(&tcp_stream.TcpStreamEntry{}, 4)
	tcp.InqLen, tcp.OutqLen = proto.Uint32(3), proto.Uint32(2)
	writes := []error{
		d.Write(CoreName(1), core),
		d.Write(MmName(1), m, m),
		d.Write(PstreeName, filled(&pstree.PstreeEntry{}, 5)),
		d.Write(InventoryName, filled(&inventory.InventoryEntry{}, 6)),
		d.Write(StatsDumpName, filled(&stats.StatsEntry{}, 7)),
		d.WritePipeData([]PipeData{{PipeID: 1, Data: []byte("data")}, {PipeID: 2}}),
		d.WriteTCPStream(1, tcp, []byte("abc"), []byte("de")),
		d.WriteGhostFile(1, filled(&ghost_file.GhostFileEntry{}, 8), []GhostChunk{{Off: 0, Data: []byte("x")}, {Off: 100, Data: []byte("yz")}}),
		d.Write(FilesName, regFile(1, "/a"), regFile(2, "/b")),
	}
	if w, err := d.CreatePagemap(1, 1); err == nil {
		writes = append(writes, w.Add(0x1000, pagesAt(0x1000, 2), PEPresent), w.AddNoData(0x5000, 3, PELazy), w.Close())
	} else {
		writes = append(writes, err)
	}
	for _, err := range writes {
		if err != nil {
			f.Fatal(err)
		}
	}
	seeds := map[string][]byte{}
	for _, n := range fuzzNames {
		if n == "ipcns-shm-1.img" {
			k, _ := kindOf(n)
			seeds[n], _ = appendHeader(nil, k)
			continue
		}
		seeds[n] = readFile(f, filepath.Join(d.Path(), n))
	}
	return seeds
}

// FuzzDecode feeds random bytes, stored under each image name, to
// DecodeFile and to the typed readers: they must never panic, must report
// errors as ErrCorrupt, and must agree with each other.
func FuzzDecode(f *testing.F) {
	seeds := fuzzSeeds(f)
	for i, n := range fuzzNames {
		f.Add(seeds[n], uint8(i))
		// Also each seed under another name (wrong magic).
		f.Add(seeds[n], uint8(i+1))
	}
	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		name := fuzzNames[int(which)%len(fuzzNames)]
		d := newDir(t)
		path := filepath.Join(d.Path(), name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		img, err := DecodeFile(path)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !strings.Contains(err.Error(), "not supported") {
				t.Fatalf("DecodeFile: error not ErrCorrupt: %v", err)
			}
		} else {
			if len(img.Extra) != len(img.Entries) {
				t.Fatalf("%d extras for %d entries", len(img.Extra), len(img.Entries))
			}
			b, err := json.Marshal(img)
			if err != nil || !json.Valid(b) {
				t.Fatalf("MarshalJSON: %v", err)
			}
		}
		checkTyped := func(entries []proto.Message, err error) {
			t.Helper()
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("typed read: error not ErrCorrupt: %v", err)
				}
				return
			}
			// What the typed reader accepts, DecodeFile decodes the same.
			if img == nil || len(img.Entries) != len(entries) {
				t.Fatalf("typed read got %d entries, DecodeFile %v", len(entries), img)
			}
			for i := range entries {
				if !proto.Equal(entries[i], img.Entries[i]) {
					t.Fatalf("entry %d differs", i)
				}
			}
		}
		switch name {
		case CoreName(1):
			checkTyped(asMessages(Read[criu_core.CoreEntry](d, name)))
		case MmName(1):
			checkTyped(asMessages(Read[mm.MmEntry](d, name)))
		case PstreeName:
			checkTyped(asMessages(Read[pstree.PstreeEntry](d, name)))
		case InventoryName:
			checkTyped(asMessages(Read[inventory.InventoryEntry](d, name)))
		case StatsDumpName:
			checkTyped(asMessages(Read[stats.StatsEntry](d, name)))
		case PipesDataName:
			pipes, err := d.ReadPipeData()
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("ReadPipeData: %v", err)
				}
				break
			}
			if img == nil || len(img.Entries) != len(pipes) {
				t.Fatalf("ReadPipeData got %d pipes, DecodeFile %v", len(pipes), img)
			}
			for i, p := range pipes {
				e := img.Entries[i].(*pipe_data.PipeDataEntry)
				if e.GetPipeId() != p.PipeID || int(e.GetBytes()) != len(p.Data) || img.Extra[i] != countBytes(uint64(len(p.Data))) {
					t.Fatalf("pipe %d: %v vs %d bytes", i, e, len(p.Data))
				}
			}
		case TCPStreamName(1):
			e, in, out, err := d.ReadTCPStream(1)
			if err == nil && (uint32(len(in)) != e.GetInqLen() || uint32(len(out)) != e.GetOutqLen()) {
				t.Fatalf("queues %d+%d for entry %v", len(in), len(out), e)
			}
			if err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("ReadTCPStream: %v", err)
			}
		case GhostFileName(1):
			e, chunks, err := d.ReadGhostFile(1)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("ReadGhostFile: %v", err)
				}
				break
			}
			var end uint64
			for _, c := range chunks {
				if e.GetChunks() && c.Off < end {
					t.Fatalf("overlapping chunks accepted")
				}
				end = c.Off + uint64(len(c.Data))
			}
		case PagemapName(1):
			pm, err := d.ReadPagemap(1)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("ReadPagemap: %v", err)
				}
				break
			}
			if err := pm.Validate(); err != nil {
				t.Fatalf("ReadPagemap returned an invalid pagemap: %v", err)
			}
		case FilesName:
			checkTyped(asMessages(Read[fdinfo.FileEntry](d, name)))
		}
	})
}

func asMessages[PT proto.Message](in []PT, err error) ([]proto.Message, error) {
	out := make([]proto.Message, len(in))
	for i, m := range in {
		out[i] = m
	}
	return out, err
}

// FuzzPagemap decodes random pagemap images. Whatever decodes must be a
// valid pagemap through which every listed page can be read back from a
// pages file of the right size, and every other page reports ErrNotInImage.
func FuzzPagemap(f *testing.F) {
	seeds := fuzzSeeds(f)
	f.Add(seeds[PagemapName(1)])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		pm, err := decodePagemap(newReader(bytes.NewReader(data), int64(len(data)), "pagemap-1.img"))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode: %v", err)
			}
			return
		}
		if err := pm.Validate(); err != nil {
			t.Fatalf("decoded an invalid pagemap: %v", err)
		}
		total := pm.TotalPages()
		if total > 256 {
			return // keep the pages file small
		}
		d := newDir(t)
		if err := os.WriteFile(d.file(PagemapName(1)), data, 0o600); err != nil {
			t.Fatal(err)
		}
		contents := make([]byte, total*PageSize)
		for i := range contents {
			contents[i] = byte(i / PageSize)
		}
		if err := os.WriteFile(d.file(PagesName(pm.PagesID)), contents, 0o600); err != nil {
			t.Fatal(err)
		}
		pm2, err := d.ReadPagemap(1)
		if err != nil {
			t.Fatalf("ReadPagemap of a decodable pagemap with a right-sized pages file: %v", err)
		}
		p, err := d.OpenPages(pm2)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		buf := make([]byte, PageSize)
		for i, e := range pm2.Extents {
			if i > 64 {
				break
			}
			for _, a := range []uint64{e.Vaddr, e.End() - PageSize} {
				if got, ok := pm2.Find(a); !ok || got != e {
					t.Fatalf("Find(0x%x) = %v %v, want %v", a, got, ok, e)
				}
				err := p.ReadAt(buf, a)
				if !e.Present() {
					if !errors.Is(err, ErrNotInImage) {
						t.Fatalf("ReadAt(0x%x) in extent without data: %v", a, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("ReadAt(0x%x): %v", a, err)
				}
				off := e.Offset + int64(a-e.Vaddr)
				if !bytes.Equal(buf, contents[off:off+PageSize]) {
					t.Fatalf("ReadAt(0x%x): wrong page", a)
				}
			}
			if e.Vaddr >= PageSize {
				if _, ok := pm2.Find(e.Vaddr - 1); ok && (i == 0 || pm2.Extents[i-1].End() < e.Vaddr) {
					t.Fatalf("Find(0x%x) found a page in a gap", e.Vaddr-1)
				}
			}
		}
	})
}

// FuzzPagemapWriter drives the writer with random runs and checks the
// result against a page-by-page model.
func FuzzPagemapWriter(f *testing.F) {
	f.Add([]byte{0, 2, 0, 0, 1, 0, 0, 3, 1, 1, 1, 2, 0, 1, 3})
	f.Add([]byte{5, 1, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 3*64 {
			ops = ops[:3*64]
		}
		d := newDir(t)
		w, err := d.CreatePagemap(1, 1)
		if err != nil {
			t.Fatal(err)
		}
		model := map[uint64]uint32{} // vaddr -> flags
		var order []uint64
		vaddr := uint64(0x10000)
		flagSets := []uint32{PEPresent, PEPresent | PELazy, PELazy, PEParent}
		for i := 0; i+2 < len(ops); i += 3 {
			vaddr += uint64(ops[i]%3) * PageSize
			n := int(ops[i+1]%5) + 1
			flags := flagSets[ops[i+2]%4]
			if flags&PEPresent != 0 {
				err = w.Add(vaddr, pagesAt(vaddr, n), flags)
			} else {
				err = w.AddNoData(vaddr, uint64(n), flags)
			}
			if err != nil {
				t.Fatal(err)
			}
			for j := 0; j < n; j++ {
				a := vaddr + uint64(j)*PageSize
				model[a] = flags
				order = append(order, a)
			}
			vaddr += uint64(n) * PageSize
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		pm, err := d.ReadPagemap(1)
		if err != nil {
			t.Fatal(err)
		}
		// Extents are maximal: neighbours differ in flags or are apart.
		for i := 1; i < len(pm.Extents); i++ {
			a, b := pm.Extents[i-1], pm.Extents[i]
			if a.End() == b.Vaddr && a.Flags == b.Flags {
				t.Fatalf("extents %v and %v not merged", a, b)
			}
		}
		var present uint64
		for _, a := range order {
			e, ok := pm.Find(a)
			if !ok || e.Flags != model[a] {
				t.Fatalf("page 0x%x: extent %v %v, want flags 0x%x", a, e, ok, model[a])
			}
			if e.Present() {
				present++
			}
		}
		if present != pm.TotalPages() || present != w.Pages() {
			t.Fatalf("%d present pages, TotalPages %d, Pages %d", present, pm.TotalPages(), w.Pages())
		}
		p, err := d.OpenPages(pm)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		buf := make([]byte, PageSize)
		for _, a := range order {
			err := p.ReadAt(buf, a)
			if model[a]&PEPresent == 0 {
				if !errors.Is(err, ErrNotInImage) {
					t.Fatalf("page 0x%x without data: %v", a, err)
				}
				continue
			}
			if err != nil || !bytes.Equal(buf, pagesAt(a, 1)) {
				t.Fatalf("page 0x%x: %v", a, err)
			}
		}
	})
}
