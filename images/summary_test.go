package images

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit"
	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pipe"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	sk_unix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"google.golang.org/protobuf/proto"
)

func regFile(id uint32, name string) *fdinfo.FileEntry {
	reg := filled(&regfile.RegFileEntry{}, 0)
	reg.Id, reg.Name = proto.Uint32(id), proto.String(name)
	return &fdinfo.FileEntry{Type: fdinfo.FdTypes_REG.Enum(), Id: proto.Uint32(id), Reg: reg}
}

// writeDump writes a small two-process dump the way lazyr's dump will.
func writeDump(t *testing.T, d *Dir) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(d.Write(PstreeName,
		&pstree.PstreeEntry{Pid: proto.Uint32(100), Ppid: proto.Uint32(0), Pgid: proto.Uint32(100), Sid: proto.Uint32(1), Threads: []uint32{100, 101}},
		&pstree.PstreeEntry{Pid: proto.Uint32(200), Ppid: proto.Uint32(100), Pgid: proto.Uint32(100), Sid: proto.Uint32(1), Threads: []uint32{200}},
	))
	for pid, comm := range map[int]string{100: "parent", 200: "child"} {
		core := &criu_core.CoreEntry{Mtype: criu_core.CoreEntry_X86_64.Enum(), Tc: filled(&criu_core.TaskCoreEntry{}, 0)}
		core.Tc.TaskState = proto.Uint32(1)
		core.Tc.Comm = proto.String(comm)
		must(d.Write(CoreName(pid), core))
		ids := filled(&criu_core.TaskKobjIdsEntry{}, 0)
		ids.FilesId = proto.Uint32(uint32(pid / 100))
		must(d.Write(IDsName(pid), ids))
		must(d.Write(FsName(pid), &fs.FsEntry{CwdId: proto.Uint32(20), RootId: proto.Uint32(21)}))
	}
	vm := func(start, end uint64) *vma.VmaEntry {
		v := filled(&vma.VmaEntry{}, 0)
		v.Start, v.End = proto.Uint64(start), proto.Uint64(end)
		return v
	}
	m := filled(&mm.MmEntry{}, 0)
	m.Vmas = []*vma.VmaEntry{vm(0x400000, 0x401000), vm(0x7f0000000000, 0x7f0000010000)}
	must(d.Write(MmName(100), m))

	w, err := d.CreatePagemap(100, 1)
	must(err)
	must(w.Add(0x400000, pagesAt(0x400000, 1), PEPresent))
	must(w.Add(0x7f0000000000, pagesAt(0x7f0000000000, 2), PEPresent|PELazy))
	must(w.AddNoData(0x7f0000002000, 14, PELazy))
	must(w.Close())

	fdi := func(fd, id uint32, typ fdinfo.FdTypes) *fdinfo.FdinfoEntry {
		return &fdinfo.FdinfoEntry{Id: proto.Uint32(id), Flags: proto.Uint32(0), Type: typ.Enum(), Fd: proto.Uint32(fd)}
	}
	must(d.Write(FdinfoName(1), fdi(0, 10, fdinfo.FdTypes_REG), fdi(1, 11, fdinfo.FdTypes_PIPE), fdi(3, 12, fdinfo.FdTypes_UNIXSK)))
	must(d.Write(FdinfoName(2), fdi(0, 10, fdinfo.FdTypes_REG)))

	p := filled(&pipe.PipeEntry{}, 0)
	p.Id, p.PipeId = proto.Uint32(11), proto.Uint32(555)
	usk := filled(&sk_unix.UnixSkEntry{}, 0)
	usk.Id, usk.Name = proto.Uint32(12), []byte("\x00abstract")
	must(d.Write(FilesName,
		regFile(10, "/dev/null"),
		&fdinfo.FileEntry{Type: fdinfo.FdTypes_PIPE.Enum(), Id: proto.Uint32(11), Pipe: p},
		&fdinfo.FileEntry{Type: fdinfo.FdTypes_UNIXSK.Enum(), Id: proto.Uint32(12), Usk: usk},
		regFile(20, "/root/work\n"),
		regFile(21, "/"),
	))
}

func TestSummarize(t *testing.T) {
	d := newDir(t)
	writeDump(t, d)
	s, err := Summarize(d)
	if err != nil {
		t.Fatal(err)
	}
	if s.Dir != d.Path() || len(s.Processes) != 2 {
		t.Fatalf("summary %+v", s)
	}
	p, c := s.Processes[0], s.Processes[1]
	if p.PID != 100 || p.PPID != 0 || p.Threads != 2 || p.Comm != "parent" || p.State != "alive" {
		t.Errorf("parent %+v", p)
	}
	if p.VMAs != 2 || p.VMABytes != 0x1000+0x10000 || p.DumpedPages != 3 || p.DumpedBytes != 3*PageSize || p.LazyPages != 16 {
		t.Errorf("parent memory %+v", p)
	}
	wantFds := []FdSummary{{0, "REG", "/dev/null"}, {1, "PIPE", "pipe:[555]"}, {3, "UNIXSK", "@abstract"}}
	if len(p.Fds) != len(wantFds) {
		t.Fatalf("parent fds %+v", p.Fds)
	}
	for i := range wantFds {
		if p.Fds[i] != wantFds[i] {
			t.Errorf("fd %d: %+v, want %+v", i, p.Fds[i], wantFds[i])
		}
	}
	if p.Cwd != "/root/work\n" || p.Root != "/" {
		t.Errorf("cwd %q root %q", p.Cwd, p.Root)
	}
	// The child has no mm or pagemap image: those parts stay empty.
	if c.PID != 200 || c.PPID != 100 || c.Comm != "child" || c.VMAs != 0 || c.DumpedPages != 0 || len(c.Fds) != 1 {
		t.Errorf("child %+v", c)
	}

	// go-criu's explorer reads the same directory the same way.
	cr := crit.New(nil, nil, d.Path(), false, false)
	ps, err := cr.ExplorePs()
	if err != nil {
		t.Fatal(err)
	}
	if ps.PID != 100 || ps.Comm != "parent" || len(ps.Children) != 1 || ps.Children[0].Comm != "child" {
		t.Errorf("crit ps tree %+v", ps)
	}
	fds, err := cr.ExploreFds()
	if err != nil {
		t.Fatal(err)
	}
	if len(fds) != 2 || fds[0].PId != 100 || len(fds[0].Files) != len(wantFds)+2 {
		t.Fatalf("crit fds %+v", fds)
	}
	for i, f := range fds[0].Files[:len(wantFds)] {
		if f.Type != wantFds[i].Type || f.Fd != []string{"0", "1", "3"}[i] {
			t.Errorf("crit fd %d: %+v", i, f)
		}
	}
	if fds[0].Files[0].Path != "/dev/null" || fds[0].Files[3].Path != "/root/work\n" {
		t.Errorf("crit paths %+v %+v", fds[0].Files[0], fds[0].Files[3])
	}

	var out bytes.Buffer
	if err := s.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{"parent", "child", "/dev/null", "pipe:[555]", "@abstract", `"/root/work\n"`, "12.0 KB", "68.0 KB", "files of 100 (parent)"} {
		if !strings.Contains(text, want) {
			t.Errorf("text summary lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "/root/work\n") {
		t.Error("control character printed raw")
	}
}

func TestSummarizeErrors(t *testing.T) {
	d := newDir(t)
	if _, err := Summarize(d); err == nil {
		t.Error("Summarize of an empty dir succeeded")
	}
	writeDump(t, d)
	// A corrupt per-process image is an error, not a silent gap.
	if err := os.WriteFile(d.file(CoreName(200)), []byte{1, 2, 3}, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Summarize(d); err == nil || !strings.Contains(err.Error(), "core-200.img") {
		t.Errorf("corrupt core: %v", err)
	}
}
