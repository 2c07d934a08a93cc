package lazypages

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// asyncSource is an AsyncSource over a patternSource: every read completes
// on a goroutine of its own after delay. Reads of a held pid wait until it
// is released; reads after failAfter fail.
type asyncSource struct {
	*patternSource
	delay     time.Duration
	failAfter int

	// listed, when set, is what Extents says: more than the data.
	listed []Extent

	mu        sync.Mutex
	started   int
	syncCalls int
	held      map[int]chan struct{}
}

func (s *asyncSource) Extents(pid int) ([]Extent, error) {
	if s.listed != nil {
		return s.listed, nil
	}
	return s.patternSource.Extents(pid)
}

// ReadPages counts the synchronous reads the daemon makes.
func (s *asyncSource) ReadPages(pid int, addr uint64, dst []byte) error {
	s.mu.Lock()
	s.syncCalls++
	s.mu.Unlock()
	return s.patternSource.ReadPages(pid, addr, dst)
}

func newAsyncSource(extents []Extent, delay time.Duration) *asyncSource {
	return &asyncSource{patternSource: &patternSource{extents: extents}, delay: delay, held: map[int]chan struct{}{}}
}

func (s *asyncSource) StartRead(pid int, addr uint64, dst []byte, done func(error)) {
	s.mu.Lock()
	s.started++
	n, hold := s.started, s.held[pid]
	s.mu.Unlock()
	go func() {
		if hold != nil {
			<-hold
		}
		time.Sleep(s.delay)
		if s.failAfter > 0 && n > s.failAfter {
			done(errInjected)
			return
		}
		done(s.patternSource.ReadPages(pid, addr, dst))
	}()
}

func (s *asyncSource) hold(pid int) {
	s.mu.Lock()
	s.held[pid] = make(chan struct{})
	s.mu.Unlock()
}

func (s *asyncSource) release(pid int) {
	s.mu.Lock()
	close(s.held[pid])
	delete(s.held, pid)
	s.mu.Unlock()
}

func (s *asyncSource) reads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started
}

// Faults served from a source that answers late, with a hole that must
// read zero; the loop never calls ReadPages for them.
func TestAsyncSourceFaults(t *testing.T) {
	const pages = 4096
	v := startVictim(t, pages, "read")
	hole := func(i int) bool { return i >= 100 && i < 140 }
	src := newAsyncSource([]Extent{{Addr: v.addr, NrPages: 100}, {Addr: v.addr + 140*pageSize, NrPages: pages - 140}}, time.Millisecond)
	res := runVictim(t, v, Options{Source: src})
	if got, want := v.expect(t, "SUM"), sumLine(hashPages(fnvInit, v.addr, 0, pages, hole)); got != want {
		t.Errorf("hash %s, want %s", got, want)
	}
	v.wait(t, 10*time.Second)
	r := waitServe(t, res)
	if r.err != nil {
		t.Fatal(r.err)
	}
	st := r.stats
	if st.PagesByFault != pages-40 || st.ZeroPages != 40 || st.PagesByPrefetch != 0 {
		t.Errorf("stats %+v", *st)
	}
	if src.syncCalls != 0 {
		t.Errorf("%d synchronous ReadPages calls", src.syncCalls)
	}
	// A read per window at most: the 64 KiB run around each fault.
	if n := src.reads(); n > pages/faultWindowPages+4 {
		t.Errorf("%d reads for %d pages", n, pages)
	}
	// Latency includes the source's delay here.
	if st.FaultLatencyP50 < time.Millisecond {
		t.Errorf("fault p50 %v with a 1 ms source", st.FaultLatencyP50)
	}
}

// Several threads fault on the same pages at once: one read serves them
// all.
func TestAsyncSourceCoalesces(t *testing.T) {
	const pages, threads = 2048, 4
	v := startVictim(t, pages, "threads", "4")
	src := newAsyncSource(allPages(v), 2*time.Millisecond)
	res := runVictim(t, v, Options{Source: src})
	want := sumLine(hashPages(fnvInit, v.addr, 0, pages, nil))
	for i := 0; i < threads; i++ {
		if got := v.expect(t, "SUM"); got != want {
			t.Errorf("thread %d: hash %s, want %s", i, got, want)
		}
	}
	v.wait(t, 10*time.Second)
	r := waitServe(t, res)
	if r.err != nil {
		t.Fatal(r.err)
	}
	st := r.stats
	n := src.reads()
	t.Logf("%d faults, %d reads", st.Faults, n)
	if st.PagesByFault != pages {
		t.Errorf("stats %+v", *st)
	}
	if n > 2*pages/faultWindowPages {
		t.Errorf("%d reads for %d windows: faults on pages being read started reads of their own", n, pages/faultWindowPages)
	}
	if st.Faults <= uint64(n) {
		t.Errorf("%d faults, %d reads: nothing was coalesced", st.Faults, n)
	}
}

// A read that does not come back stalls only the process that waits for
// it: the loop goes on serving the others.
func TestAsyncSourceDoesNotBlockLoop(t *testing.T) {
	const pages = 1024
	a := startVictim(t, pages, "read")
	b := startVictim(t, pages, "read")
	src := newAsyncSource(append(allPages(a), allPages(b)...), 0)
	src.hold(a.pid)
	work, res := startDaemon(t, Options{Source: src})
	c := dial(t, work)
	a.handOver(t, c)
	b.handOver(t, c)
	c.Done()
	a.send(t, "GO")
	time.Sleep(50 * time.Millisecond) // a's first read is out, and held
	b.send(t, "GO")
	if got, want := b.expect(t, "SUM"), sumLine(hashPages(fnvInit, b.addr, 0, pages, nil)); got != want {
		t.Errorf("b: hash %s, want %s", got, want)
	}
	select {
	case l := <-a.lines:
		t.Fatalf("a went on while its read was held: %q", l)
	default:
	}
	src.release(a.pid)
	if got, want := a.expect(t, "SUM"), sumLine(hashPages(fnvInit, a.addr, 0, pages, nil)); got != want {
		t.Errorf("a: hash %s, want %s", got, want)
	}
	a.wait(t, 10*time.Second)
	b.wait(t, 10*time.Second)
	if r := waitServe(t, res); r.err != nil {
		t.Fatal(r.err)
	}
}

// Prefetch through an AsyncSource: reads pipelined, no fault needed.
func TestAsyncSourcePrefetch(t *testing.T) {
	for _, mode := range []string{"wait", "read"} {
		t.Run(mode, func(t *testing.T) {
			const pages = 4096
			v := startVictim(t, pages, mode)
			src := newAsyncSource(allPages(v), 500*time.Microsecond)
			work, res := startDaemon(t, Options{Source: src, Prefetch: true})
			c := dial(t, work)
			v.handOver(t, c)
			v.send(t, "GO")
			c.Done()
			var r served
			if mode == "wait" {
				// Everything comes in without a fault.
				if r = waitServe(t, res); r.err != nil {
					t.Fatal(r.err)
				}
				if r.stats.Faults != 0 || r.stats.PagesByPrefetch != pages {
					t.Errorf("stats %+v", *r.stats)
				}
				v.send(t, "READ")
			}
			if got, want := v.expect(t, "SUM"), sumLine(hashPages(fnvInit, v.addr, 0, pages, nil)); got != want {
				t.Errorf("hash %s, want %s", got, want)
			}
			v.wait(t, 10*time.Second)
			if mode != "wait" {
				if r = waitServe(t, res); r.err != nil {
					t.Fatal(r.err)
				}
			}
			if got := r.stats.PagesByFault + r.stats.PagesByPrefetch; got != pages {
				t.Errorf("%d pages copied, want %d", got, pages)
			}
		})
	}
}

// A source read that fails kills the process, as a synchronous one does.
func TestAsyncSourceFails(t *testing.T) {
	const pages = 4096
	v := startVictim(t, pages, "read")
	src := newAsyncSource(allPages(v), 0)
	src.failAfter = 5
	res := runVictim(t, v, Options{Source: src})
	if err := v.wait(t, 20*time.Second); !killedBySIGKILL(err) {
		t.Errorf("victim ended with %v, want SIGKILL", err)
	}
	for l := range v.lines {
		if strings.HasPrefix(l, "SUM") {
			t.Errorf("victim finished reading: %q", l)
		}
	}
	if r := waitServe(t, res); !errors.Is(r.err, errInjected) {
		t.Errorf("Serve: %v, want the source's error", r.err)
	}
}

// Extents lists pages the reads then do not have: they read as zero, and
// the loop still never reads synchronously.
func TestAsyncSourceListedButMissing(t *testing.T) {
	for _, prefetch := range []bool{false, true} {
		t.Run(map[bool]string{false: "faults", true: "prefetch"}[prefetch], func(t *testing.T) {
			const pages = 2048
			v := startVictim(t, pages, "read")
			hole := func(i int) bool { return i >= 100 && i < 140 }
			src := newAsyncSource([]Extent{{Addr: v.addr, NrPages: 100}, {Addr: v.addr + 140*pageSize, NrPages: pages - 140}}, 0)
			src.listed = allPages(v)
			res := runVictim(t, v, Options{Source: src, Prefetch: prefetch})
			if got, want := v.expect(t, "SUM"), sumLine(hashPages(fnvInit, v.addr, 0, pages, hole)); got != want {
				t.Errorf("hash %s, want %s", got, want)
			}
			v.wait(t, 10*time.Second)
			r := waitServe(t, res)
			if r.err != nil {
				t.Fatal(r.err)
			}
			if got := r.stats.PagesByFault + r.stats.PagesByPrefetch; got != pages-40 {
				t.Errorf("%d pages copied, want %d (%+v)", got, pages-40, *r.stats)
			}
			if src.syncCalls != 0 {
				t.Errorf("%d synchronous ReadPages calls", src.syncCalls)
			}
		})
	}
}
