package lazypages

import (
	"fmt"
	"time"

	"github.com/lazyr/lazyr/uffd"
	"golang.org/x/sys/unix"
)

// serveUffd reads what the process's uffd has (a few batches at most, so
// other processes get their turn) and serves it in two phases: the
// faulting pages first, with the gate still held, then the runs around
// them. Keeping prefetch workers paused while the faulting pages go in
// frees a processor for the threads those copies wake: on a small machine
// the woken thread would otherwise preempt the loop in the middle of its
// work (the kernel wakes it onto the loop's processor when the other one
// is busy copying).
func (d *daemon) serveUffd(p *process) {
	for round := 0; round < 4 && !p.done && d.fatal == nil; round++ {
		d.lockGate(p)
		n, _ := d.readMsgs(p)
		d.servePages(p)
		d.unlockGate(p)
		d.serveHoods()
		if n < len(d.msgs) {
			break
		}
	}
	d.checkComplete(p)
}

// lockGate takes p's gate for the loop, waiting for workers' copies of p
// to end (see prefetch.go).
func (d *daemon) lockGate(p *process) {
	if w := p.gate.lock(); w > 0 {
		d.readWait.add(w)
	}
	p.gated = true
}

func (d *daemon) unlockGate(p *process) {
	if p.gated {
		p.gated = false
		p.gate.unlock()
	}
}

// readMsgs reads one batch of messages: events are applied at once, in the
// order the kernel reported them; faults are queued. It returns how many
// messages came and how many of them were events.
//
// The read happens with the gate held exclusively: no prefetch copy is in
// flight while the kernel hands over an event. That matters because
// reading an event lets the process go on (an madvise then zaps its
// pages): a worker copy of pages claimed before the event was applied
// could otherwise land after the zap and put image data where the process
// must now read zeros.
func (d *daemon) readMsgs(p *process) (msgs, events int) {
	if p.done {
		return 0, 0
	}
	if !p.gated {
		d.lockGate(p)
		defer d.unlockGate(p)
	}
	n, err := p.u.ReadMsgs(d.msgs)
	if err != nil {
		d.fail(fmt.Errorf("reading the userfaultfd of %s: %w", p.label(), err))
		return 0, 0
	}
	now := time.Now()
	p.mu.Lock()
	// Whatever made workers back off has been read now.
	p.stallUntil = time.Time{}
	p.mu.Unlock()
	for _, m := range d.msgs[:n] {
		if m.Event == uffd.EventPagefault {
			p.push(queuedFault{addr: m.Pagefault.Address, at: now})
			continue
		}
		events++
		d.handleEvent(p, m)
	}
	if events > 0 {
		d.kickWorkers()
	}
	return n, events
}

// drainEvents reads everything pending on p's uffd and returns how many
// events it applied.
func (d *daemon) drainEvents(p *process) int {
	total := 0
	for !p.done && d.fatal == nil {
		n, ev := d.readMsgs(p)
		total += ev
		if n < len(d.msgs) {
			break
		}
	}
	return total
}

// serveQueue serves the faults queued for p, both phases.
func (d *daemon) serveQueue(p *process) {
	d.servePages(p)
	d.serveHoods()
}

// servePages serves the faulting pages of p's queued faults; the runs
// around them wait in d.hoods.
func (d *daemon) servePages(p *process) {
	for !p.done && d.fatal == nil {
		f, ok := p.pop()
		if !ok {
			return
		}
		d.servePage(p, f)
	}
}

// hood is what follows the copy of a faulting page: the rest of its run
// (r, around page), or, for a process that walks its memory in one
// direction while prefetch runs, the piece ahead of it (r claimed).
type hood struct {
	p       *process
	page    uint64
	r       run
	claimed bool // r is a look-ahead run, claimed already
	down    bool // the process walks down
}

// serveHoods copies the runs around the pages servePages served.
func (d *daemon) serveHoods() {
	for d.hoodHead < len(d.hoods) {
		h := d.hoods[d.hoodHead]
		d.hoods[d.hoodHead] = hood{}
		d.hoodHead++
		if d.hoodHead == len(d.hoods) {
			d.hoods, d.hoodHead = d.hoods[:0], 0
		}
		if !h.p.done && d.fatal == nil {
			d.copyHood(h)
		}
	}
}

// servePage resolves one fault. A pending page is copied first on its own
// (one 4 KiB UFFDIO_COPY, which wakes the thread: that is the fault's
// latency); the rest of the pending run around it in the aligned 64 KiB
// window follows in serveHoods. Any other page gets the zero page (never
// dumped, or dropped by MADV_DONTNEED: both must read zero).
func (d *daemon) servePage(p *process, f queuedFault) {
	if !f.again {
		d.stats.Faults++
	}
	d.lastFault.Store(time.Now().UnixNano())
	page := f.addr &^ (pageSize - 1)
	deadline := time.Now().Add(eagainGiveUp)
	for attempt := 0; !p.done && d.fatal == nil; attempt++ {
		p.mu.Lock()
		p.noteFault(page)
		r, pending := p.lazy.faultRun(page, faultWindowPages)
		var rd *asyncRead
		if pending && d.async != nil {
			rd = p.readOf(page)
		}
		p.mu.Unlock()
		var errno unix.Errno
		switch {
		case rd != nil:
			// Its read is in flight: the copy that follows it serves
			// this fault too.
			rd.waiters = append(rd.waiters, f)
			return
		case pending && d.async != nil:
			d.startRead(p, r, true, f)
			return
		case pending:
			errno = d.faultCopy(p, page, r, f)
		default:
			errno = d.faultZero(p, page, f)
		}
		if !d.resolve(p, page, errno) {
			return
		}
		if !d.backoff(attempt, deadline, p, page) {
			return
		}
	}
}

// resolve deals with an errno that stopped a fill at addr on the loop. It
// returns true when the fill must be retried, after the events that
// explain the errno were read.
func (d *daemon) resolve(p *process, addr uint64, errno unix.Errno) bool {
	switch errno {
	case 0:
		return false
	case unix.EAGAIN:
		d.drainEvents(p)
		return true
	case unix.ESRCH:
		d.gone(p)
		return false
	case unix.ENOENT:
		// No registered VMA there any more. Normally its UNMAP (or
		// REMAP) event is about to arrive and says what happened;
		// without one the page is gone for good.
		if d.drainEvents(p) > 0 {
			return true
		}
		p.mu.Lock()
		d.stats.PagesDropped += p.lazy.clear(addr, addr+pageSize)
		p.mu.Unlock()
		p.u.Wake(addr, pageSize)
		return true
	}
	return false
}

// faultCopy serves a pending page and queues the rest of r, its run.
func (d *daemon) faultCopy(p *process, page uint64, r run, f queuedFault) unix.Errno {
	one := run{addr: page, src: r.src + (page - r.addr), npages: 1}
	p.mu.Lock()
	p.claim(one)
	p.mu.Unlock()
	before := d.lf.c.copied
	done, errno, err := d.lf.fill(p.u, p.srcPid, one)
	p.mu.Lock()
	p.unclaim(one, done)
	p.mu.Unlock()
	d.stats.PagesByFault += d.lf.c.copied - before
	if err != nil {
		d.fail(fmt.Errorf("%s, page %#x: %w", p.label(), page, err))
		return 0
	}
	if errno != 0 {
		return errno
	}
	d.lat.add(time.Since(f.at))
	if h, ok := d.aheadOf(p, page); ok {
		d.hoods = append(d.hoods, h)
	} else if r.npages > 1 {
		d.hoods = append(d.hoods, hood{p: p, page: page, r: r})
	}
	return 0
}

// aheadOf claims, for a process whose faults go one way while prefetch
// runs, the pending run of up to aheadPiece right after page in that
// direction. The process has caught up with prefetch there, so the loop
// copies that itself, next to the workers: two copiers where the process
// is waiting.
func (d *daemon) aheadOf(p *process, page uint64) (hood, bool) {
	if !d.opts.Prefetch || d.async != nil {
		return hood{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var span run
	switch {
	case p.dir > 0:
		span = run{addr: page + pageSize, npages: aheadPiece / pageSize}
	case p.dir < 0 && page >= aheadPiece:
		span = run{addr: page - aheadPiece, npages: aheadPiece / pageSize}
	default:
		return hood{}, false
	}
	parts := d.pendingParts(p, span)
	if len(parts) == 0 {
		return hood{}, false
	}
	// The part next to the page.
	r := parts[0]
	if p.dir < 0 {
		r = parts[len(parts)-1]
	}
	p.claim(r)
	if p.dir > 0 {
		p.cursor = max(p.cursor, r.end())
	} else {
		p.cursor = min(p.cursor, r.addr)
	}
	return hood{p: p, page: page, r: r, claimed: true, down: p.dir < 0}, true
}

// copyAhead copies a claimed look-ahead run in pieces, nearest to the
// faulting page first, and gives the rest back to the workers as soon as
// anything else waits for the loop. The first piece is small: the process
// is about to touch it, and a copy wakes its threads only when it ends.
func (d *daemon) copyAhead(p *process, r run, down bool) {
	step := uint64(faultWindowPages * pageSize)
	var left uint64
	var errno unix.Errno
	var err error
	before := d.lf.c.copied
	for left = r.bytes(); left > 0 && !p.done && d.fatal == nil; {
		n := min(step, left)
		piece := run{addr: r.addr + (r.bytes() - left), npages: n / pageSize}
		if down {
			piece.addr = r.addr + left - n
		}
		piece.src = r.src + (piece.addr - r.addr)
		var got uint64
		got, errno, err = d.lf.fill(p.u, p.srcPid, piece)
		if got < n || err != nil || errno != 0 {
			break
		}
		left -= n
		step = prefetchPiece
		if left > 0 && d.othersWaiting(p) {
			break
		}
	}
	// What went in is marked done; a piece that stopped part-way stays
	// pending (its present pages cost an EEXIST later).
	p.mu.Lock()
	p.unclaim(r, 0)
	if down {
		p.lazy.clear(r.addr+left, r.end())
	} else {
		p.lazy.clear(r.addr, r.end()-left)
	}
	p.mu.Unlock()
	d.stats.PagesByFault += d.lf.c.copied - before
	switch {
	case err != nil:
		d.fail(fmt.Errorf("%s: %w", p.label(), err))
	case errno != 0:
		d.resolve(p, r.addr, errno)
	}
}

// othersWaiting peeks at epoll (level-triggered, so nothing is consumed):
// is anything but p's own uffd ready? Faults of p itself during a
// look-ahead copy are most likely inside it, and its copies wake them.
func (d *daemon) othersWaiting(p *process) bool {
	n, err := unix.EpollWait(d.ep, d.peek[:], 0)
	if err != nil {
		return false
	}
	for i := range n {
		if w := d.watchOf(&d.peek[i]); w != nil && !(w.kind == watchUffd && w.proc == p) {
			return true
		}
	}
	return false
}

// copyHood copies the neighbourhood of a served page: the thread runs
// already, and what it touches next is likely here. Upward first unless
// the process walks down.
func (d *daemon) copyHood(h hood) {
	if h.claimed {
		d.copyAhead(h.p, h.r, h.down)
		return
	}
	r, page := h.r, h.page
	lo := run{addr: r.addr, src: r.src, npages: (page - r.addr) / pageSize}
	hi := run{addr: page + pageSize, src: r.src + (page - r.addr) + pageSize, npages: r.npages - lo.npages - 1}
	h.p.mu.Lock()
	down := h.p.dir < 0
	h.p.mu.Unlock()
	if down {
		lo, hi = hi, lo
	}
	for _, part := range [2]run{hi, lo} {
		if part.npages > 0 && !h.p.done && d.fatal == nil {
			d.loopFill(h.p, part, true)
		}
	}
}

// loopFill copies r (or what of it is still pending and not busy) on the
// loop. Errors end in d.fail; errnos are resolved, but work lost to them
// (the process changed its mappings) is left to later faults and prefetch.
func (d *daemon) loopFill(p *process, r run, byFault bool) {
	p.mu.Lock()
	parts := d.pendingParts(p, r)
	for _, part := range parts {
		p.claim(part)
	}
	p.mu.Unlock()
	for i, part := range parts {
		if !d.fillClaimed(p, part, byFault) {
			p.mu.Lock()
			for _, rest := range parts[i+1:] {
				p.unclaim(rest, 0)
			}
			p.mu.Unlock()
			return
		}
	}
}

// fillClaimed copies r, claimed by the caller, and ends the claim. It
// returns false when it stopped early.
func (d *daemon) fillClaimed(p *process, r run, byFault bool) bool {
	before := d.lf.c.copied
	var done uint64
	var errno unix.Errno
	var err error
	if !p.done && d.fatal == nil {
		done, errno, err = d.lf.fill(p.u, p.srcPid, r)
	}
	p.mu.Lock()
	p.unclaim(r, done)
	p.mu.Unlock()
	if n := d.lf.c.copied - before; byFault {
		d.stats.PagesByFault += n
	} else {
		d.stats.PagesByPrefetch += n
	}
	switch {
	case err != nil:
		d.fail(fmt.Errorf("%s: %w", p.label(), err))
		return false
	case errno != 0:
		d.resolve(p, r.addr+done, errno)
		return false
	}
	return done == r.bytes()
}

// pendingParts splits r into the runs of it that are pending and not
// busy, in d.parts (reused). Preconditions: p.mu held.
func (d *daemon) pendingParts(p *process, r run) []run {
	d.parts = p.lazy.pendingParts(r, p.busy, d.parts[:0])
	return d.parts
}

// faultZero answers a fault on a page that is not pending: the zero page
// (EEXIST when the page was copied meanwhile: then only a wake is due).
func (d *daemon) faultZero(p *process, page uint64, f queuedFault) unix.Errno {
	n, errno := p.u.ZeroPageErrno(page, pageSize, 0)
	switch errno {
	case 0:
		d.stats.ZeroPages += uint64(n) / pageSize
	case unix.EEXIST:
		// Filled meanwhile; the copy that filled it woke the thread,
		// but a wake is cheap insurance against a lost one.
		p.u.Wake(page, pageSize)
	case unix.ENOENT:
		// The VMA went away; wake the thread so it faults again
		// against the new layout.
		p.u.Wake(page, pageSize)
	case unix.EAGAIN, unix.ESRCH:
		return errno
	default:
		d.fail(fmt.Errorf("UFFDIO_ZEROPAGE in %s: %w", p.label(), errno))
		return 0
	}
	p.mu.Lock()
	p.lazy.clear(page, page+pageSize)
	p.mu.Unlock()
	d.lat.add(time.Since(f.at))
	return 0
}

// backoff waits before retrying an operation that met EAGAIN. The kernel
// answers EAGAIN while an address-space change (fork, mremap, madvise,
// munmap) is under way; its event is queued only when the change is done,
// so right after a drain there may be nothing to read yet.
func (d *daemon) backoff(attempt int, deadline time.Time, p *process, addr uint64) bool {
	if time.Now().After(deadline) {
		d.fail(fmt.Errorf("%s: page at %#x: the kernel kept answering EAGAIN for %v", p.label(), addr, eagainGiveUp))
		return false
	}
	if attempt > 0 {
		time.Sleep(min(50*time.Microsecond<<min(attempt, 8), 10*time.Millisecond))
	}
	return true
}
