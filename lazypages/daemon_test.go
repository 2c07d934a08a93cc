package lazypages

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/uffd"
)

// allPages is a source extent covering the victim's region, minus nothing.
func allPages(v *victim) []Extent { return []Extent{{Addr: v.addr, NrPages: uint64(v.pages)}} }

func TestDialWithoutDaemon(t *testing.T) {
	dir := t.TempDir()
	if _, err := Dial(dir); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("Dial with no socket: %v, want ErrNoDaemon", err)
	}
	// A stale socket file nobody listens on.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: SocketPath(dir)}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	if _, err := Dial(dir); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("Dial with a stale socket: %v, want ErrNoDaemon", err)
	}
}

// Faults on 64 MiB, with a hole that was never dumped (must read zero),
// prefetch off: every page arrives through a fault.
func TestFaultsServePattern(t *testing.T) {
	const pages = 16384
	v := startVictim(t, pages, "read")
	hole := func(i int) bool { return i >= 1000 && i < 1100 }
	src := &patternSource{extents: []Extent{
		{Addr: v.addr, NrPages: 1000},
		{Addr: v.addr + 1100*pageSize, NrPages: pages - 1100},
	}}
	dir, res := startDaemon(t, Options{Source: src})
	c := dial(t, dir)
	v.handOver(t, c)
	if err := c.Done(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	v.send(t, "GO")
	if got, want := v.expect(t, "SUM"), sumLine(hashPages(fnvInit, v.addr, 0, pages, hole)); got != want {
		t.Errorf("victim hash %s, want %s", got, want)
	}
	elapsed := time.Since(start)
	if err := v.wait(t, 10*time.Second); err != nil {
		t.Fatalf("victim: %v", err)
	}
	r := waitServe(t, res)
	if r.err != nil {
		t.Fatalf("Serve: %v", r.err)
	}
	st := r.stats
	t.Logf("64 MiB by faults in %v: %+v", elapsed, *st)
	if st.PagesByFault != pages-100 || st.PagesByPrefetch != 0 || st.ZeroPages != 100 {
		t.Errorf("pages by fault %d, by prefetch %d, zero %d", st.PagesByFault, st.PagesByPrefetch, st.ZeroPages)
	}
	// Faults fill 64 KiB each: far fewer faults than pages.
	if st.Faults == 0 || st.Faults > (pages-100)/8+200 {
		t.Errorf("%d faults for %d pages", st.Faults, pages)
	}
	if st.BytesCopied != (pages-100)*pageSize || st.Processes != 1 {
		t.Errorf("bytes %d, processes %d", st.BytesCopied, st.Processes)
	}
	if st.FaultLatencyP50 <= 0 || st.FaultLatencyP99 < st.FaultLatencyP50 || st.FaultLatencyMax < st.FaultLatencyP99 {
		t.Errorf("latencies p50 %v p99 %v max %v", st.FaultLatencyP50, st.FaultLatencyP99, st.FaultLatencyMax)
	}
	if st.AllPagesIn <= 0 {
		t.Errorf("AllPagesIn %v", st.AllPagesIn)
	}
}

// With prefetch on and the victim not touching its memory, every page
// arrives without a single fault, and Serve ends by itself.
func TestPrefetchCompletesWithoutFaults(t *testing.T) {
	const pages = 4096
	v := startVictim(t, pages, "wait")
	dir, res := startDaemon(t, Options{Source: &patternSource{extents: allPages(v)}, Prefetch: true})
	c := dial(t, dir)
	v.handOver(t, c)
	v.send(t, "GO") // the victim runs but waits before reading
	if err := c.Done(); err != nil {
		t.Fatal(err)
	}
	r := waitServe(t, res)
	if r.err != nil {
		t.Fatalf("Serve: %v", r.err)
	}
	st := r.stats
	t.Logf("prefetch: %+v", *st)
	if st.Faults != 0 || st.PagesByFault != 0 || st.PagesByPrefetch != pages {
		t.Errorf("faults %d, by fault %d, by prefetch %d", st.Faults, st.PagesByFault, st.PagesByPrefetch)
	}
	// The daemon and guard are gone; the memory must be complete.
	v.send(t, "READ")
	if got, want := v.expect(t, "SUM"), sumLine(hashPages(fnvInit, v.addr, 0, pages, nil)); got != want {
		t.Errorf("hash %s, want %s", got, want)
	}
	if err := v.wait(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// Faults and prefetch together, with a zero quiet period.
func TestFaultsWithPrefetch(t *testing.T) {
	const pages = 8192
	v := startVictim(t, pages, "read")
	res := runVictim(t, v, Options{Source: &patternSource{extents: allPages(v)}, Prefetch: true})
	if got, want := v.expect(t, "SUM"), sumLine(hashPages(fnvInit, v.addr, 0, pages, nil)); got != want {
		t.Errorf("hash %s, want %s", got, want)
	}
	r := waitServe(t, res)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got := r.stats.PagesByFault + r.stats.PagesByPrefetch; got != pages {
		t.Errorf("%d pages copied, want %d (%+v)", got, pages, *r.stats)
	}
	v.wait(t, 10*time.Second)
}

// A fork after registration: the child gets its own uffd (FORK event) and
// its own copy of what was still missing; both read the dumped memory.
func TestFork(t *testing.T) {
	const pages = 2048
	v := startVictim(t, pages, "fork")
	res := runVictim(t, v, Options{Source: &patternSource{extents: allPages(v)}})
	if got, want := v.expect(t, "HALF"), sumLine(hashPages(fnvInit, v.addr, 0, pages/2, nil)); got != want {
		t.Errorf("parent's first half %s, want %s", got, want)
	}
	want := sumLine(hashPages(fnvInit, v.addr, 0, pages, nil))
	if got := v.expect(t, "CHILD"); got != want {
		t.Errorf("child hash %s, want %s", got, want)
	}
	if got := v.expect(t, "PARENT"); got != want {
		t.Errorf("parent hash %s, want %s", got, want)
	}
	if err := v.wait(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	r := waitServe(t, res)
	if r.err != nil {
		t.Fatal(r.err)
	}
	// The parent faulted in its first half before the fork; the child
	// inherited those pages and faulted in the second half, as did the
	// parent after it.
	if r.stats.Forks != 1 || r.stats.PagesByFault != pages+pages/2 {
		t.Errorf("stats %+v", *r.stats)
	}
}

// The victim moves its lazy area with mremap before touching it: the
// pages must come with it.
func TestMremap(t *testing.T) {
	const pages = 1024
	v := startVictim(t, pages, "mremap")
	res := runVictim(t, v, Options{Source: &patternSource{extents: allPages(v)}})
	var moved uint64
	fmt.Sscanf(v.expect(t, "MOVED"), "%x", &moved)
	if moved == v.addr {
		t.Fatal("not moved")
	}
	// Source addresses are the original ones.
	if got, want := v.expect(t, "SUM"), sumLine(hashPages(fnvInit, v.addr, 0, pages, nil)); got != want {
		t.Errorf("hash at the new place %s, want %s", got, want)
	}
	v.wait(t, 10*time.Second)
	r := waitServe(t, res)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.stats.Remaps != 1 || r.stats.PagesByFault != pages {
		t.Errorf("stats %+v", *r.stats)
	}
}

// MADV_DONTNEED over pages already in and pages still missing: all of
// them read zero afterwards; nothing is refilled from the image.
func TestMadviseDontneed(t *testing.T) {
	const pages = 1024
	const first, n = 448, 128 // straddles the first half the victim reads first
	v := startVictim(t, pages, "dontneed", fmt.Sprint(first), fmt.Sprint(n))
	res := runVictim(t, v, Options{Source: &patternSource{extents: allPages(v)}})
	if got, want := v.expect(t, "HALF"), sumLine(hashPages(fnvInit, v.addr, 0, pages/2, nil)); got != want {
		t.Errorf("first half %s, want %s", got, want)
	}
	dropped := func(i int) bool { return i >= first && i < first+n }
	if got, want := v.expect(t, "SUM"), sumLine(hashPages(fnvInit, v.addr, 0, pages, dropped)); got != want {
		t.Errorf("after DONTNEED %s, want %s (zeros in [%d,%d))", got, want, first, first+n)
	}
	v.wait(t, 10*time.Second)
	r := waitServe(t, res)
	if r.err != nil {
		t.Fatal(r.err)
	}
	st := r.stats
	if st.Removes != 1 || st.ZeroPages != n || st.PagesByFault != pages-(first+n-pages/2) {
		t.Errorf("stats %+v", *st)
	}
}

// munmap of the middle: those pages are dropped, the rest is served, and
// the daemon (with prefetch) still finishes.
func TestMunmapPart(t *testing.T) {
	const pages = 1024
	v := startVictim(t, pages, "munmap", "256", "256")
	res := runVictim(t, v, Options{Source: &patternSource{extents: allPages(v)}, Prefetch: true, QuietPeriod: time.Hour})
	h := hashPages(fnvInit, v.addr, 0, 256, nil)
	h = hashPages(h, v.addr, 512, pages, nil)
	if got := v.expect(t, "SUM"); got != sumLine(h) {
		t.Errorf("hash %s, want %s", got, sumLine(h))
	}
	v.wait(t, 10*time.Second)
	r := waitServe(t, res)
	if r.err != nil {
		t.Fatal(r.err)
	}
	// The quiet period held prefetch back: the unmapped pages were never
	// copied, only dropped.
	if r.stats.Unmaps != 1 || r.stats.PagesDropped != 256 || r.stats.PagesByFault != pages-256 || r.stats.PagesByPrefetch != 0 {
		t.Errorf("stats %+v", *r.stats)
	}
}

// 20 processes, one daemon, all faulting at once.
func TestManyVictims(t *testing.T) {
	const n, pages = 20, 1024
	vs := make([]*victim, n)
	var extents []Extent
	for i := range vs {
		vs[i] = startVictim(t, pages, "read")
		extents = append(extents, allPages(vs[i])...)
	}
	// One source for all: every victim's region (addresses may repeat
	// across processes; the pattern depends on the address only).
	dir, res := startDaemon(t, Options{Source: &patternSource{extents: extents}, Prefetch: true})
	c := dial(t, dir)
	for _, v := range vs {
		v.handOver(t, c)
	}
	c.Done()
	for _, v := range vs {
		v.send(t, "GO")
	}
	for _, v := range vs {
		if got, want := v.expect(t, "SUM"), sumLine(hashPages(fnvInit, v.addr, 0, pages, nil)); got != want {
			t.Errorf("victim %d: hash %s, want %s", v.pid, got, want)
		}
	}
	r := waitServe(t, res)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.stats.Processes != n || r.stats.PagesByFault+r.stats.PagesByPrefetch != n*pages {
		t.Errorf("stats %+v", *r.stats)
	}
	for _, v := range vs {
		if err := v.wait(t, 10*time.Second); err != nil {
			t.Error(err)
		}
	}
}

// A page source that breaks: the victim is killed rather than left with
// holes, and Serve reports the error.
func TestFailingSource(t *testing.T) {
	const pages = 4096
	v := startVictim(t, pages, "read")
	src := &patternSource{extents: allPages(v), failAfter: 5}
	res := runVictim(t, v, Options{Source: src})
	err := v.wait(t, 20*time.Second)
	if !killedBySIGKILL(err) {
		t.Errorf("victim ended with %v, want SIGKILL", err)
	}
	for l := range v.lines {
		if strings.HasPrefix(l, "SUM") {
			t.Errorf("victim finished reading: %q", l)
		}
	}
	r := waitServe(t, res)
	if !errors.Is(r.err, errInjected) {
		t.Errorf("Serve: %v, want the source's error", r.err)
	}
}

// A restore that dies after registering (its connection closes without
// Done) must not leave its processes running.
func TestAbortedRestoreKills(t *testing.T) {
	v := startVictim(t, 64, "read")
	dir, res := startDaemon(t, Options{Source: &patternSource{extents: allPages(v)}})
	c, err := Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	v.handOver(t, c)
	c.Close()
	if err := v.wait(t, 10*time.Second); !killedBySIGKILL(err) {
		t.Errorf("victim: %v, want SIGKILL", err)
	}
	if r := waitServe(t, res); !errors.Is(r.err, ErrAborted) {
		t.Errorf("Serve: %v, want ErrAborted", r.err)
	}
}

// The daemon refuses a uffd without the events it needs, and one that is
// not a uffd at all; the connection stays usable.
func TestRegisterRefused(t *testing.T) {
	dir, res := startDaemon(t, Options{Source: &patternSource{}})
	c := dial(t, dir)
	u, err := uffd.New(unix.O_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, _, err := u.API(uffd.FeatureEventFork); err != nil {
		t.Fatal(err)
	}
	err = c.Register(os.Getpid(), u.Fd(), -1, []Range{{0x10000, pageSize}})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "EVENT_REMAP") {
		t.Errorf("uffd without remap/remove/unmap: %v", err)
	}
	if err := c.Register(os.Getpid(), 0, -1, []Range{{0x10000, pageSize}}); !errors.Is(err, ErrRefused) {
		t.Errorf("stdin as uffd: %v", err)
	}
	if err := c.Done(); err != nil {
		t.Fatal(err)
	}
	if r := waitServe(t, res); r.err != nil || r.stats.Processes != 0 {
		t.Errorf("Serve: %v %+v", r.err, r.stats)
	}
}

// A second daemon on the same work dir is refused; a binary that is not a
// guard is caught before anything is accepted.
func TestStartupChecks(t *testing.T) {
	dir, _ := startDaemon(t, Options{Source: &patternSource{}})
	if _, err := Serve(t.Context(), Options{WorkDir: dir, Source: &patternSource{}}); !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("second daemon: %v", err)
	}
	other := t.TempDir()
	_, err := Serve(t.Context(), Options{WorkDir: other, Source: &patternSource{}, GuardExe: "/bin/true"})
	if !errors.Is(err, ErrGuard) {
		t.Errorf("GuardExe /bin/true: %v", err)
	}
	if _, err := os.Stat(SocketPath(other)); err == nil {
		t.Error("socket created although the guard failed")
	}
}

// startHelperDaemon runs a daemon in a child process (the test binary
// again, see helperDaemon) serving the pattern for [addr, +pages), with
// each read of the source taking delay. It returns the work dir and a
// function that SIGKILLs the daemon.
func startHelperDaemon(t *testing.T, addr uint64, pages int, delay time.Duration) (string, func()) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(),
		helperDaemonEnv+"="+dir,
		fmt.Sprintf("LAZYPAGES_TEST_EXTENT=%x:%d", addr, pages),
		"LAZYPAGES_TEST_DELAY="+delay.String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	kill := func() {
		once.Do(func() {
			cmd.Process.Signal(unix.SIGKILL)
			cmd.Wait()
		})
	}
	t.Cleanup(kill)
	buf := make([]byte, 6)
	if _, err := io.ReadFull(out, buf); err != nil || string(buf) != "READY\n" {
		t.Fatalf("helper daemon: %q %v", buf, err)
	}
	return dir, kill
}

// readProgress consumes "P <i> <word>" lines, checking each word against
// the pattern, until n were seen or the output ends; other lines fail.
func (v *victim) readProgress(t *testing.T, n int) int {
	t.Helper()
	seen := 0
	for seen < n {
		l, ok := <-v.lines
		if !ok {
			break
		}
		var i int
		var w uint64
		if _, err := fmt.Sscanf(l, "P %d %x", &i, &w); err != nil {
			t.Errorf("victim printed %q", l)
			continue
		}
		if want := word(v.addr + uint64(i)*pageSize); w != want {
			t.Fatalf("page %d first word %x, want %x", i, w, want)
		}
		seen++
	}
	return seen
}

// SIGKILL the daemon while the victim is mid-way through its memory: the
// guard must kill the victim; it must never read a zero page.
func TestDaemonKilledMidTransfer(t *testing.T) {
	const pages = 400
	v := startVictim(t, pages, "slow", "2000")
	dir, kill := startHelperDaemon(t, v.addr, pages, time.Millisecond)
	c := dial(t, dir)
	v.handOver(t, c)
	c.Done()
	v.send(t, "GO")
	seen := v.readProgress(t, 50)
	kill()
	if err := v.wait(t, 10*time.Second); !killedBySIGKILL(err) {
		t.Errorf("victim: %v, want killed by SIGKILL", err)
	}
	if seen += v.readProgress(t, pages); seen >= pages {
		t.Errorf("victim read all %d pages", seen)
	}
}

// The same with a forked child doing the reading: the guard learnt the
// child's pid from the daemon and kills it too. With "forkexit" the parent
// exits right after the fork, so the child is reparented and only the
// daemon's fallback search can have found it.
func TestDaemonKilledWithForkedChild(t *testing.T) {
	for _, mode := range []string{"forkslow", "forkexit"} {
		t.Run(mode, func(t *testing.T) {
			const pages = 400
			v := startVictim(t, pages, mode, "2000")
			dir, kill := startHelperDaemon(t, v.addr, pages, time.Millisecond)
			c := dial(t, dir)
			v.handOver(t, c)
			c.Done()
			v.send(t, "GO")
			v.readProgress(t, 1)
			var child int
			fmt.Sscanf(v.expect(t, "CPID"), "%d", &child)
			v.readProgress(t, 30)
			kill()
			err := v.wait(t, 10*time.Second)
			if mode == "forkslow" && !killedBySIGKILL(err) {
				t.Errorf("parent: %v, want killed by SIGKILL", err)
			}
			if mode == "forkexit" && err != nil {
				t.Errorf("parent: %v, want a normal exit", err)
			}
			if seen := v.readProgress(t, pages); seen >= pages-31 {
				t.Errorf("child read all pages")
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
				if err != nil || strings.Contains(string(st), ") Z ") {
					break // gone, or dead and waiting for its reaper
				}
				if time.Now().After(deadline) {
					t.Fatalf("forked child %d still alive: %s", child, st)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// More ranges than fit in one message: the registration continues in
// further messages. One page per range also means one page per fault.
func TestRegisterManyRanges(t *testing.T) {
	const pages = maxRangesPerMsg + 904
	v := startVictim(t, pages, "read")
	dir, res := startDaemon(t, Options{Source: &patternSource{extents: allPages(v)}})
	c := dial(t, dir)
	ranges := make([]Range, pages)
	for i := range ranges {
		// Sent unsorted: the client sorts.
		j := pages - 1 - i
		ranges[i] = Range{Start: v.addr + uint64(j)*pageSize, Len: pageSize}
	}
	if err := c.Register(v.pid, v.u.Fd(), v.pidfd, ranges); err != nil {
		t.Fatal(err)
	}
	v.closeFds()
	c.Done()
	v.send(t, "GO")
	if got, want := v.expect(t, "SUM"), sumLine(hashPages(fnvInit, v.addr, 0, pages, nil)); got != want {
		t.Errorf("hash %s, want %s", got, want)
	}
	v.wait(t, 10*time.Second)
	r := waitServe(t, res)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.stats.Faults != pages || r.stats.PagesByFault != pages {
		t.Errorf("stats %+v", *r.stats)
	}
	if _, err := os.Stat(SocketPath(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}

// A process that exits with pages still pending is dropped (its pidfd
// says so) and Serve still finishes.
func TestProcessExitsEarly(t *testing.T) {
	v := startVictim(t, 256, "wait")
	res := runVictim(t, v, Options{Source: &patternSource{extents: allPages(v)}})
	v.in.Close() // the victim's second read fails: it exits without reading
	if err := v.wait(t, 10*time.Second); err == nil {
		t.Fatal("victim exited 0; expected its error exit")
	}
	r := waitServe(t, res)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.stats.ProcessesGone != 1 || r.stats.PagesByFault != 0 || r.stats.AllPagesIn != 0 {
		t.Errorf("stats %+v", *r.stats)
	}
}

// TestDialOtherDump: a restore whose images are another dump than the daemon's is refused at its hello,
// before it can hand over any process; the same dump (or one that does not say) is welcome.
func TestDialOtherDump(t *testing.T) {
	imgs := t.TempDir()
	d, err := images.Create(imgs)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Write(images.InventoryName, &inventory.InventoryEntry{ImgVersion: proto.Uint32(2), DumpUptime: proto.Uint64(1234)}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	id, err := images.DumpID(imgs)
	if err != nil {
		t.Fatal(err)
	}
	work, _ := startDaemon(t, Options{ImagesDir: imgs, Source: &patternSource{}, Prefetch: true})
	other := append([]byte(nil), id...)
	other[0] ^= 1
	if _, err := DialImages(work, other); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "another dump") {
		t.Errorf("dial with another dump's id: %v, want a refusal naming the other dump", err)
	}
	for _, ok := range [][]byte{id, nil} {
		c, err := DialImages(work, ok)
		if err != nil {
			t.Errorf("dial with id %x: %v", ok, err)
			continue
		}
		c.Close()
	}
}
