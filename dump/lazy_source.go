package dump

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/sys"
)

// LazySource is the memory of a tree that a lazy dump (Options.ServeLazy) keeps frozen: every page the
// dump found, read from the frozen processes themselves while they stay frozen. Pages of lazy areas are
// only here (their pagemap entries carry PE_LAZY without data); the others are also in the pages images.
//
// Memory is read with process_vm_readv, which needs ptrace access to the process but not the tracer
// thread, so any goroutine may read; areas without read permission are read through /proc/PID/mem, as
// the dump reads them. A LazySource is valid only while ServeLazy runs: afterwards the processes are
// killed or running again. It is safe for concurrent use.
//
// Processes are named by the pid the images record (inside the tree's PID namespace, if it has one of
// its own): the pid a restore and its lazy-pages daemon ask for.
type LazySource struct {
	mu    sync.Mutex
	procs map[int]*lazyProc // by image pid
	order []int

	// deferScan: lazy areas are recorded whole and narrowed after the freeze window (lazy_scan.go);
	// scanned is closed when that is done, with scanErr set if it failed.
	deferScan bool
	scanned   chan struct{}
	scanErr   error
	prio      scanPriority
}

// Extent is a run of pages a LazySource holds: [Addr, Addr+NrPages*4096).
type Extent struct {
	Addr    uint64
	NrPages uint64
}

type lazyProc struct {
	pid  int       // as lazyr sees it: what process_vm_readv and /proc need
	runs []lazyRun // sorted by address, not overlapping
	lazy uint64    // pages left out of the images
	mem  *os.File  // /proc/PID/mem, opened on the first read of an unreadable run
	// narrowed: no run is a whole area waiting for the scan (lazy_scan.go) any more, or none ever was.
	narrowed bool
}

// lazyRun is a run of dumped pages of one process.
type lazyRun struct {
	addr, pages uint64
	lazy        bool // not in the images: PE_LAZY without data
	forced      bool // in an area without read permission
	whole       bool // a whole lazy area, not scanned yet (lazy_scan.go)
}

func (r lazyRun) end() uint64 { return r.addr + r.pages*images.PageSize }

func newLazySource() *LazySource { return &LazySource{procs: map[int]*lazyProc{}} }

// newDeferredLazySource is the source of a lazy dump that scans lazy areas after the freeze (lazy_scan.go).
func newDeferredLazySource() *LazySource {
	s := newLazySource()
	s.deferScan = true
	return s
}

// proc returns the record of the process lazyr sees as pid and the images as vpid, creating it. A nil
// source (not a lazy dump) returns nil.
func (s *LazySource) proc(pid, vpid int) *lazyProc {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.procs[vpid]
	if p == nil {
		p = &lazyProc{pid: pid, narrowed: !s.deferScan}
		s.procs[vpid] = p
		s.order = append(s.order, vpid)
	}
	return p
}

// add records a run the dump found (runs come in increasing address order, per process).
// Precondition: the source is not served yet.
func (p *lazyProc) add(r run, lazy, forced bool) {
	if n := len(p.runs); n > 0 {
		last := &p.runs[n-1]
		if last.end() == r.addr && last.lazy == lazy && last.forced == forced && last.whole == r.whole {
			last.pages += r.pages
			if lazy {
				p.lazy += r.pages
			}
			return
		}
	}
	p.runs = append(p.runs, lazyRun{addr: r.addr, pages: r.pages, lazy: lazy, forced: forced, whole: r.whole})
	if lazy {
		p.lazy += r.pages
	}
}

// Pids lists the processes whose memory the source holds, in dump order (parents first).
func (s *LazySource) Pids() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.order...)
}

// LazyPages is the number of pages of pid that are only here, not in the images (0 if the scan of the
// lazy areas failed).
func (s *LazySource) LazyPages(pid int) uint64 {
	if s.waitScan() != nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.procs[pid]; p != nil {
		return p.lazy
	}
	return 0
}

// Extents lists every dumped run of pid, sorted by address. An unknown pid is an error matching
// ErrNoProcess and unix.ESRCH.
func (s *LazySource) Extents(pid int) ([]Extent, error) {
	if err := s.waitScan(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.procs[pid]
	if p == nil {
		return nil, fmt.Errorf("lazy source: pid %d: %w: %w", pid, ErrNoProcess, unix.ESRCH)
	}
	out := make([]Extent, 0, len(p.runs))
	for _, r := range p.runs {
		if n := len(out); n > 0 && out[n-1].Addr+out[n-1].NrPages*images.PageSize == r.addr {
			out[n-1].NrPages += r.pages
			continue
		}
		out = append(out, Extent{Addr: r.addr, NrPages: r.pages})
	}
	return out, nil
}

// ReadPages fills dst (whole pages) with the memory of pid (an image pid) at addr. If part of the range is not a page
// the dump found, it returns an error matching images.ErrNotInImage (such pages read as zero); dst is
// then undefined.
func (s *LazySource) ReadPages(pid int, addr uint64, dst []byte) error {
	if addr%images.PageSize != 0 || len(dst)%images.PageSize != 0 {
		return fmt.Errorf("lazy source: %d bytes at %#x are not whole pages: %w", len(dst), addr, unix.EINVAL)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.procs[pid]
	if p == nil {
		return fmt.Errorf("lazy source: pid %d: %w: %w", pid, ErrNoProcess, unix.ESRCH)
	}
	i := sort.Search(len(p.runs), func(i int) bool { return p.runs[i].end() > addr })
	// Pages that are in the images too (the destination fetches them with the images) are known exactly
	// from the start; lazy areas only once they are scanned (lazy_scan.go).
	if p.touchesLazy(i, addr+uint64(len(dst))) {
		s.mu.Unlock()
		err := s.waitScan()
		s.mu.Lock()
		if err != nil {
			return err
		}
		i = sort.Search(len(p.runs), func(i int) bool { return p.runs[i].end() > addr })
	}
	var segs [8]sys.Segment
	plain := segs[:0]
	plainOff := 0
	flush := func() error {
		if len(plain) == 0 {
			return nil
		}
		n := 0
		for _, sg := range plain {
			n += sg.Len
		}
		err := sys.ReadRemoteV(p.pid, plain, dst[plainOff:plainOff+n])
		plain = plain[:0]
		if err != nil {
			return fmt.Errorf("lazy source: read memory of %d at %#x: %w", p.pid, addr, err)
		}
		return nil
	}
	off := 0
	for off < len(dst) {
		a := addr + uint64(off)
		if i >= len(p.runs) || p.runs[i].addr > a {
			return fmt.Errorf("lazy source: pid %d page %#x was not dumped: %w", pid, a, images.ErrNotInImage)
		}
		r := p.runs[i]
		n := int(min(r.end()-a, uint64(len(dst)-off)))
		if r.forced {
			if err := flush(); err != nil {
				return err
			}
			if err := p.readForced(a, dst[off:off+n]); err != nil {
				return err
			}
		} else {
			if len(plain) == 0 {
				plainOff = off
			}
			plain = append(plain, sys.Segment{Addr: a, Len: n})
		}
		off += n
		i++
	}
	return flush()
}

// readForced reads an area without read permission through /proc/PID/mem (FOLL_FORCE).
func (p *lazyProc) readForced(addr uint64, dst []byte) error {
	if p.mem == nil {
		f, err := os.Open(fmt.Sprintf("/proc/%d/mem", p.pid))
		if err != nil {
			return fmt.Errorf("lazy source: open memory of %d: %w", p.pid, err)
		}
		p.mem = f
	}
	if _, err := p.mem.ReadAt(dst, int64(addr)); err != nil {
		return fmt.Errorf("lazy source: read memory of %d at %#x: %w", p.pid, addr, err)
	}
	return nil
}

// Close releases the files the source opened, once the scan of the lazy areas has ended.
func (s *LazySource) Close() error {
	s.waitScan()
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, p := range s.procs {
		if p.mem != nil {
			errs = append(errs, p.mem.Close())
			p.mem = nil
		}
	}
	return errors.Join(errs...)
}

// leaves reports whether a lazy dump leaves r's data in the task (nil p: not a lazy dump).
func (p *lazyProc) leaves(r run) bool { return p != nil && r.flags&images.PELazy != 0 }

// leave writes r's pagemap entry without data (PE_LAZY alone) and records r as served from memory.
func (p *lazyProc) leave(w *images.PagemapWriter, r run, forced bool, st *Stats) error {
	if err := w.AddNoData(r.addr, r.pages, images.PELazy); err != nil {
		return fmt.Errorf("write pages: %w", err)
	}
	p.add(r, true, forced)
	st.PagesLazy += r.pages
	return nil
}

// record notes a run whose data went into the images: the source serves it too, so that a destination
// can fetch every page through one protocol.
func (p *lazyProc) record(r run, forced bool) {
	if p != nil {
		p.add(r, false, forced)
	}
}
