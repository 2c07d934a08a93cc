package lazypages

import (
	"errors"
	"fmt"
	"time"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/uffd"
	"golang.org/x/sys/unix"
)

// serveUffd reads what the process's uffd has (a few batches at most, so
// other processes get their turn) and serves it.
func (d *daemon) serveUffd(p *process) {
	for round := 0; round < 4 && !p.done && d.fatal == nil; round++ {
		n, _ := d.readMsgs(p)
		d.serveQueue(p)
		if n < len(d.msgs) {
			break
		}
	}
	d.checkComplete(p)
}

// readMsgs reads one batch of messages: events are applied at once, in the
// order the kernel reported them; faults are queued. It returns how many
// messages came and how many of them were events.
func (d *daemon) readMsgs(p *process) (msgs, events int) {
	if p.done {
		return 0, 0
	}
	n, err := p.u.ReadMsgs(d.msgs)
	if err != nil {
		d.fail(fmt.Errorf("reading the userfaultfd of %s: %w", p.label(), err))
		return 0, 0
	}
	now := time.Now()
	for _, m := range d.msgs[:n] {
		if m.Event == uffd.EventPagefault {
			p.queue = append(p.queue, queuedFault{addr: m.Pagefault.Address, at: now})
			continue
		}
		events++
		d.handleEvent(p, m)
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

func (d *daemon) serveQueue(p *process) {
	for len(p.queue) > 0 && !p.done && d.fatal == nil {
		f := p.queue[0]
		p.queue = p.queue[1:]
		d.serveFault(p, f)
	}
}

// serveFault resolves one fault: the pending run around it is copied from
// the source, any other page gets the zero page (never dumped, or dropped
// by MADV_DONTNEED: both must read zero).
func (d *daemon) serveFault(p *process, f queuedFault) {
	d.stats.Faults++
	d.lastFault = time.Now()
	d.chunk = prefetchMinChunk
	deadline := time.Now().Add(eagainGiveUp)
	for attempt := 0; !p.done && d.fatal == nil; attempt++ {
		var err error
		if r, ok := p.lazy.faultRun(f.addr, faultWindowPages); ok {
			err = d.fill(p, r, true)
			p.cursor = r.addr + r.bytes()
		} else {
			err = d.zeroFault(p, f.addr)
		}
		if err != errRetry {
			break
		}
		if !d.backoff(attempt, deadline, p, f.addr) {
			return
		}
	}
	d.lat.add(time.Since(f.at))
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

func isNotInImage(err error) bool {
	return errors.Is(err, ErrNotInImage) || errors.Is(err, images.ErrNotInImage)
}

// fill copies run r in from the source.
func (d *daemon) fill(p *process, r run, byFault bool) error {
	buf := d.buf[:r.bytes()]
	err := d.src.ReadPages(p.srcPid, r.src, buf)
	if isNotInImage(err) {
		if r.npages == 1 {
			// Listed as dumped but the source has no data: like any
			// page not in the image, it reads as zero.
			return d.zeroRun(p, r.addr, byFault)
		}
		// Find the missing pages one by one.
		for i := uint64(0); i < r.npages && !p.done && d.fatal == nil; i++ {
			one := run{addr: r.addr + i*pageSize, src: r.src + i*pageSize, npages: 1}
			if err := d.fill(p, one, byFault); err != nil {
				return err
			}
		}
		return nil
	}
	if err != nil {
		d.fail(fmt.Errorf("page source: %s, pages [%#x,+%#x): %w", p.label(), r.src, r.bytes(), err))
		return err
	}
	return d.copyRun(p, r.addr, buf, byFault)
}

// copyRun UFFDIO_COPYs buf to addr, accounting page by page.
func (d *daemon) copyRun(p *process, addr uint64, buf []byte, byFault bool) error {
	off := uint64(0)
	for off < uint64(len(buf)) && !p.done {
		n, err := p.u.Copy(addr+off, buf[off:], 0)
		if n > 0 {
			p.lazy.clear(addr+off, addr+off+uint64(n))
			pages := uint64(n) / pageSize
			if byFault {
				d.stats.PagesByFault += pages
			} else {
				d.stats.PagesByPrefetch += pages
			}
			d.stats.BytesCopied += uint64(n)
			off += uint64(n)
		}
		switch {
		case err == nil:
		case errors.Is(err, unix.EAGAIN) && n > 0:
			// A partial copy: retrying the rest reports the cause.
		case errors.Is(err, unix.EEXIST):
			// Present already (filled before it was registered, or by
			// an earlier copy): done.
			p.lazy.clear(addr+off, addr+off+pageSize)
			d.stats.PagesExisting++
			off += pageSize
		case errors.Is(err, unix.EAGAIN):
			d.drainEvents(p)
			return errRetry
		case errors.Is(err, unix.ESRCH):
			d.gone(p)
			return nil
		case errors.Is(err, unix.ENOENT):
			// No registered VMA there any more. Normally its UNMAP
			// (or REMAP) event is about to arrive and says what
			// happened; without one the page is gone for good.
			if d.drainEvents(p) > 0 {
				return errRetry
			}
			d.stats.PagesDropped += p.lazy.clear(addr+off, addr+off+pageSize)
			p.u.Wake(addr+off, pageSize)
			return errRetry
		default:
			d.fail(fmt.Errorf("UFFDIO_COPY into %s: %w", p.label(), err))
			return err
		}
	}
	return nil
}

// zeroFault answers a fault on a page that is not pending.
func (d *daemon) zeroFault(p *process, addr uint64) error {
	return d.zeroRun(p, addr&^(pageSize-1), true)
}

// zeroRun maps the zero page at addr (one page) and marks it done.
func (d *daemon) zeroRun(p *process, addr uint64, byFault bool) error {
	_, err := p.u.ZeroPage(addr, pageSize, 0)
	switch {
	case err == nil:
		d.stats.ZeroPages++
	case errors.Is(err, unix.EEXIST):
		// Filled meanwhile; the copy that filled it woke the thread,
		// but a wake is cheap insurance against a lost one.
		p.u.Wake(addr, pageSize)
	case errors.Is(err, unix.EAGAIN):
		d.drainEvents(p)
		return errRetry
	case errors.Is(err, unix.ESRCH):
		d.gone(p)
		return nil
	case errors.Is(err, unix.ENOENT):
		// The VMA went away; wake the thread so it faults again
		// against the new layout.
		p.u.Wake(addr, pageSize)
	default:
		d.fail(fmt.Errorf("UFFDIO_ZEROPAGE in %s: %w", p.label(), err))
		return err
	}
	p.lazy.clear(addr, addr+pageSize)
	return nil
}
