package lazypages

import (
	"strconv"
	"sync"
	"time"

	"github.com/lazyr/lazyr/uffd"
)

// process is one address space the daemon fills: a registered process or
// a child that forked off one (with its own userfaultfd).
//
// Locking. The fault loop owns the process; prefetch workers touch it only
// through mu and gate. mu guards the pending set and everything below it
// in this struct. gate orders the loop's reads of the uffd against the
// workers' copies (see prefetch.go): workers hold it shared for a whole
// claim-copy-clear step, the loop exclusively while it reads messages and
// applies events, and to release the process.
type process struct {
	id     uint64 // daemon-wide, also the guard's key
	pid    int    // 0 while a forked child's pid is not known yet
	srcPid int    // whose pages the page source holds (the dumped pid)
	u      *uffd.FD
	pidfd  int      // -1 when unknown
	conn   *conn    // the hand-off connection that registered it (nil for forks)
	parent *process // for forks: the process it forked from

	// queue holds page faults read but not served yet (from head on):
	// reading to get at events (EAGAIN) must not lose them.
	queue []queuedFault
	head  int
	// reads are the source reads in flight (asynchronous sources only;
	// loop-only, like queue).
	reads []*asyncRead
	// knownChildren are children that are not forks we wait for (they
	// existed at registration, or were matched already).
	knownChildren map[int]bool
	// forkTick is when a child's FORK event was read, in /proc stat
	// starttime units; matchTries counts attempts to find its pid.
	forkTick   uint64
	matchTries int
	// probeAddr is an address inside the lazy ranges, for liveness probes.
	probeAddr uint64

	gate  gate
	gated bool // the loop holds gate (loop-only)
	mu    sync.Mutex
	lazy  *lazySet
	// busy are the runs being copied right now (by a worker, by the loop,
	// or read asynchronously): nobody else starts on them.
	busy []run
	// cursor is where prefetch continues, dir the direction (+1 up, -1
	// down) of recent faults; lastPage is the last faulting page.
	cursor   uint64
	dir      int
	lastPage uint64
	// stallUntil keeps workers off the process after a copy met EAGAIN
	// or ENOENT: an event is on its way, and the loop reads it first.
	stallUntil time.Time
	// Set by workers for the loop (which a notification wakes): the mm
	// is gone; runs the loop must finish itself (ENOENT: see fill).
	workerGone bool
	handback   []run
	done       bool // released: complete or gone
}

type queuedFault struct {
	addr  uint64
	at    time.Time
	again bool // served before (waited for a read that did not do): counted already
}

func (p *process) label() string {
	if p.pid > 0 {
		return "pid " + strconv.Itoa(p.pid)
	}
	return "fork of pid " + strconv.Itoa(p.srcPid) + " (id " + strconv.FormatUint(p.id, 10) + ")"
}

// pending reports how many pages are still to come.
func (p *process) pending() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lazy.pending
}

// push queues a fault read from the uffd.
func (p *process) push(f queuedFault) {
	if p.head == len(p.queue) {
		// Empty: reuse the backing array from its start.
		p.queue, p.head = p.queue[:0], 0
	}
	p.queue = append(p.queue, f)
}

// pop takes the oldest queued fault.
func (p *process) pop() (queuedFault, bool) {
	if p.head == len(p.queue) {
		return queuedFault{}, false
	}
	f := p.queue[p.head]
	p.head++
	return f, true
}

func (p *process) queued() int { return len(p.queue) - p.head }

// Preconditions for the helpers below: p.mu held.

// claim marks r busy.
func (p *process) claim(r run) { p.busy = append(p.busy, r) }

// unclaim ends a claim and marks the first done bytes of r as in.
func (p *process) unclaim(r run, done uint64) {
	if done > 0 {
		p.lazy.clear(r.addr, r.addr+done)
	}
	for i, b := range p.busy {
		if b == r {
			p.busy = append(p.busy[:i], p.busy[i+1:]...)
			break
		}
	}
}

// inBusy reports whether addr is being copied by someone.
func (p *process) inBusy(addr uint64) bool {
	for _, b := range p.busy {
		if b.contains(addr) {
			return true
		}
	}
	return false
}

// nextPrefetch picks the next run for prefetch, in the direction of
// recent faults, and moves the cursor past it.
func (p *process) nextPrefetch(maxPages uint64) (run, bool) {
	var r run
	var ok bool
	if p.dir < 0 {
		if r, ok = p.lazy.prevRun(p.cursor, maxPages, p.busy); ok {
			p.cursor = r.addr
		}
	} else if r, ok = p.lazy.nextRun(p.cursor, maxPages, p.busy); ok {
		p.cursor = r.end()
	}
	return r, ok
}

// noteFault follows the direction of faults: a fault close above (below)
// the previous one means the process walks up (down) its memory, and
// prefetch goes on from the fault's window in that direction.
func (p *process) noteFault(page uint64) {
	const near = 1 << 20
	switch {
	case p.lastPage == 0:
	case page > p.lastPage && page-p.lastPage <= near:
		p.dir = 1
	case page < p.lastPage && p.lastPage-page <= near:
		p.dir = -1
	}
	p.lastPage = page
	w := uint64(faultWindowPages * pageSize)
	if p.dir < 0 {
		p.cursor = page &^ (w - 1)
	} else {
		p.cursor = page&^(w-1) + w
	}
}
