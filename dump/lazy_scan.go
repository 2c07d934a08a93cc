package dump

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/procfs"
)

// A lazy dump's downtime is the freeze window, and everything in it that grows with memory makes the
// downtime grow with memory. Finding which pages of the lazy areas hold data is such a thing: a walk of
// every page table entry (PAGEMAP_SCAN: ~11 ms for 2 GiB here, reading /proc/PID/pagemap twice that).
// So a lazy dump does not scan lazy areas while it writes the images: each lazy area is recorded whole
// (pagemap entries with PE_LAZY over the area, a superset of the pages with data), and the scan runs in
// the background from then on, next to writing and serving the images and to the destination's restore,
// which needs the exact pages only when it registers its processes (Extents). Until the scan is done,
// Extents and reads of lazy pages wait for it; the pages that are in the images too are known exactly
// from the start, so the destination fetches the images meanwhile without waiting.
//
// The tree stays frozen until the destination is done, so the scan sees the pages the dump would have
// seen in the window. The images' pagemap keeps the superset: PE_LAZY entries say "served by the page
// server", and the server lists the exact pages (a page outside them reads as zero, as it must: the
// scan found nothing there). Stats.PagesLazy counts the superset too.
//
// An area that smaps showed wholly resident needs no scan at all (whollyResident): it is served whole.
//
// The scan is work for one processor, and while it runs the destination is starting up: with both on
// one machine (a loopback migration) they compete, and the destination's start is the downtime. So the
// scan runs at the lowest priority (nice 19) until someone waits for it: the first waiter raises it
// back to normal.

// defersScan reports whether a dump with this source leaves lazy areas unscanned (nil: not a lazy dump).
func (s *LazySource) defersScan() bool { return s != nil && s.deferScan }

// startScan narrows the lazy areas of every process to their pages with data, in the background.
// Extents, ReadPages and LazyPages wait for it; Close waits for it to end. A nil source does nothing.
// Preconditions: the tree is frozen and every process's memory is recorded; called once, before the
// source serves.
func (s *LazySource) startScan(log *zap.Logger) {
	if !s.defersScan() {
		return
	}
	s.scanned = make(chan struct{})
	go func() {
		// The thread is the goroutine's until it ends (and is then discarded, niceness and all).
		runtime.LockOSThread()
		defer close(s.scanned)
		s.prio.start()
		defer s.prio.end()
		start := time.Now()
		var pages uint64
		for _, vpid := range s.Pids() {
			s.mu.Lock()
			p := s.procs[vpid]
			s.mu.Unlock()
			runs, lazy, err := p.narrow()
			if err != nil {
				s.scanErr = fmt.Errorf("lazy source: process %d: %w", p.pid, err)
				return
			}
			s.mu.Lock()
			p.runs, p.lazy, p.narrowed = runs, lazy, true
			s.mu.Unlock()
			pages += lazy
		}
		log.Debug("lazy areas scanned", zap.Uint64("lazy_pages", pages), zap.Duration("elapsed", time.Since(start)))
	}()
}

// waitScan waits for the scan of the lazy areas, if one runs, and returns its error.
func (s *LazySource) waitScan() error {
	if s.scanned == nil {
		return nil
	}
	select {
	case <-s.scanned:
	default:
		s.prio.raise()
		<-s.scanned
	}
	return s.scanErr
}

// scanPriority lowers the scanning thread's priority and raises it again on demand.
type scanPriority struct {
	mu      sync.Mutex
	tid     int  // the scanning thread, while running
	lowered bool // its nice value is 19
}

// start lowers the priority of the calling thread (locked to its goroutine). Failing to is harmless.
func (sp *scanPriority) start() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.tid = unix.Gettid()
	sp.lowered = unix.Setpriority(unix.PRIO_PROCESS, sp.tid, 19) == nil
}

// raise gives the scanning thread its normal priority back, if it still runs.
func (sp *scanPriority) raise() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.lowered {
		// Raising a priority needs CAP_SYS_NICE; without it the scan finishes at nice 19.
		_ = unix.Setpriority(unix.PRIO_PROCESS, sp.tid, 0)
		sp.lowered = false
	}
}

// end marks the thread gone: its tid may name another thread afterwards.
func (sp *scanPriority) end() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.lowered = false
}

// touchesLazy reports whether runs[i:] has a run below end that is a whole area waiting for the scan.
// Preconditions: s.mu held.
func (p *lazyProc) touchesLazy(i int, end uint64) bool {
	if p.narrowed {
		return false
	}
	for ; i < len(p.runs) && p.runs[i].addr < end; i++ {
		if p.runs[i].whole {
			return true
		}
	}
	return false
}

// whollyResident reports whether every page of m held data when smaps was read (before the freeze,
// or in it: smaps.go). Such an area needs no scan: its pages with data can only have become fewer
// since (an madvise(MADV_DONTNEED) in between), and a page that left reads as zero in the frozen
// process, which is what the destination then gets. Such an area is served whole, with no page-table
// walk in or after the window.
func whollyResident(m procfs.Mapping) bool { return m.Rss > 0 && m.Rss == m.Size() }

// narrow returns p's runs with every whole-area run replaced by the runs of it that hold data, and the
// number of lazy pages then. It reads p.runs without s.mu (nothing changes them until the scan is done).
func (p *lazyProc) narrow() ([]lazyRun, uint64, error) {
	if !slices.ContainsFunc(p.runs, func(r lazyRun) bool { return r.whole }) {
		return p.runs, p.lazy, nil
	}
	sc, err := newPageScanner(p.pid)
	if err != nil {
		return nil, 0, err
	}
	defer sc.close()
	var out []lazyRun
	var lazy uint64
	var found []run
	for _, r := range p.runs {
		if !r.whole {
			out = append(out, r)
			if r.lazy {
				lazy += r.pages
			}
			continue
		}
		if found, _, err = sc.scanArea(r.addr, r.end(), images.PELazy, found[:0]); err != nil {
			return nil, 0, err
		}
		for _, f := range found {
			out = append(out, lazyRun{addr: f.addr, pages: f.pages, lazy: true, forced: r.forced})
			lazy += f.pages
		}
	}
	return out, lazy, nil
}
