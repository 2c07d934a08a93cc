package images

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	pipe_data "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	"google.golang.org/protobuf/proto"
)

func jsonValue(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("invalid JSON %s: %v", b, err)
	}
	return v
}

// TestDecodeFileMatchesCrit decodes images of every kind with DecodeFile
// and with go-criu's crit, and compares entries and JSON.
func TestDecodeFileMatchesCrit(t *testing.T) {
	d := newDir(t)
	var names []string
	for i := range kinds {
		k := &kinds[i]
		if k.layout != layoutPlain {
			continue
		}
		name := sampleName(k)
		if err := d.Write(name, filled(k.newEntry(), 1), filled(k.newEntry(), 2)); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	if err := d.WritePipeData([]PipeData{{PipeID: 1, Data: []byte("abc")}, {PipeID: 2, Data: pattern(3000, 1)}}); err != nil {
		t.Fatal(err)
	}
	names = append(names, PipesDataName)
	w, err := d.CreatePagemap(9, 9)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(0x400000, pagesAt(0x400000, 3), PEPresent); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	names = append(names, PagemapName(9))

	for _, name := range names {
		path := filepath.Join(d.Path(), name)
		img, err := DecodeFile(path)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		k, _ := kindOf(name)
		var et proto.Message
		if k.newEntry != nil {
			et = k.newEntry()
		}
		// crit without payloads reports their size, as DecodeFile does.
		ci := critDecode(t, path, et, true)
		if img.Magic != ci.Magic || len(img.Entries) != len(ci.Entries) || len(img.Extra) != len(img.Entries) {
			t.Errorf("%s: %s/%d entries, crit %s/%d", name, img.Magic, len(img.Entries), ci.Magic, len(ci.Entries))
			continue
		}
		for i := range img.Entries {
			if !proto.Equal(img.Entries[i], ci.Entries[i].Message) || img.Extra[i] != ci.Entries[i].Extra {
				t.Errorf("%s entry %d: %v %q, crit %v %q", name, i, img.Entries[i], img.Extra[i], ci.Entries[i].Message, ci.Entries[i].Extra)
			}
		}
		ours, err := json.Marshal(img)
		if err != nil {
			t.Errorf("%s: marshal: %v", name, err)
			continue
		}
		theirs, err := json.Marshal(ci)
		if err != nil {
			t.Fatalf("%s: crit marshal: %v", name, err)
		}
		if !reflect.DeepEqual(jsonValue(t, ours), jsonValue(t, theirs)) {
			t.Errorf("%s: JSON differs\nours:  %s\ncrit:  %s", name, ours, theirs)
		}
	}
}

func TestDecodeFileSpecial(t *testing.T) {
	d := newDir(t)
	// Pages: size and page count only.
	w, err := d.CreatePagemap(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(0x1000, pagesAt(0x1000, 5), PEPresent); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	img, err := DecodeFile(filepath.Join(d.Path(), PagesName(1)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(img)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"magic":"PAGES","size":20480,"nr_pages":5}` {
		t.Errorf("pages JSON %s", b)
	}

	// Entry with extra and an entry whose JSON body is empty.
	img = &Image{Magic: "PIPES_DATA", Entries: []proto.Message{
		&pipe_data.PipeDataEntry{PipeId: proto.Uint32(3), Bytes: proto.Uint32(2048)}, &pipe_data.PipeDataEntry{},
	}, Extra: []string{"2.0 KB", `quote"d`}}
	b, err = json.Marshal(img)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"magic":"PIPES_DATA","entries":[{"pipe_id":3,"bytes":2048,"extra":"2.0 KB"},{"extra":"quote\"d"}]}`
	if string(b) != want {
		t.Errorf("JSON\n got %s\nwant %s", b, want)
	}

	// Proto field names, nested messages.
	img = &Image{Magic: "FILES", Entries: []proto.Message{&fdinfo.FileEntry{
		Type: fdinfo.FdTypes_REG.Enum(), Id: proto.Uint32(4),
		Reg: &regfile.RegFileEntry{Id: proto.Uint32(4), Flags: proto.Uint32(0), Pos: proto.Uint64(0), Name: proto.String("/etc/passwd")},
	}}}
	b, err = json.Marshal(img)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"reg":{"id":4,"flags":0,"pos":"0","name":"/etc/passwd"}`) {
		t.Errorf("files JSON %s", b)
	}

	// Ghost file: entry, then chunks with their sizes.
	e := &ghost_file.GhostFileEntry{Uid: proto.Uint32(0), Gid: proto.Uint32(0), Mode: proto.Uint32(0o100644), Size: proto.Uint64(9000)}
	if err := d.WriteGhostFile(0xa, e, []GhostChunk{{Off: 0, Data: pattern(10, 0)}, {Off: 4096, Data: pattern(2048, 0)}}); err != nil {
		t.Fatal(err)
	}
	img, err = DecodeFile(filepath.Join(d.Path(), GhostFileName(0xa)))
	if err != nil {
		t.Fatal(err)
	}
	if img.Magic != "GHOST_FILE" || len(img.Entries) != 3 || img.Extra[1] != "10 B" || img.Extra[2] != "2.0 KB" {
		t.Errorf("ghost: %s %v %q", img.Magic, img.Entries, img.Extra)
	}

	// A renamed image still decodes by its magic.
	if err := d.WritePipeData([]PipeData{{PipeID: 1, Data: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	img, err = DecodeFile(filepath.Join(d.Path(), PipesDataName))
	if err != nil || img.Magic != "PIPES_DATA" || img.Extra[0] != "1 B" {
		t.Errorf("pipes-data: %v %v", img, err)
	}
}

func TestCountBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KB", 1536: "1.5 KB", 1 << 20: "1.0 MB", 5 << 30: "5.0 GB"} {
		if got := countBytes(n); got != want {
			t.Errorf("countBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// File names are bytes: a name that is not UTF-8 is written, read and
// displayed (protojson alone refuses it).
func TestNonUTF8Names(t *testing.T) {
	d := newDir(t)
	bad := "/tmp/\xff\xfename"
	if err := d.Write(FilesName, regFile(1, bad)); err != nil {
		t.Fatal(err)
	}
	got, err := ReadOne[fdinfo.FileEntry](d, FilesName)
	if err != nil || got.GetReg().GetName() != bad {
		t.Fatalf("read back %q, %v", got.GetReg().GetName(), err)
	}
	img, err := DecodeFile(filepath.Join(d.Path(), FilesName))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(img)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"name":"/tmp/\ufffdname"`) && !strings.Contains(string(b), "\"name\":\"/tmp/\ufffdname\"") {
		t.Errorf("JSON %s", b)
	}
	// The decoded entry itself is untouched.
	if img.Entries[0].(*fdinfo.FileEntry).GetReg().GetName() != bad {
		t.Error("display fix-up modified the entry")
	}
}
