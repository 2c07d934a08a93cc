package procfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func findMapping(ms []Mapping, addr uint64) *Mapping {
	for i := range ms {
		if ms[i].Start <= addr && addr < ms[i].End {
			return &ms[i]
		}
	}
	return nil
}

func hasPath(ms []Mapping, p string) bool {
	for _, m := range ms {
		if m.Path == p {
			return true
		}
	}
	return false
}

func TestMapsSelf(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, _ = filepath.EvalSymlinks(exe)
	ms, err := Maps(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{exe, "[stack]", "[vdso]"} {
		if !hasPath(ms, p) {
			t.Errorf("maps of self lack %q", p)
		}
	}
	for i, m := range ms {
		if m.Start >= m.End || m.Start%4096 != 0 || m.End%4096 != 0 {
			t.Errorf("bad range %#x-%#x", m.Start, m.End)
		}
		if i > 0 && ms[i-1].End > m.Start {
			t.Errorf("mappings overlap or are unsorted: %#x > %#x", ms[i-1].End, m.Start)
		}
	}
	// Goroutine stacks live in anonymous Go-heap mappings: rw-, not x.
	var local int
	st := findMapping(ms, uint64(uintptrOf(&local)))
	if st == nil || !st.Read || !st.Write || st.Exec {
		t.Errorf("mapping holding a local variable: %+v", st)
	}
}

func TestMapsChild(t *testing.T) {
	cmd := startSleep(t, "", "")
	exe, err := Exe(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := Maps(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	var text bool
	for _, m := range ms {
		if m.Path == exe && m.Exec && !m.Write {
			text = true
			var st unix.Stat_t
			if err := unix.Stat(exe, &st); err != nil {
				t.Fatal(err)
			}
			if m.Inode != st.Ino || m.Major != unix.Major(st.Dev) || m.Minor != unix.Minor(st.Dev) {
				t.Errorf("text mapping %+v does not match stat ino %d dev %d:%d",
					m, st.Ino, unix.Major(st.Dev), unix.Minor(st.Dev))
			}
		}
	}
	if !text {
		t.Errorf("no executable mapping of %s in %+v", exe, ms)
	}
}

func TestMapsFileAndDeleted(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "a file with spaces")
	if err := os.WriteFile(name, make([]byte, 3*4096), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := unix.Mmap(int(f.Fd()), 4096, 4096, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(b)
	addr := sliceAddr(b)
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}

	check := func(deleted bool) {
		ms, err := Maps(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		m := findMapping(ms, addr)
		if m == nil {
			t.Fatalf("mapping at %#x not found", addr)
		}
		if m.Start != addr || m.Size() != 4096 || m.Offset != 4096 || !m.Read || m.Write || m.Exec ||
			!m.Shared || m.Inode != st.Ino || m.Path != name || m.Deleted != deleted {
			t.Errorf("deleted=%v: got %+v", deleted, *m)
		}
	}
	check(false)
	if err := os.Remove(name); err != nil {
		t.Fatal(err)
	}
	check(true)
}

func TestSmapsSelf(t *testing.T) {
	ps := os.Getpagesize()
	b, err := unix.Mmap(-1, 0, 8*ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(b)
	// No THP: keep the count of resident pages exact.
	if err := unix.Madvise(b, unix.MADV_NOHUGEPAGE); err != nil {
		t.Fatal(err)
	}
	b[0] = 1
	b[3*ps] = 1
	b[5*ps] = 1

	ms, err := Smaps(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	m := findMapping(ms, sliceAddr(b))
	if m == nil {
		t.Fatal("mmap'ed area not in smaps")
	}
	if m.Start != sliceAddr(b) || m.Size() != uint64(8*ps) {
		t.Errorf("area %#x-%#x, want %#x+%d", m.Start, m.End, sliceAddr(b), 8*ps)
	}
	if m.Rss != uint64(3*ps) || m.Anon != uint64(3*ps) {
		t.Errorf("Rss %d Anon %d, want %d", m.Rss, m.Anon, 3*ps)
	}
	for _, f := range []string{"rd", "wr", "mr", "mw", "me", "ac", "nh"} {
		if !m.HasFlag(f) {
			t.Errorf("VmFlags %v lack %q", m.VmFlags, f)
		}
	}
	if m.HasFlag("ex") || m.HasFlag("sh") {
		t.Errorf("VmFlags %v have ex or sh", m.VmFlags)
	}

	// maps and smaps agree on everything both have.
	plain, err := Maps(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	p := findMapping(plain, sliceAddr(b))
	q := *m
	q.VmFlags, q.Rss, q.Anon = nil, 0, 0
	if p == nil || !mappingEqual(*p, q) {
		t.Errorf("maps %+v != smaps %+v", p, q)
	}
	var stack bool
	for _, m := range ms {
		if m.Path == "[stack]" {
			stack = m.HasFlag("gd")
		}
	}
	if !stack {
		t.Error("[stack] lacks gd (grows down)")
	}
}

func mappingEqual(a, b Mapping) bool {
	return a.Start == b.Start && a.End == b.End && a.Read == b.Read && a.Write == b.Write &&
		a.Exec == b.Exec && a.Shared == b.Shared && a.Offset == b.Offset && a.Major == b.Major &&
		a.Minor == b.Minor && a.Inode == b.Inode && a.Path == b.Path && a.Deleted == b.Deleted
}

func TestMapsMissingProcess(t *testing.T) {
	pid := deadPid(t)
	for name, fn := range map[string]func(int) ([]Mapping, error){"maps": Maps, "smaps": Smaps} {
		if _, err := fn(pid); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s of dead pid: %v, want ErrNotExist", name, err)
		}
	}
}

func TestParseMapsLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want Mapping
	}{
		{"7f0000001000-7f0000003000 r-xp 00002000 fd:01 1234                       /usr/lib/a b (deleted)",
			Mapping{Start: 0x7f0000001000, End: 0x7f0000003000, Read: true, Exec: true, Offset: 0x2000,
				Major: 0xfd, Minor: 1, Inode: 1234, Path: "/usr/lib/a b", Deleted: true}},
		{"00400000-00401000 rw-s 00000000 00:00 0 ",
			Mapping{Start: 0x400000, End: 0x401000, Read: true, Write: true, Shared: true}},
		{"ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]",
			Mapping{Start: 0xffffffffff600000, End: 0xffffffffff601000, Exec: true, Path: "[vsyscall]"}},
		{"1000-2000 ---p 00000000 103:1ffff 7 [anon:go: heap]",
			Mapping{Start: 0x1000, End: 0x2000, Major: 0x103, Minor: 0x1ffff, Inode: 7, Path: "[anon:go: heap]"}},
	} {
		got, err := parseMapsLine([]byte(tc.line))
		if err != nil {
			t.Errorf("%q: %v", tc.line, err)
			continue
		}
		if !mappingEqual(got, tc.want) {
			t.Errorf("%q:\n got %+v\nwant %+v", tc.line, got, tc.want)
		}
	}
	for _, bad := range []string{
		"", "1000", "2000-1000 r--p 0 0:0 0", "1000-2000 r--x 0 0:0 0", "1000-2000 r--p zz 0:0 0",
		"1000-2000 r--p 0 00 0", "1000-2000 r--p 0 0:0 -1", "1000-2000 r--p 0 0:0",
		"10000000000000000-10000000000000001 r--p 0 0:0 0",
	} {
		if _, err := parseMapsLine([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: err %v, want ErrMalformed", bad, err)
		}
	}
}

func TestParseSmapsUnknownKeys(t *testing.T) {
	in := `00400000-00401000 r-xp 00000000 08:01 42 /bin/x
Size:                  4 kB
Rss:                   4 kB
Anonymous:             0 kB
BrandNewKey:           17 widgets
THPeligible:    0
VmFlags: rd ex mr mw me zz 
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                 132 kB
Anonymous:           128 kB
VmFlags: rd wr mr mw me gd ac 
`
	ms, err := parseSmaps(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 {
		t.Fatalf("got %d mappings", len(ms))
	}
	if ms[0].Rss != 4096 || ms[0].Anon != 0 || strings.Join(ms[0].VmFlags, ",") != "rd,ex,mr,mw,me,zz" {
		t.Errorf("first: %+v", ms[0])
	}
	if ms[1].Rss != 132<<10 || ms[1].Anon != 128<<10 || !ms[1].HasFlag("gd") || ms[1].Path != "[stack]" {
		t.Errorf("second: %+v", ms[1])
	}
	for _, bad := range []string{"Rss: 4 kB\n", "1000-2000 r--p 0 0:0 0\nRss: x kB\n", "1000-2000 r--p 0 0:0 0\nRss: 4 MB\n"} {
		if _, err := parseSmaps(strings.NewReader(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: err %v, want ErrMalformed", bad, err)
		}
	}
}
