package pagesrv

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestFetchFiles(t *testing.T) {
	srcDir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	big := make([]byte, 3*MaxFileChunk+12345) // several chunks, odd tail
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	want := map[string][]byte{
		"core-1.img":  []byte("core image bytes"),
		"pages-1.img": big,
		"empty.img":   nil,
	}
	for name, data := range want {
		if err := os.WriteFile(filepath.Join(srcDir, name), data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(srcDir, "core-1.img"), 0o600)
	os.WriteFile(filepath.Join(srcDir, "secret"), []byte("hidden"), 0o600)
	os.Mkdir(filepath.Join(srcDir, "sub"), 0o755)
	os.Symlink("/etc/passwd", filepath.Join(srcDir, "link.img"))
	if err := unix.Mkfifo(filepath.Join(srcDir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}

	ts := startServer(t, ServerOptions{Source: newFakeSource(testExtents()), Files: srcDir,
		SkipFile: func(name string) bool { return name == "secret" }})
	c := dialT(t, ts.port, ClientOptions{})

	files, err := c.ListFiles()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
		if f.Size != uint64(len(want[f.Name])) {
			t.Errorf("%s: size %d, want %d", f.Name, f.Size, len(want[f.Name]))
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"core-1.img", "empty.img", "pages-1.img"}) {
		t.Fatalf("listed %v", names)
	}

	dstDir := t.TempDir()
	if err := c.FetchFiles(dstDir); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dstDir)
	if len(ents) != len(want) {
		t.Fatalf("destination holds %d entries, want %d", len(ents), len(want))
	}
	for name, data := range want {
		got, err := os.ReadFile(filepath.Join(dstDir, name))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: %v, %d bytes, want %d", name, err, len(got), len(data))
		}
		st, _ := os.Stat(filepath.Join(dstDir, name))
		sst, _ := os.Stat(filepath.Join(srcDir, name))
		if st.Mode().Perm() != sst.Mode().Perm() {
			t.Errorf("%s: mode %v, want %v", name, st.Mode().Perm(), sst.Mode().Perm())
		}
	}

	// Files that are not served regular files are refused with the errno.
	for name, errno := range map[string]unix.Errno{
		"link.img": unix.ELOOP, "missing": unix.ENOENT, "secret": unix.ENOENT, "fifo": unix.ENOENT, "sub": unix.ENOENT,
	} {
		err := c.FetchFile(dstDir, FileInfo{Name: name, Mode: 0o600})
		var re *RemoteError
		if !errors.As(err, &re) || re.Code != CodeNotFound || !errors.Is(err, errno) {
			t.Errorf("%s: %v, want not found with %v", name, err, errno)
		}
	}
	if err := c.FetchFile(dstDir, FileInfo{Name: "../x"}); !errors.Is(err, ErrBadName) {
		t.Errorf("bad name: %v", err)
	}
	if ents, _ := os.ReadDir(dstDir); len(ents) != len(want) {
		t.Errorf("failed fetches left files behind: %d entries", len(ents))
	}
	// The session still serves pages.
	if err := c.ReadPages(200, 0x10000, make([]byte, pg(1))); err != nil {
		t.Fatal(err)
	}
	if st := ts.Stats(); st.Files != uint64(len(want)) {
		t.Errorf("server counted %d files", st.Files)
	}
}

func TestNoFilesServed(t *testing.T) {
	ts := startServer(t, ServerOptions{Source: newFakeSource(testExtents())})
	c := dialT(t, ts.port, ClientOptions{})
	files, err := c.ListFiles()
	if err != nil || len(files) != 0 {
		t.Fatalf("%v %v", files, err)
	}
	if err := c.FetchFile(t.TempDir(), FileInfo{Name: "core-1.img"}); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("got %v", err)
	}
}

// TestManyFilesListed: a listing larger than one FileList message arrives
// in FlagMore chunks.
func TestManyFilesListed(t *testing.T) {
	dir := t.TempDir()
	const n = 600 // 600 * ~120 bytes > 64 KiB
	for i := range n {
		name := string(bytes.Repeat([]byte{'a' + byte(i%26)}, 100)) + "-" + string(rune('0'+i/100)) + string(rune('0'+i/10%10)) + string(rune('0'+i%10))
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ts := startServer(t, ServerOptions{Source: newFakeSource(nil), Files: dir})
	c := dialT(t, ts.port, ClientOptions{})
	files, err := c.ListFiles()
	if err != nil || len(files) != n {
		t.Fatalf("%d files, %v", len(files), err)
	}
}
