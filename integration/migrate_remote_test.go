package integration

import (
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazyr/lazyr/internal/testutil"
	"github.com/lazyr/lazyr/pagesrv"
)

// restoreLazy runs `lazyr restore --lazy-pages -d` (behind prefix, if any) and returns the restored
// root's pid as lazyr saw it (the pidfile); it is killed when the test ends.
func restoreLazy(t *testing.T, prefix []string, dir, work string) int {
	t.Helper()
	pidfile := filepath.Join(t.TempDir(), "restore.pid")
	lazyr(t, prefix, "restore", "-D", dir, "-W", work, "--lazy-pages", "-d", "--pidfile", pidfile)
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pidfile %q: %v", b, err)
	}
	testutil.KillAtCleanup(t, pid)
	return pid
}

// counterPages is the size of a counter victim's area in pages.
func counterPages(mib int) uint64 { return uint64(mib) << 20 / 4096 }

// TestRemoteLazyRestore: a dump's images served by `lazyr page-server --lazy-pages`; on the other side
// `lazyr lazy-pages --page-server` fetches the images it needs (not the memory) into an empty
// directory, `lazyr restore --lazy-pages` restores from them, and every page the restored counter
// verifies comes over the page-server protocol. The page server exits once the daemon says Done.
func TestRemoteLazyRestore(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "counter"), "64")
	v.WaitOutput(lineRe(`^tick 2\b`), outputTimeout)
	dir := t.TempDir()
	dumpKill(t, v, dir)
	before := v.Output()
	last := lastNumber(t, before, counterTickRe)

	port := freePort(t)
	srv := startBg(t, nil, "page-server", "-D", dir, "--address", "127.0.0.1", "--port", port, "--lazy-pages")
	dst, work := filepath.Join(t.TempDir(), "img"), t.TempDir()
	lazyr(t, nil, "lazy-pages", "--page-server", "--address", "127.0.0.1", "--port", port, "-D", dst, "-W", work, "--daemon")
	// The 64 MiB stay on the server; only what restore fills eagerly (the stack) is local.
	requireFetchedImages(t, dst, v.Pid, counterPages(64), 256)

	start := time.Now()
	pid := restoreLazy(t, nil, dst, work)
	t.Logf("remote lazy restore -d: %v", time.Since(start))
	if pid != v.Pid {
		t.Fatalf("restored as pid %d, want %d", pid, v.Pid)
	}
	waitRestored(t, v, lineRe(`^verified %d$`, last+3))
	st := lazyPagesStats(t, work)
	if got := st.PagesByFault + st.PagesByPrefetch; got < counterPages(64) {
		t.Errorf("the daemon copied %d pages, want at least the %d of the counter's area", got, counterPages(64))
	}
	srv.requireExit(0, 30*time.Second)
	log := testutil.ReadOutput(srv.log)
	if !regexp.MustCompile(`page server finished.*"pages": ([1-9]\d{4,})`).MatchString(log) {
		t.Errorf("page server log does not show the pages it served:\n%s", testutil.Tail(log, 5))
	}
	out := v.Output()
	if !strings.HasPrefix(out, before) {
		t.Fatalf("restored output does not continue the dumped one:\n%s", testutil.Tail(out, 10))
	}
	requireCounterOutput(t, v, out, last+3)
}

// TestRemoteLazyRestoreTLS: with --tls on both sides (mutual authentication), a client whose
// certificate another CA signed and a client without TLS are turned away, the server goes on, and the
// real client restores.
func TestRemoteLazyRestoreTLS(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "counter"), "16")
	v.WaitOutput(lineRe(`^tick 2\b`), outputTimeout)
	dir := t.TempDir()
	dumpKill(t, v, dir)
	last := lastNumber(t, v.Output(), counterTickRe)

	p := newPKI(t, "127.0.0.1")
	port := freePort(t)
	srv := startBg(t, nil, append([]string{"page-server", "-D", dir, "--address", "127.0.0.1", "--port", port, "--lazy-pages"}, p.serverArgs()...)...)
	client := func(tlsArgs ...string) (string, int) {
		args := append([]string{"lazy-pages", "--page-server", "--address", "127.0.0.1", "--port", port,
			"-D", filepath.Join(t.TempDir(), "img"), "-W", t.TempDir()}, tlsArgs...)
		_, stderr, code := lazyrCode(t, nil, args...)
		return stderr, code
	}
	stderr, code := client("--tls", "--tls-cacert", p.ca, "--tls-cert", p.rogueCert, "--tls-key", p.rogueKey)
	requireFailure(t, "lazy-pages with a certificate of another CA", stderr, code, regexp.MustCompile(`(?i)tls|certificate`))
	stderr, code = client()
	requireFailure(t, "lazy-pages without TLS", stderr, code, regexp.MustCompile(`(?i)page server|pagesrv`))

	dst, work := filepath.Join(t.TempDir(), "img"), t.TempDir()
	lazyr(t, nil, append([]string{"lazy-pages", "--page-server", "--address", "127.0.0.1", "--port", port, "-D", dst, "-W", work, "--daemon"}, p.clientArgs()...)...)
	restoreLazy(t, nil, dst, work)
	waitRestored(t, v, lineRe(`^verified %d$`, last+3))
	lazyPagesStats(t, work)
	srv.requireExit(0, 30*time.Second)
	requireCounterOutput(t, v, v.Output(), last+3)
	if log := testutil.ReadOutput(srv.log); !regexp.MustCompile(`(?i)certificate`).MatchString(log) {
		t.Errorf("the server's log does not say why it refused the rogue client:\n%s", testutil.Tail(log, 10))
	}
}

// TestPageServerBadClients: a client that sends garbage and one that sends a truncated message are
// dropped with a clear error in the server's log; the server keeps serving, and a real lazy restore
// from it works afterwards.
func TestPageServerBadClients(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "counter"), "8")
	v.WaitOutput(lineRe(`^tick 2\b`), outputTimeout)
	dir := t.TempDir()
	dumpKill(t, v, dir)
	last := lastNumber(t, v.Output(), counterTickRe)

	port := freePort(t)
	srv := startBg(t, nil, "page-server", "-D", dir, "--address", "127.0.0.1", "--port", port)
	addr := net.JoinHostPort("127.0.0.1", port)

	// Garbage: an HTTP request instead of Hello.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	requireClosedByServer(t, c)

	// Truncated: a proper Hello, then a request cut off in its middle, then the connection ends.
	c, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write(pagesrv.AppendMessage(nil, 1, 0, pagesrv.MsgHello{PageSize: 4096, MaxPages: 1024}))
	var buf []byte
	chunk := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, err := c.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if _, m, _, derr := pagesrv.Decode(buf, 4096); derr == nil {
			if _, ok := m.(pagesrv.MsgHelloAck); !ok {
				t.Fatalf("Hello answered with %T", m)
			}
			break
		}
		if err != nil {
			t.Fatalf("no HelloAck: %v", err)
		}
	}
	msg := pagesrv.AppendMessage(nil, 2, 0, pagesrv.MsgGetExtents{Pid: uint32(v.Pid)})
	c.Write(msg[:len(msg)-2])
	c.Close()

	// The server still serves: a lazy restore from it.
	dst, work := filepath.Join(t.TempDir(), "img"), t.TempDir()
	lazyr(t, nil, "lazy-pages", "--page-server", "--address", "127.0.0.1", "--port", port, "-D", dst, "-W", work, "--daemon")
	restoreLazy(t, nil, dst, work)
	waitRestored(t, v, lineRe(`^verified %d$`, last+3))
	lazyPagesStats(t, work)
	requireCounterOutput(t, v, v.Output(), last+3)

	// Without --lazy-pages the server serves until it is stopped.
	select {
	case <-srv.done:
		t.Fatalf("page server exited (%d) without --lazy-pages", srv.code)
	default:
	}
	srv.signal(syscall.SIGTERM)
	srv.requireExit(0, 10*time.Second)
	log := testutil.ReadOutput(srv.log)
	for _, want := range []error{pagesrv.ErrBadMagic, pagesrv.ErrTruncated} {
		if !strings.Contains(log, want.Error()) {
			t.Errorf("the server's log does not report %q:\n%s", want, testutil.Tail(log, 10))
		}
	}
}

// requireClosedByServer waits for the server to end the connection.
func requireClosedByServer(t *testing.T, c net.Conn) {
	t.Helper()
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server did not drop a client that sent garbage")
	}
}

// TestRemoteImagesDir: which images lazy-pages --page-server uses. A complete image directory copied by
// hand is used as it is (only the memory comes from the server); a directory it fetched itself before
// is fetched again (the source may have run on since), and the restore from it works.
func TestRemoteImagesDir(t *testing.T) {
	testutil.RequireRoot(t)
	counter := testutil.BuildVictim(t, "counter")
	for _, kind := range []string{"copied-by-hand", "fetched-before"} {
		t.Run(kind, func(t *testing.T) {
			v := testutil.StartVictim(t, counter, "8")
			v.WaitOutput(lineRe(`^tick 2\b`), outputTimeout)
			dir := t.TempDir()
			dumpKill(t, v, dir)
			last := lastNumber(t, v.Output(), counterTickRe)
			port := freePort(t)
			srv := startBg(t, nil, "page-server", "-D", dir, "--address", "127.0.0.1", "--port", port)
			dst, work := filepath.Join(t.TempDir(), "img"), t.TempDir()
			lpArgs := []string{"lazy-pages", "--page-server", "--address", "127.0.0.1", "--port", port, "-D", dst, "-W", work}
			wantLog := "images fetched from the page server"
			switch kind {
			case "copied-by-hand":
				if out, err := exec.Command("cp", "-a", dir, dst).CombinedOutput(); err != nil {
					t.Fatalf("cp: %v: %s", err, out)
				}
				wantLog = "using the images in the images directory"
			case "fetched-before":
				// A first daemon fetches, then dies before any restore.
				pidfile := filepath.Join(work, "first.pid")
				lazyr(t, nil, append(lpArgs, "--daemon", "--pidfile", pidfile)...)
				b, err := os.ReadFile(pidfile)
				if err != nil {
					t.Fatal(err)
				}
				first, _ := strconv.Atoi(strings.TrimSpace(string(b)))
				syscall.Kill(first, syscall.SIGKILL)
				if err := testutil.WaitPidGone(first, goneTimeout); err != nil {
					t.Fatal(err)
				}
				os.Remove(filepath.Join(work, "lazy-pages.sock"))
			}
			log := filepath.Join(t.TempDir(), "lp.log")
			if _, stderr, code := testutil.Lazyr(t, append(lpArgs, "--daemon", "-o", log, "-v", "4")...); code != 0 {
				t.Fatalf("lazy-pages: %s\n%s", stderr, logTail(log))
			}
			if l := testutil.ReadOutput(log); !strings.Contains(l, wantLog) {
				t.Fatalf("lazy-pages log lacks %q:\n%s", wantLog, testutil.Tail(l, 10))
			}
			restoreLazy(t, nil, dst, work)
			waitRestored(t, v, lineRe(`^verified %d$`, last+3))
			lazyPagesStats(t, work)
			requireCounterOutput(t, v, v.Output(), last+3)
			srv.signal(syscall.SIGTERM)
			srv.requireExit(0, 10*time.Second)
		})
	}
}

// TestRemoteImagesOtherDump: a daemon given a hand-copied image directory of another dump than the one
// its page server serves (the same program dumped twice: the same layout, other memory) refuses to
// start, saying so, rather than restore processes on the wrong memory.
func TestRemoteImagesOtherDump(t *testing.T) {
	testutil.RequireRoot(t)
	counter := testutil.BuildVictim(t, "counter")
	va, vb := testutil.StartVictim(t, counter, "8"), testutil.StartVictim(t, counter, "8")
	va.WaitOutput(lineRe(`^tick 1\b`), outputTimeout)
	vb.WaitOutput(lineRe(`^tick 1\b`), outputTimeout)
	dirA, dirB := t.TempDir(), t.TempDir()
	dumpKill(t, va, dirA)
	dumpKill(t, vb, dirB)
	port := freePort(t)
	srv := startBg(t, nil, "page-server", "-D", dirA, "--address", "127.0.0.1", "--port", port)
	dst, work := filepath.Join(t.TempDir(), "img"), t.TempDir()
	if out, err := exec.Command("cp", "-a", dirB, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	_, stderr, code := testutil.Lazyr(t, "lazy-pages", "--page-server", "--address", "127.0.0.1", "--port", port,
		"-D", dst, "-W", work, "--daemon")
	if code == 0 {
		t.Fatalf("lazy-pages started on the images of another dump than its page server's")
	}
	if !strings.Contains(stderr, "another dump") {
		t.Errorf("error does not say the images are another dump:\n%s", stderr)
	}
	t.Logf("error: %s", strings.TrimSpace(stderr))
	srv.signal(syscall.SIGTERM)
	srv.requireExit(0, 10*time.Second)
}
