package lazypages

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// touchSum is what the victim's "touch" mode prints: one word per page,
// page i at word i%512, in the given order.
func touchSum(src uint64, pages int, rev bool) string {
	h := uint64(fnvInit)
	for i := 0; i < pages; i++ {
		pg := i
		if rev {
			pg = pages - 1 - i
		}
		h ^= word(src + uint64(pg)*pageSize + uint64(pg%512)*8)
		h *= 0x100000001b3
	}
	return sumLine(h)
}

// A process that walks its memory up or down, with and without prefetch,
// from a mapped image (the zero-copy source) and from a plain one.
func TestWalkDirections(t *testing.T) {
	const pages = 8192
	for _, mapped := range []bool{true, false} {
		for _, dir := range []string{"seq", "rev"} {
			for _, prefetch := range []bool{false, true} {
				name := fmt.Sprintf("%s/prefetch=%v/mapped=%v", dir, prefetch, mapped)
				t.Run(name, func(t *testing.T) {
					v := startVictim(t, pages, "touch", dir)
					opts := Options{Prefetch: prefetch}
					if mapped {
						opts.ImagesDir = t.TempDir()
						writeImage(t, opts.ImagesDir, v.pid, allPages(v), nil)
					} else {
						opts.Source = &patternSource{extents: allPages(v)}
					}
					res := runVictim(t, v, opts)
					if got, want := v.expect(t, "SUM"), touchSum(v.addr, pages, dir == "rev"); got != want {
						t.Errorf("hash %s, want %s", got, want)
					}
					if err := v.wait(t, 10*time.Second); err != nil {
						t.Fatal(err)
					}
					r := waitServe(t, res)
					if r.err != nil {
						t.Fatal(r.err)
					}
					st := r.stats
					if st.PagesByFault+st.PagesByPrefetch != pages || st.BytesCopied != pages*pageSize {
						t.Errorf("%d by fault + %d by prefetch, %d bytes, want %d pages", st.PagesByFault, st.PagesByPrefetch, st.BytesCopied, pages)
					}
					if !prefetch && (st.PagesByPrefetch != 0 || st.Faults > pages/faultWindowPages+8) {
						t.Errorf("without prefetch: %d faults, %d pages by prefetch", st.Faults, st.PagesByPrefetch)
					}
					if st.Faults > 0 && (st.FaultLatencyP50 <= 0 || st.FaultLatencyMax < st.FaultLatencyP50) {
						t.Errorf("latencies p50 %v max %v", st.FaultLatencyP50, st.FaultLatencyMax)
					}
				})
			}
		}
	}
}

// rssKiB is the resident size of the mapping of pid that starts at addr.
func rssKiB(t *testing.T, pid int, addr uint64) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	start := strconv.FormatUint(addr, 16) + "-"
	for sc.Scan() {
		l := sc.Text()
		if strings.Contains(l, "-") && !strings.HasSuffix(strings.Fields(l)[0], ":") {
			in = strings.HasPrefix(l, start)
			continue
		}
		if v, ok := strings.CutPrefix(l, "Rss:"); ok && in {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatalf("no mapping at %#x in pid %d", addr, pid)
	return 0
}

// While a restore is still registering processes, prefetch leaves the
// processors to it; Done lets it go.
func TestPrefetchWaitsForDone(t *testing.T) {
	const pages = 4096
	v := startVictim(t, pages, "wait")
	work, res := startDaemon(t, Options{Source: &patternSource{extents: allPages(v)}, Prefetch: true})
	c := dial(t, work)
	v.handOver(t, c)
	v.send(t, "GO") // it runs, but does not touch its memory yet
	time.Sleep(300 * time.Millisecond)
	if kb := rssKiB(t, v.pid, v.addr); kb != 0 {
		t.Errorf("%d KiB prefetched before Done", kb)
	}
	if err := c.Done(); err != nil {
		t.Fatal(err)
	}
	r := waitServe(t, res)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if kb := rssKiB(t, v.pid, v.addr); kb != pages*pageSize/1024 {
		t.Errorf("%d KiB resident after prefetch, want %d", kb, pages*pageSize/1024)
	}
	if r.stats.PagesByPrefetch != pages || r.stats.Faults != 0 {
		t.Errorf("stats %+v", *r.stats)
	}
	v.send(t, "READ")
	if got, want := v.expect(t, "SUM"), sumLine(hashPages(fnvInit, v.addr, 0, pages, nil)); got != want {
		t.Errorf("hash %s, want %s", got, want)
	}
	v.wait(t, 10*time.Second)
}

// MADV_DONTNEED over pages that prefetch is copying at that very moment:
// they must read zero right after the madvise and stay zero. The source
// is slow, so the workers hold runs they claimed for a while before they
// copy them: exactly when the loop must not read the REMOVE event (the
// gate). Without the gate the stale copies land after the kernel's zap.
func TestDontneedDuringPrefetch(t *testing.T) {
	const pages, k = 8192, 64
	v := startVictim(t, pages, "dropping", strconv.Itoa(k))
	src := &patternSource{extents: allPages(v), delay: time.Millisecond}
	res := runVictim(t, v, Options{Source: src, Prefetch: true})
	if bad := v.expect(t, "BAD"); bad != "0" {
		t.Errorf("%s non-zero words read right after MADV_DONTNEED", bad)
	}
	dropped := func(i int) bool { return i%k < k/2 }
	if got, want := v.expect(t, "SUM"), sumLine(hashPages(fnvInit, v.addr, 0, pages, dropped)); got != want {
		t.Errorf("hash %s, want %s (zeros in the dropped halves)", got, want)
	}
	if err := v.wait(t, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	r := waitServe(t, res)
	if r.err != nil {
		t.Fatal(r.err)
	}
	st := r.stats
	t.Logf("%+v", *st)
	// Once all pages are in the process is let go, and later madvise
	// calls make no events.
	if st.Removes == 0 || st.Removes > pages/k {
		t.Errorf("%d REMOVE events, want 1 to %d", st.Removes, pages/k)
	}
	if st.PagesByFault+st.PagesByPrefetch+st.PagesDropped < pages/2 {
		t.Errorf("%d + %d copied, %d dropped: pages lost", st.PagesByFault, st.PagesByPrefetch, st.PagesDropped)
	}
}

// fork, mremap and munmap with prefetch workers running.
func TestEventsDuringPrefetch(t *testing.T) {
	t.Run("fork", func(t *testing.T) {
		const pages = 4096
		v := startVictim(t, pages, "fork")
		res := runVictim(t, v, Options{Source: &patternSource{extents: allPages(v), delay: 200 * time.Microsecond}, Prefetch: true})
		want := sumLine(hashPages(fnvInit, v.addr, 0, pages, nil))
		if got := v.expect(t, "HALF"); got != sumLine(hashPages(fnvInit, v.addr, 0, pages/2, nil)) {
			t.Errorf("half %s", got)
		}
		if got := v.expect(t, "CHILD"); got != want {
			t.Errorf("child %s, want %s", got, want)
		}
		if got := v.expect(t, "PARENT"); got != want {
			t.Errorf("parent %s, want %s", got, want)
		}
		v.wait(t, 10*time.Second)
		if r := waitServe(t, res); r.err != nil || r.stats.Forks != 1 {
			t.Errorf("Serve: %v, %+v", r.err, r.stats)
		}
	})
	t.Run("mremap", func(t *testing.T) {
		const pages = 4096
		v := startVictim(t, pages, "mremap")
		res := runVictim(t, v, Options{Source: &patternSource{extents: allPages(v), delay: 200 * time.Microsecond}, Prefetch: true})
		v.expect(t, "MOVED")
		if got, want := v.expect(t, "SUM"), sumLine(hashPages(fnvInit, v.addr, 0, pages, nil)); got != want {
			t.Errorf("hash %s, want %s", got, want)
		}
		v.wait(t, 10*time.Second)
		r := waitServe(t, res)
		if r.err != nil || r.stats.Remaps != 1 {
			t.Errorf("Serve: %v, %+v", r.err, r.stats)
		}
	})
	t.Run("munmap", func(t *testing.T) {
		const pages = 4096
		v := startVictim(t, pages, "munmap", "1024", "2048")
		res := runVictim(t, v, Options{Source: &patternSource{extents: allPages(v), delay: 200 * time.Microsecond}, Prefetch: true})
		h := hashPages(fnvInit, v.addr, 0, 1024, nil)
		h = hashPages(h, v.addr, 3072, pages, nil)
		if got := v.expect(t, "SUM"); got != sumLine(h) {
			t.Errorf("hash %s, want %s", got, sumLine(h))
		}
		v.wait(t, 10*time.Second)
		r := waitServe(t, res)
		if r.err != nil {
			t.Fatal(r.err)
		}
		st := r.stats
		if st.Unmaps != 1 || st.PagesByFault+st.PagesByPrefetch+st.PagesDropped != pages {
			t.Errorf("%d unmaps, %d + %d copied + %d dropped, want %d", st.Unmaps, st.PagesByFault, st.PagesByPrefetch, st.PagesDropped, pages)
		}
	})
}
