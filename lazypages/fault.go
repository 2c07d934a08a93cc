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
	waitStart := time.Now()
	p.gate.Lock()
	p.gated = true
	if w := time.Since(waitStart); w > time.Microsecond {
		d.readWait.add(w)
	}
}

func (d *daemon) unlockGate(p *process) {
	if p.gated {
		p.gated = false
		p.gate.Unlock()
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

// hood is the rest of a faulting page's run, to be copied after the page.
type hood struct {
	p    *process
	page uint64
	r    run
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
	if r.npages > 1 {
		d.hoods = append(d.hoods, hood{p: p, page: page, r: r})
	}
	return 0
}

// copyHood copies the neighbourhood of a served page: the thread runs
// already, and what it touches next is likely here. Upward first unless
// the process walks down.
func (d *daemon) copyHood(h hood) {
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
		before := d.lf.c.copied
		var done uint64
		var errno unix.Errno
		var err error
		if !p.done && d.fatal == nil {
			done, errno, err = d.lf.fill(p.u, p.srcPid, part)
		}
		p.mu.Lock()
		p.unclaim(part, done)
		if errno != 0 || err != nil {
			for _, rest := range parts[i+1:] {
				p.unclaim(rest, 0)
			}
		}
		p.mu.Unlock()
		if n := d.lf.c.copied - before; byFault {
			d.stats.PagesByFault += n
		} else {
			d.stats.PagesByPrefetch += n
		}
		if err != nil {
			d.fail(fmt.Errorf("%s: %w", p.label(), err))
			return
		}
		if errno != 0 {
			d.resolve(p, part.addr+done, errno)
			return
		}
	}
}

// pendingParts splits r into the runs of it that are pending and not
// busy, in d.parts (reused). Preconditions: p.mu held.
func (d *daemon) pendingParts(p *process, r run) []run {
	d.parts = d.parts[:0]
	for a := r.addr; a < r.end(); {
		next, ok := p.lazy.nextRunFrom(a, (r.end()-a)/pageSize)
		if !ok || next.addr < a || next.addr >= r.end() {
			break // nothing more in r (the search wrapped, or went past)
		}
		next.npages = min(next.npages, (r.end()-next.addr)/pageSize)
		a = next.end()
		for next.npages > 0 {
			part, skipTo := trimBusyUp(next, p.busy)
			if part.npages == 0 {
				// next starts in a busy run: go on after it.
				if skipTo >= next.end() {
					break
				}
				cut := (skipTo - next.addr) / pageSize
				next = run{addr: skipTo, src: next.src + cut*pageSize, npages: next.npages - cut}
				continue
			}
			d.parts = append(d.parts, part)
			next = run{addr: part.end(), src: part.src + part.bytes(), npages: next.npages - part.npages}
		}
	}
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
