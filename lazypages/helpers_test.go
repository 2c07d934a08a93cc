package lazypages

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lazyr/lazyr/uffd"
	"golang.org/x/sys/unix"
)

// word is the dumped content of the 64-bit word at source address a in
// every test: no page of it is zero, so a zero-filled page never passes.
func word(a uint64) uint64 { return (a ^ 0x5bd1e995) * 0x9E3779B97F4A7C15 }

func fillPattern(dst []byte, addr uint64) {
	for i := 0; i+8 <= len(dst); i += 8 {
		w := word(addr + uint64(i))
		for k := 0; k < 8; k++ {
			dst[i+k] = byte(w >> (8 * k))
		}
	}
}

const fnvInit = 0xcbf29ce484222325

// hashPages is the victim's hash over pages [from, to) of a region whose
// page i holds the pattern of source page src+i, or zeros where zero(i).
func hashPages(h uint64, src uint64, from, to int, zero func(i int) bool) uint64 {
	for i := from; i < to; i++ {
		for off := uint64(0); off < pageSize; off += 8 {
			var w uint64
			if zero == nil || !zero(i) {
				w = word(src + uint64(i)*pageSize + off)
			}
			h ^= w
			h *= 0x100000001b3
		}
	}
	return h
}

func sumLine(h uint64) string { return fmt.Sprintf("%016x", h) }

// patternSource is a PageSource holding the pattern for every page in its
// extents, for any pid. It can be made slow or made to fail.
type patternSource struct {
	mu        sync.Mutex
	extents   []Extent
	delay     time.Duration
	failAfter int // >0: calls after this many fail
	calls     int
	closed    bool
}

var errInjected = errors.New("injected page source failure")

func (s *patternSource) ReadPages(pid int, addr uint64, dst []byte) error {
	s.mu.Lock()
	s.calls++
	calls, failAfter, delay := s.calls, s.failAfter, s.delay
	s.mu.Unlock()
	if failAfter > 0 && calls > failAfter {
		return errInjected
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	for off := uint64(0); off < uint64(len(dst)); off += pageSize {
		a := addr + off
		in := false
		for _, e := range s.extents {
			if a >= e.Addr && a < e.End() {
				in = true
				break
			}
		}
		if !in {
			return fmt.Errorf("%w: page %#x", ErrNotInImage, a)
		}
		fillPattern(dst[off:off+pageSize], a)
	}
	return nil
}

func (s *patternSource) Extents(pid int) ([]Extent, error) { return s.extents, nil }

func (s *patternSource) Close() error {
	s.closed = true
	return nil
}

// victim is a running testdata/victim.c, set up the way restore sets up a
// lazily restored process.
type victim struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	pid   int
	addr  uint64
	pages int
	u     *uffd.FD
	pidfd int
	exit  chan error
}

func startVictim(t testing.TB, pages int, args ...string) *victim {
	t.Helper()
	cmd := exec.Command(victimBin, append([]string{strconv.Itoa(pages)}, args...)...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	v := &victim{cmd: cmd, in: in, lines: make(chan string, 1<<16), pid: cmd.Process.Pid, pages: pages, pidfd: -1, exit: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			v.lines <- sc.Text()
		}
		close(v.lines)
		v.exit <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		v.closeFds()
	})
	var fdnum int
	if _, err := fmt.Sscanf(v.expect(t, "READY"), "%x %d", &v.addr, &fdnum); err != nil {
		t.Fatalf("victim hello: %v", err)
	}
	if v.pidfd, err = unix.PidfdOpen(v.pid, 0); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.PidfdGetfd(v.pidfd, fdnum, 0)
	if err != nil {
		t.Fatalf("pidfd_getfd: %v", err)
	}
	v.u = uffd.FromFd(fd)
	if _, _, err := v.u.API(RequiredFeatures); err != nil {
		t.Fatal(err)
	}
	if _, err := v.u.Register(v.addr, v.size(), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	return v
}

func (v *victim) size() uint64 { return uint64(v.pages) * pageSize }

func (v *victim) closeFds() {
	if v.u != nil {
		v.u.Close()
		v.u = nil
	}
	if v.pidfd >= 0 {
		unix.Close(v.pidfd)
		v.pidfd = -1
	}
}

// handOver registers the victim with the daemon and, like restore, closes
// its own copies of the fds afterwards.
func (v *victim) handOver(t testing.TB, c *Client) {
	t.Helper()
	if err := c.Register(v.pid, v.u.Fd(), v.pidfd, []Range{{v.addr, v.size()}}); err != nil {
		t.Fatalf("Register: %v", err)
	}
	v.closeFds()
}

func (v *victim) send(t testing.TB, line string) {
	t.Helper()
	if _, err := io.WriteString(v.in, line+"\n"); err != nil {
		t.Fatal(err)
	}
}

// expect returns the rest of the next output line, which must start with
// prefix.
func (v *victim) expect(t testing.TB, prefix string) string {
	t.Helper()
	select {
	case l, ok := <-v.lines:
		if !ok {
			t.Fatalf("victim %d ended before %q (%v)", v.pid, prefix, v.wait(t, time.Second))
		}
		rest, found := strings.CutPrefix(l, prefix+" ")
		if !found {
			t.Fatalf("victim %d printed %q, want %s ...", v.pid, l, prefix)
		}
		return rest
	case <-time.After(20 * time.Second):
		t.Fatalf("victim %d: no %q line within 20s", v.pid, prefix)
	}
	return ""
}

func (v *victim) wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-v.exit:
		return err
	case <-time.After(timeout):
		t.Fatalf("victim %d did not exit within %v", v.pid, timeout)
	}
	return nil
}

// killedBySIGKILL reports whether a wait error says so.
func killedBySIGKILL(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

type served struct {
	stats *Stats
	err   error
}

// startDaemon runs Serve in this process and returns once it listens.
func startDaemon(t testing.TB, opts Options) (workDir string, result <-chan served) {
	t.Helper()
	if opts.WorkDir == "" {
		dir, err := os.MkdirTemp("", "lp")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		opts.WorkDir = dir
	}
	ready := make(chan struct{})
	opts.Ready = func() { close(ready) }
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan served, 1)
	go func() {
		st, err := Serve(ctx, opts)
		ch <- served{st, err}
	}()
	out := make(chan served, 1)
	var once sync.Once
	var res served
	get := func() served {
		once.Do(func() { res = <-ch })
		return res
	}
	t.Cleanup(func() {
		cancel()
		get()
	})
	select {
	case <-ready:
	case r := <-ch:
		t.Fatalf("Serve ended before listening: %v", r.err)
	case <-time.After(20 * time.Second):
		t.Fatal("Serve not ready within 20s")
	}
	go func() { out <- get() }()
	return opts.WorkDir, out
}

func waitServe(t testing.TB, ch <-chan served) served {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return within 30s")
	}
	return served{}
}

// runVictim serves v with a daemon of opts: v is handed over, the restore says Done, and v is told to go.
func runVictim(t *testing.T, v *victim, opts Options) <-chan served {
	t.Helper()
	work, res := startDaemon(t, opts)
	c := dial(t, work)
	v.handOver(t, c)
	c.Done()
	v.send(t, "GO")
	return res
}

func dial(t testing.TB, workDir string) *Client {
	t.Helper()
	c, err := Dial(workDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// helperDaemonEnv makes the test binary run a daemon (helperDaemon) in a
// separate process, so a test can SIGKILL it.
const helperDaemonEnv = "LAZYPAGES_TEST_DAEMON"

// helperDaemon serves LAZYPAGES_TEST_EXTENT ("addr:pages", hex addr) with
// a pattern source whose reads take LAZYPAGES_TEST_DELAY each.
func helperDaemon() int {
	var addr, pages uint64
	if _, err := fmt.Sscanf(os.Getenv("LAZYPAGES_TEST_EXTENT"), "%x:%d", &addr, &pages); err != nil {
		fmt.Fprintln(os.Stderr, "helper daemon:", err)
		return 2
	}
	delay, _ := time.ParseDuration(os.Getenv("LAZYPAGES_TEST_DELAY"))
	src := &patternSource{extents: []Extent{{Addr: addr, NrPages: pages}}, delay: delay}
	_, err := Serve(context.Background(), Options{
		WorkDir: os.Getenv(helperDaemonEnv), Source: src,
		Ready: func() { fmt.Println("READY"); os.Stdout.Sync() },
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper daemon:", err)
		return 1
	}
	return 0
}
