package lazypages

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Prefetch from a synchronous source runs on a small pool of worker
// goroutines (Options.PrefetchWorkers; a fixed pool, not one per process),
// so a fault never waits behind a prefetch copy on the fault loop: the
// kernel lets UFFDIO_COPYs on one uffd run concurrently, and whoever
// fills a page second meets EEXIST. Workers take turns over the processes
// and copy pieces of prefetchPiece from the cursor on, in the direction
// the process's faults go (up or down), skipping runs someone is copying
// already; past the end they wrap around to the rest.
//
// The gate. The kernel orders copies against a process's own address
// space changes: an madvise(MADV_DONTNEED) (mremap, fork, munmap alike)
// first waits for copies in flight, then makes new ones fail with EAGAIN
// until its event has been read, and only then zaps the pages, with
// copies allowed again. A worker copy that starts after that read, from
// a run it claimed before the loop applied the event, lands next to the
// zap and can leave image data where the process must now read zeros
// (TestDontneedDuringPrefetch shows it, reliably, without the gate). So
// each worker step (claim a run, copy it, clear it) holds the process's
// gate shared, and the loop holds it exclusively while it reads messages
// and applies events, and while it copies the pages that just faulted.
// The loop therefore reads a uffd only between worker copies of that
// process: prefetchPiece bounds that wait (Stats ReadWait records it).
// Copies the loop itself makes need no gate: it is the reader.
//
// Workers never read the uffd. A copy that meets EAGAIN (an event is
// queued) or ENOENT (the mapping went away) keeps workers off the process
// until the loop has read it; ESRCH and ENOENT are handed to the loop
// through an eventfd, as are errors and completed processes.
type prefetcher struct {
	d    *daemon
	mu   sync.Mutex
	list []*process // the processes workers serve, in turns
	rr   int
	stop bool
	err  error // the first worker failure, for the loop
	c    counters

	// active is how many workers may copy now (the others wait): one
	// while a restore is still running next to them (see
	// daemon.setRestoring), all of them otherwise.
	active  int
	workers int

	wake chan struct{} // kicks idle workers
	quit chan struct{}
	wg   sync.WaitGroup
}

func newPrefetcher(d *daemon, workers int) *prefetcher {
	pf := &prefetcher{d: d, wake: make(chan struct{}, workers), quit: make(chan struct{}), active: workers, workers: workers}
	for i := range workers {
		pf.wg.Add(1)
		go pf.work(i)
	}
	return pf
}

// setActive lets n workers copy.
func (pf *prefetcher) setActive(n int) {
	pf.mu.Lock()
	n = min(max(n, 0), pf.workers)
	more := n > pf.active
	pf.active = n
	pf.mu.Unlock()
	if more {
		pf.kick()
	}
}

// stopWorkers ends the workers and waits for them; their counters are in
// pf.c afterwards. Safe to call twice.
func (pf *prefetcher) stopWorkers() {
	pf.mu.Lock()
	if pf.stop {
		pf.mu.Unlock()
		pf.wg.Wait()
		return
	}
	pf.stop = true
	close(pf.quit)
	pf.mu.Unlock()
	pf.wg.Wait()
}

func (pf *prefetcher) add(p *process) {
	pf.mu.Lock()
	pf.list = append(pf.list, p)
	pf.mu.Unlock()
	pf.kick()
}

func (pf *prefetcher) remove(p *process) {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	for i, q := range pf.list {
		if q == p {
			pf.list = append(pf.list[:i], pf.list[i+1:]...)
			if pf.rr > i {
				pf.rr--
			}
			return
		}
	}
}

// kick wakes idle workers: there may be work (a new process, events read).
func (pf *prefetcher) kick() {
	for {
		select {
		case pf.wake <- struct{}{}:
		default:
			return
		}
	}
}

func (pf *prefetcher) work(id int) {
	defer pf.wg.Done()
	f := newFiller(pf.d.src, prefetchPiece)
	defer func() {
		pf.mu.Lock()
		pf.c.copied += f.c.copied
		pf.c.existing += f.c.existing
		pf.c.zero += f.c.zero
		pf.mu.Unlock()
	}()
	var timer *time.Timer
	empty := 0 // processes in a row that had nothing to take
	for {
		p, n, wait := pf.next(id)
		if p != nil {
			if pf.step(p, f) {
				empty = 0
				continue
			}
			// Everything p has left is being copied by others: try the
			// next one, and wait a little once all were like that.
			if empty++; empty < n {
				continue
			}
			empty = 0
			wait = idleRetry
		}
		var tc <-chan time.Time
		if wait >= 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			tc = timer.C
		}
		select {
		case <-pf.quit:
			return
		case <-pf.wake:
		case <-tc:
		}
	}
}

// idleRetry is how soon a worker looks again when all that is left is
// being copied by someone else.
const idleRetry = 200 * time.Microsecond

// next returns a process to work on and how many there are, or nil and
// how long to wait before asking again (< 0: until kicked).
func (pf *prefetcher) next(id int) (*process, int, time.Duration) {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	if pf.stop || pf.d.stopping.Load() || id >= pf.active {
		return nil, 0, -1
	}
	now := time.Now()
	wait := time.Duration(-1)
	if q := pf.d.opts.QuietPeriod; q > 0 {
		if left := time.Unix(0, pf.d.lastFault.Load()).Add(q).Sub(now); left > 0 {
			return nil, 0, left
		}
	}
	n := len(pf.list)
	for k := range n {
		i := (pf.rr + k) % n
		p := pf.list[i]
		p.mu.Lock()
		ok := !p.done && p.lazy.pending > 0
		if ok && p.stallUntil.After(now) {
			ok = false
			if left := p.stallUntil.Sub(now); wait < 0 || left < wait {
				wait = left
			}
		}
		p.mu.Unlock()
		if ok {
			pf.rr = (i + 1) % n
			return p, n, 0
		}
	}
	return nil, 0, wait
}

// workerStall is how long workers leave a process alone after a copy met
// EAGAIN or ENOENT, unless the loop reads its uffd sooner.
const workerStall = time.Millisecond

// step copies one piece of p. It returns false when p had nothing left
// that nobody else is copying.
func (pf *prefetcher) step(p *process, f *filler) bool {
	p.gate.enter()
	defer p.gate.leave()
	p.mu.Lock()
	if p.done || p.stallUntil.After(time.Now()) {
		p.mu.Unlock()
		return true
	}
	r, ok := p.nextPrefetch(prefetchPiece / pageSize)
	if !ok {
		p.mu.Unlock()
		return false
	}
	p.claim(r)
	p.mu.Unlock()

	done, errno, err := f.fill(p.u, p.srcPid, r)

	p.mu.Lock()
	p.unclaim(r, done)
	notify := p.lazy.pending == 0
	switch errno {
	case unix.EAGAIN:
		p.stallUntil = time.Now().Add(workerStall)
	case unix.ENOENT:
		p.stallUntil = time.Now().Add(workerStall)
		rest := done / pageSize
		p.handback = append(p.handback, run{addr: r.addr + done, src: r.src + done, npages: r.npages - rest})
		notify = true
	case unix.ESRCH:
		p.workerGone = true
		notify = true
	}
	p.mu.Unlock()
	if err != nil {
		pf.mu.Lock()
		if pf.err == nil {
			pf.err = fmt.Errorf("prefetch into %s: %w", p.label(), err)
		}
		pf.mu.Unlock()
		notify = true
	}
	if notify {
		pf.d.notify()
	}
	return true
}

// takeErr returns a worker failure, once.
func (pf *prefetcher) takeErr() error {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	err := pf.err
	pf.err = nil
	return err
}
