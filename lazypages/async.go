package lazypages

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// With an AsyncSource (a page server across the network) the fault loop
// never waits for the source. A fault on a pending page starts a read of
// its run in the 64 KiB window and returns to the loop; a fault on a page
// whose read is in flight joins that read as a waiter instead of starting
// another. Prefetch keeps up to asyncDepth reads of asyncPiece in flight,
// from the cursor in the direction of the faults. Completions come back
// through the daemon's eventfd and are copied in on the loop, waiters'
// pages first. There are no workers: the loop is the only copier, so it
// needs no gate, and since it has applied every event read meanwhile, a
// completed read is copied only where its pages are still pending and
// still backed by the same source pages.

// asyncRead is one source read in flight.
type asyncRead struct {
	p       *process
	r       run
	buf     []byte
	byFault bool
	waiters []queuedFault
	err     error
}

// readOf returns the read in flight that covers addr. p.reads belongs to
// the loop (there are no workers with an AsyncSource).
func (p *process) readOf(addr uint64) *asyncRead {
	for _, rd := range p.reads {
		if rd.r.contains(addr) {
			return rd
		}
	}
	return nil
}

// startRead reads the part of r around page that is pending and not busy
// (for a fault: page is in it, and f waits for it); with byFault false, r
// is a prefetch run claimed already.
func (d *daemon) startRead(p *process, r run, byFault bool, f queuedFault) {
	rd := &asyncRead{p: p, r: r, byFault: byFault}
	if byFault {
		page := f.addr &^ (pageSize - 1)
		p.mu.Lock()
		rd.r = run{addr: page, src: r.src + (page - r.addr), npages: 1}
		for _, part := range d.pendingParts(p, r) {
			if part.contains(page) {
				rd.r = part
			}
		}
		p.claim(rd.r)
		p.mu.Unlock()
		rd.waiters = append(rd.waiters, f)
	}
	d.issue(rd)
}

// issue starts rd, claimed already.
func (d *daemon) issue(rd *asyncRead) {
	if !rd.byFault {
		d.asyncPrefetching++
	}
	p := rd.p
	p.reads = append(p.reads, rd)
	rd.buf = d.getBuf()[:rd.r.bytes()]
	d.async.StartRead(p.srcPid, rd.r.src, rd.buf, func(err error) {
		rd.err = err
		d.amu.Lock()
		d.completed = append(d.completed, rd)
		d.amu.Unlock()
		d.notify()
	})
}

func (d *daemon) getBuf() []byte {
	if n := len(d.bufs); n > 0 {
		b := d.bufs[n-1]
		d.bufs = d.bufs[:n-1]
		return b[:cap(b)]
	}
	return make([]byte, asyncPiece)
}

// finishReads copies in the reads that completed.
func (d *daemon) finishReads() {
	d.amu.Lock()
	done := d.completed
	d.completed = d.spare[:0]
	d.amu.Unlock()
	for i, rd := range done {
		d.finishRead(rd)
		done[i] = nil
	}
	d.spare = done[:0]
}

func (d *daemon) finishRead(rd *asyncRead) {
	p := rd.p
	defer func() { d.bufs = append(d.bufs, rd.buf) }()
	if !rd.byFault {
		d.asyncPrefetching--
	}
	p.mu.Lock()
	p.unclaim(rd.r, 0)
	for i, q := range p.reads {
		if q == rd {
			p.reads = append(p.reads[:i], p.reads[i+1:]...)
			break
		}
	}
	p.mu.Unlock()
	if p.done || d.fatal != nil {
		return
	}
	if rd.err != nil {
		if !isNotInImage(rd.err) {
			d.fail(fmt.Errorf("page source: %s, pages [%#x,+%#x): %w", p.label(), rd.r.src, rd.r.bytes(), rd.err))
			return
		}
		d.notInImage(rd)
		return
	}
	for _, w := range rd.waiters {
		page := w.addr &^ (pageSize - 1)
		if d.copyFromRead(p, rd, page, page+pageSize) {
			d.lat.add(time.Since(w.at))
		} else {
			// Not pending any more (dropped, or moved by an event):
			// it is served like a new fault.
			w.again = true
			p.push(w)
		}
	}
	d.copyFromRead(p, rd, rd.r.addr, rd.r.end())
	d.serveQueue(p)
	d.checkComplete(p)
}

// notInImage handles a read that found pages missing (Extents listed
// them, the source has no data): page by page, still without waiting on
// the loop. A single page is simply not pending any more, so it reads as
// zero like any page outside the image; a longer run is read again one
// page per read.
func (d *daemon) notInImage(rd *asyncRead) {
	p := rd.p
	if rd.r.npages == 1 {
		p.mu.Lock()
		if p.lazy.pendingAt(rd.r.addr, rd.r.src) {
			p.lazy.clear(rd.r.addr, rd.r.end())
		}
		p.mu.Unlock()
		for _, w := range rd.waiters {
			w.again = true
			p.push(w)
		}
	} else {
		for i := uint64(0); i < rd.r.npages; i++ {
			one := &asyncRead{p: p, r: run{addr: rd.r.addr + i*pageSize, src: rd.r.src + i*pageSize, npages: 1}, byFault: rd.byFault}
			p.mu.Lock()
			ok := p.lazy.pendingAt(one.r.addr, one.r.src) && !p.inBusy(one.r.addr)
			if ok {
				p.claim(one.r)
			}
			p.mu.Unlock()
			if !ok {
				continue
			}
			for _, w := range rd.waiters {
				if one.r.contains(w.addr) {
					one.waiters = append(one.waiters, w)
				}
			}
			d.issue(one)
		}
		// Waiters whose page went meanwhile: served like new faults.
		for _, w := range rd.waiters {
			if p.readOf(w.addr) == nil {
				w.again = true
				p.push(w)
			}
		}
	}
	d.serveQueue(p)
	d.checkComplete(p)
}

// copyFromRead copies the pages of [lo, hi) (inside rd's run) that are
// still pending and backed by the pages read. It reports whether it
// copied anything.
func (d *daemon) copyFromRead(p *process, rd *asyncRead, lo, hi uint64) bool {
	copied := false
	deadline := time.Now().Add(eagainGiveUp)
	for attempt := 0; lo < hi && !p.done && d.fatal == nil; attempt++ {
		// The next stretch still to copy.
		p.mu.Lock()
		for lo < hi && !p.lazy.pendingAt(lo, rd.r.src+(lo-rd.r.addr)) {
			lo += pageSize
		}
		end := lo
		for end < hi && p.lazy.pendingAt(end, rd.r.src+(end-rd.r.addr)) {
			end += pageSize
		}
		p.mu.Unlock()
		if lo == end {
			break
		}
		before := d.lf.c.copied
		done, errno := d.lf.copy(p.u, lo, rd.buf[lo-rd.r.addr:end-rd.r.addr])
		p.mu.Lock()
		p.lazy.clear(lo, lo+done)
		p.mu.Unlock()
		if n := d.lf.c.copied - before; rd.byFault {
			d.stats.PagesByFault += n
		} else {
			d.stats.PagesByPrefetch += n
		}
		copied = copied || done > 0
		lo += done
		if errno == 0 {
			continue
		}
		if errno != unix.EAGAIN && errno != unix.ESRCH && errno != unix.ENOENT {
			d.fail(fmt.Errorf("UFFDIO_COPY into %s at %#x: %w", p.label(), lo, errno))
			return copied
		}
		if !d.resolve(p, lo, errno) || !d.backoff(attempt, deadline, p, lo) {
			return copied
		}
	}
	return copied
}

// topUpReads keeps asyncDepth prefetch reads in flight, processes taking
// turns.
func (d *daemon) topUpReads() {
	if d.async == nil || !d.opts.Prefetch || d.fatal != nil || d.restoring || d.quietLeft() > 0 {
		return
	}
	for tries := 0; d.asyncPrefetching < asyncDepth && tries < len(d.order); {
		d.rr = (d.rr + 1) % len(d.order)
		p := d.order[d.rr]
		if p.done {
			tries++
			continue
		}
		p.mu.Lock()
		r, ok := p.nextPrefetch(asyncPiece / pageSize)
		if ok {
			p.claim(r)
		}
		p.mu.Unlock()
		if !ok {
			tries++
			continue
		}
		tries = 0
		d.startRead(p, r, false, queuedFault{})
	}
}

// quietLeft is how long prefetch must still wait after the last fault.
func (d *daemon) quietLeft() time.Duration {
	if d.opts.QuietPeriod <= 0 {
		return 0
	}
	return time.Until(time.Unix(0, d.lastFault.Load()).Add(d.opts.QuietPeriod))
}
