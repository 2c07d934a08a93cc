package lazypages

import (
	"time"

	"github.com/lazyr/lazyr/uffd"
)

// handleEvent applies a non-cooperative event. The faulting process is
// blocked until the event has been read, so by the time it runs on, the
// pending set already matches its new address space.
func (d *daemon) handleEvent(p *process, m uffd.Msg) {
	switch m.Event {
	case uffd.EventFork:
		d.forked(p, m.Fork.UFD)
	case uffd.EventRemap:
		d.stats.Remaps++
		p.mu.Lock()
		p.lazy.remap(m.Remap.From, m.Remap.To, m.Remap.Len)
		p.mu.Unlock()
		// Threads still blocked on the old addresses fault again and
		// see the new layout.
		p.u.Wake(m.Remap.From, m.Remap.Len)
	case uffd.EventRemove, uffd.EventUnmap:
		if m.Event == uffd.EventRemove {
			d.stats.Removes++
		} else {
			d.stats.Unmaps++
		}
		// MADV_DONTNEED'd pages must read zero from now on and never be
		// refilled from the image; unmapped ones are nobody's business.
		if m.Remove.End > m.Remove.Start {
			p.mu.Lock()
			d.stats.PagesDropped += p.lazy.clear(m.Remove.Start, m.Remove.End)
			p.mu.Unlock()
			p.u.Wake(m.Remove.Start, m.Remove.End-m.Remove.Start)
		}
	}
}

// forked starts serving a child that forked off p. The child's pages are
// exactly p's at the fork (the kernel refuses copies into p with EAGAIN
// until the FORK event is read), so its pending set is a copy of p's, and
// its data comes from the same dumped process.
func (d *daemon) forked(p *process, ufd int) {
	u := uffd.FromFd(ufd)
	if err := u.SetNonblock(true); err != nil {
		u.Close()
		d.fail(err)
		return
	}
	// The gate is held (readMsgs): no worker copies into p, so the
	// pending set is exactly what the child lacks.
	p.mu.Lock()
	c := &process{
		id: d.newID(), srcPid: p.srcPid, u: u, pidfd: -1, parent: p,
		lazy: p.lazy.clone(), cursor: p.cursor, dir: p.dir, probeAddr: p.probeAddr,
		knownChildren: map[int]bool{}, forkTick: bootTicks(),
	}
	p.mu.Unlock()
	d.stats.Forks++
	if err := d.addProcess(c); err != nil {
		return
	}
	// The guard holds the child's uffd already, so its faults block
	// rather than read zero; to kill it the guard also needs its pidfd,
	// which the daemon finds as soon as the child is visible.
	d.unmatched = append(d.unmatched, c)
	d.matchWait = time.Millisecond
	d.matchAt = time.Now()
	d.checkComplete(c)
}
