package pagesrv

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
)

// closeLog collects OnClose reports.
type closeLog struct {
	mu  sync.Mutex
	got []ClientSummary
	ch  chan ClientSummary
}

func newCloseLog() *closeLog { return &closeLog{ch: make(chan ClientSummary, 16)} }

func (l *closeLog) add(cs ClientSummary) {
	l.mu.Lock()
	l.got = append(l.got, cs)
	l.mu.Unlock()
	l.ch <- cs
}

func (l *closeLog) next(t *testing.T) ClientSummary {
	t.Helper()
	select {
	case cs := <-l.ch:
		return cs
	case <-time.After(5 * time.Second):
		t.Fatal("no OnClose report")
		return ClientSummary{}
	}
}

// TestOnClose: OnClose tells a restoring client that left without Done from
// one that finished and from one the server dropped for garbage.
func TestOnClose(t *testing.T) {
	src := newFakeSource(testExtents())
	cl := newCloseLog()
	ts := startServer(t, ServerOptions{Source: src, OnClose: cl.add})

	// Reads pages, then closes without Done: a destination that gave up.
	c := dialT(t, ts.port, ClientOptions{})
	if err := c.ReadPages(200, 0x10000, make([]byte, pg(1))); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if cs := cl.next(t); !cs.Pages || cs.Done || cs.Err != nil {
		t.Fatalf("client without Done: %+v", cs)
	}

	// Garbage instead of Hello: dropped with an error, never asked for pages.
	r := dialRaw(t, ts.port)
	r.Write(bytes.Repeat([]byte{0xAB}, HeaderSize))
	r.expectEOF(t)
	if cs := cl.next(t); cs.Pages || cs.Done || !errors.Is(cs.Err, ErrBadMagic) {
		t.Fatalf("garbage client: %+v", cs)
	}

	// Reads extents, says Done, closes.
	c = dialT(t, ts.port, ClientOptions{})
	if _, err := c.Extents(100); err != nil {
		t.Fatal(err)
	}
	if err := c.Done(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if cs := cl.next(t); !cs.Pages || !cs.Done || cs.Err != nil {
		t.Fatalf("finished client: %+v", cs)
	}

	// Serve closing the rest is not reported.
	c = dialT(t, ts.port, ClientOptions{})
	if err := c.ReadPages(200, 0x10000, make([]byte, pg(1))); err != nil {
		t.Fatal(err)
	}
	ts.stop(t)
	select {
	case cs := <-cl.ch:
		t.Fatalf("OnClose for a connection Serve closed: %+v", cs)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestExitWhenDoneIgnoresIdleClients: a client that never asked for pages
// does not keep an ExitWhenDone server (a migration source) alive.
func TestExitWhenDoneIgnoresIdleClients(t *testing.T) {
	srv, err := NewServer(ServerOptions{Address: "127.0.0.1", Source: newFakeSource(testExtents()), ExitWhenDone: true})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	defer srv.Close()
	port := srv.Addr().(*net.TCPAddr).Port
	idle := dialT(t, port, ClientOptions{})
	if _, err := idle.ListFiles(); err != nil { // files only: not restoring from us
		t.Fatal(err)
	}
	worker := dialT(t, port, ClientOptions{})
	if err := worker.ReadPages(100, base, make([]byte, pg(4))); err != nil {
		t.Fatal(err)
	}
	if err := worker.Done(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an idle client kept the server from exiting after Done")
	}
	// The idle client notices that the server went away.
	select {
	case <-idle.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("idle client did not notice the server closing")
	}
	if err := idle.Err(); !errors.Is(err, ErrConnLost) {
		t.Fatalf("idle client error %v, want ErrConnLost", err)
	}
}

// TestClientLost: Lost is closed and Err set when the server goes away, and
// after Close.
func TestClientLost(t *testing.T) {
	ts := startServer(t, ServerOptions{Source: newFakeSource(testExtents())})
	c := dialT(t, ts.port, ClientOptions{})
	select {
	case <-c.Lost():
		t.Fatal("Lost closed on a working client")
	default:
	}
	if c.Err() != nil {
		t.Fatalf("Err %v on a working client", c.Err())
	}
	ts.stop(t)
	select {
	case <-c.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("Lost not closed after the server stopped")
	}
	if !errors.Is(c.Err(), ErrConnLost) {
		t.Fatalf("Err %v, want ErrConnLost", c.Err())
	}

	ts2 := startServer(t, ServerOptions{Source: newFakeSource(testExtents())})
	c2 := dialT(t, ts2.port, ClientOptions{})
	c2.Close()
	<-c2.Lost()
	if !errors.Is(c2.Err(), ErrClosed) {
		t.Fatalf("Err after Close %v, want ErrClosed", c2.Err())
	}
}

// writeMigrationImages writes an image directory like a dump: pid 7 with
// lazy runs (present, as a plain dump writes them), a stack-like run that is
// not lazy, and a run only in the parent image; a shared memory pagemap with
// its own pages file; another image; and the inventory.
func writeMigrationImages(t *testing.T) (dir string, want map[uint64][]byte) {
	t.Helper()
	root := t.TempDir()
	pdir, dir := filepath.Join(root, "parent"), filepath.Join(root, "img")
	lazyA, lazyB, stack, old, shm := pagesOf(1, 3), pagesOf(2, 2), pagesOf(3, 1), pagesOf(4, 2), pagesOf(5, 2)
	pd, err := images.Create(pdir)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := pd.CreatePagemap(7, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(pw.Add(base+pg(40), old, images.PEPresent|images.PELazy), pw.Close()); err != nil {
		t.Fatal(err)
	}
	pd.Close()

	d, err := images.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	w, err := d.CreatePagemap(7, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(
		w.Add(base, lazyA, images.PEPresent|images.PELazy),
		w.Add(base+pg(3), stack, images.PEPresent), // touches the lazy run, other flags
		w.Add(base+pg(10), lazyB, images.PEPresent|images.PELazy),
		w.AddNoData(base+pg(40), 2, images.PEParent|images.PELazy),
		w.Close()); err != nil {
		t.Fatal(err)
	}
	// Shared memory: pagemap-shmem-N.img with pages-2.img, fetched as is.
	sw, err := d.CreatePagemap(99, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(sw.Add(0, shm, 0), sw.Close()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, images.PagemapName(99)), filepath.Join(dir, images.PagemapShmemName(1234))); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "core-7.img"), []byte("not really a core image"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Write(images.InventoryName, &inventory.InventoryEntry{ImgVersion: proto.Uint32(2)}); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(pdir, filepath.Join(dir, "parent")); err != nil {
		t.Fatal(err)
	}
	want = map[uint64][]byte{}
	for i := range 3 {
		want[base+pg(i)] = lazyA[pg(i):pg(i+1)]
	}
	want[base+pg(3)] = stack
	for i := range 2 {
		want[base+pg(10+i)] = lazyB[pg(i):pg(i+1)]
		want[base+pg(40+i)] = old[pg(i):pg(i+1)]
	}
	return dir, want
}

func TestFetchImages(t *testing.T) {
	srcDir, want := writeMigrationImages(t)
	src, err := NewImageSource(srcDir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.(interface{ Close() error }).Close()
	ts := startServer(t, ServerOptions{Source: src, Files: srcDir})
	c := dialT(t, ts.port, ClientOptions{})
	dst := filepath.Join(t.TempDir(), "fetched")
	st, err := c.FetchImages(dst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pagemaps != 1 || st.Pages != 1 || st.LazyPages != 7 {
		t.Errorf("stats %+v: want 1 pagemap, 1 page fetched, 7 lazy", st)
	}
	// Everything but the process pages came as is; no scratch files remain.
	ents, err := os.ReadDir(dst)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	wantNames := []string{FetchedMark, "core-7.img", "inventory.img", "pagemap-7.img", "pagemap-shmem-1234.img", "pages-1.img", "pages-2.img"}
	if !slices.Equal(names, wantNames) {
		t.Fatalf("fetched %v, want %v", names, wantNames)
	}
	for _, n := range []string{"core-7.img", "inventory.img", "pagemap-shmem-1234.img", "pages-2.img"} {
		a, _ := os.ReadFile(filepath.Join(srcDir, n))
		b, _ := os.ReadFile(filepath.Join(dst, n))
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs from the server's", n)
		}
	}
	d, err := images.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pm, err := d.ReadPagemap(7) // checks that the pages file holds exactly the present pages
	if err != nil {
		t.Fatal(err)
	}
	wantExt := []images.Extent{
		{Vaddr: base, NrPages: 3, Flags: images.PELazy, Offset: -1},
		{Vaddr: base + pg(3), NrPages: 1, Flags: images.PEPresent, Offset: 0},
		{Vaddr: base + pg(10), NrPages: 2, Flags: images.PELazy, Offset: -1},
		{Vaddr: base + pg(40), NrPages: 2, Flags: images.PELazy, Offset: -1},
	}
	if !slices.Equal(pm.Extents, wantExt) {
		t.Fatalf("rebuilt pagemap %+v, want %+v", pm.Extents, wantExt)
	}
	pages, err := d.OpenPages(pm)
	if err != nil {
		t.Fatal(err)
	}
	defer pages.Close()
	got := make([]byte, pageSize)
	if err := pages.ReadAt(got, base+pg(3)); err != nil || !bytes.Equal(got, want[base+pg(3)]) {
		t.Fatalf("the eagerly restored page: %v, equal %v", err, bytes.Equal(got, want[base+pg(3)]))
	}
	// The lazy pages stay on the server, which still has every one.
	for addr, data := range want {
		if err := c.ReadPages(7, addr, got); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("page %#x from the server: %v", addr, err)
		}
	}
}

func TestFetchImagesRefusesNonImages(t *testing.T) {
	srcDir := t.TempDir()
	os.WriteFile(filepath.Join(srcDir, "core-1.img"), []byte("x"), 0o600)
	ts := startServer(t, ServerOptions{Source: newFakeSource(nil), Files: srcDir})
	c := dialT(t, ts.port, ClientOptions{})
	dst := t.TempDir()
	if _, err := c.FetchImages(dst); !errors.Is(err, images.ErrNotFound) {
		t.Fatalf("FetchImages of a directory without inventory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dst, images.InventoryName)); err == nil {
		t.Fatal("an inventory appeared")
	}
}

// FuzzDecodeRawPagemap: a pagemap from a server is untrusted; decoding
// never panics and what it accepts is a valid pagemap.
func FuzzDecodeRawPagemap(f *testing.F) {
	dir := f.TempDir()
	d, err := images.Create(dir)
	if err != nil {
		f.Fatal(err)
	}
	w, _ := d.CreatePagemap(1, 1)
	w.Add(0x10000, make([]byte, 2*images.PageSize), images.PEPresent|images.PELazy)
	w.AddNoData(0x40000, 3, images.PELazy)
	w.Close()
	d.Close()
	seed, err := os.ReadFile(filepath.Join(dir, images.PagemapName(1)))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(seed[:len(seed)-3])
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "pagemap-1.img")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		pm, err := decodeRawPagemap(path)
		if err != nil {
			return
		}
		if err := pm.Validate(); err != nil {
			t.Fatalf("accepted an invalid pagemap: %v", err)
		}
	})
}

// TestGoFunc: reads completed through callbacks, many in flight, each with the right pages; a bad
// request and the calls a dying connection leaves are completed too, exactly once.
func TestGoFunc(t *testing.T) {
	src := newFakeSource(testExtents())
	ts := startServer(t, ServerOptions{Source: src})
	c := dialT(t, ts.port, ClientOptions{})
	const n = 64
	var mu sync.Mutex
	got := map[uint64]error{}
	var wg sync.WaitGroup
	wg.Add(n)
	for i := range n {
		addr := base + pg(1000+i*32)
		c.GoFunc(100, addr, make([]byte, pg(32)), func(call *Call) {
			if call.Err == nil {
				checkPages(t, src, 100, call.Addr, call.Dst)
			}
			mu.Lock()
			got[call.Addr] = call.Err
			mu.Unlock()
			wg.Done()
		})
	}
	wg.Wait()
	if len(got) != n {
		t.Fatalf("%d calls completed, want %d", len(got), n)
	}
	for addr, err := range got {
		if err != nil {
			t.Fatalf("read at %#x: %v", addr, err)
		}
	}
	var bad error
	c.GoFunc(100, base+1, make([]byte, pg(1)), func(call *Call) { bad = call.Err }) // unaligned: at once
	if !errors.Is(bad, ErrBadRequest) {
		t.Fatalf("unaligned read: %v", bad)
	}

	// Calls pending when the connection breaks fail, each once.
	block := make(chan struct{})
	src.mu.Lock()
	src.onRead = func(int, uint64, int) { <-block }
	src.mu.Unlock()
	var calls atomic.Int32
	errs := make(chan error, 4)
	for range 4 {
		c.GoFunc(100, base, make([]byte, pg(1)), func(call *Call) { calls.Add(1); errs <- call.Err })
	}
	time.Sleep(50 * time.Millisecond)
	c.Close()
	for range 4 {
		if err := <-errs; !errors.Is(err, ErrClosed) {
			t.Errorf("pending call after Close: %v", err)
		}
	}
	close(block)
	time.Sleep(50 * time.Millisecond)
	if n := calls.Load(); n != 4 {
		t.Fatalf("callbacks ran %d times for 4 calls", n)
	}
}

// TestFetchImagesFailure: a file the server can no longer give fails the fetch, and the directory is
// not marked complete (a stale inventory is gone, none is fetched), so nothing restores from it.
func TestFetchImagesFailure(t *testing.T) {
	srcDir, _ := writeMigrationImages(t)
	src, err := NewImageSource(srcDir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.(interface{ Close() error }).Close()
	var asked atomic.Int32
	ts := startServer(t, ServerOptions{Source: src, Files: srcDir, SkipFile: func(name string) bool {
		// Listed (first question), gone when fetched (the next).
		return name == "core-7.img" && asked.Add(1) > 1
	}})
	c := dialT(t, ts.port, ClientOptions{})
	dst := t.TempDir()
	if err := os.WriteFile(filepath.Join(dst, images.InventoryName), []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.FetchImages(dst); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("FetchImages with a file gone: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dst, images.InventoryName)); err == nil {
		t.Fatal("an incomplete fetch left an inventory")
	}
	if _, err := os.Stat(filepath.Join(dst, FetchedMark)); err != nil {
		t.Fatalf("no fetch mark: %v", err)
	}
}
