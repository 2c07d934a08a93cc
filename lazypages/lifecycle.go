package lazypages

import (
	"fmt"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// fail records the first unrecoverable error and kills at once every
// process that still depends on the daemon; abort finishes the job.
func (d *daemon) fail(err error) {
	if d.fatal != nil {
		return
	}
	d.fatal = err
	d.stopping.Store(true)
	killTree(d.livePidfds(), d.livePids())
}

func (d *daemon) livePidfds() []int {
	var fds []int
	for _, p := range d.order {
		if !p.done && p.pidfd >= 0 {
			fds = append(fds, p.pidfd)
		}
	}
	return fds
}

func (d *daemon) livePids() []int {
	var pids []int
	for _, p := range d.order {
		if !p.done && p.pid > 0 {
			pids = append(pids, p.pid)
		}
	}
	return pids
}

// abort ends Serve after an unrecoverable error: the processes were
// killed by fail; the guard, whose socket closes without "finished", kills
// them (and their descendants) again before it lets go of the uffds, so
// even a fork the daemon did not match yet cannot run on zero pages.
func (d *daemon) abort() error {
	d.stopWorkers()
	d.guard.close()
	d.guard.wait(guardExitTimeout)
	for len(d.order) > 0 {
		d.release(d.order[0])
	}
	return d.fatal
}

// finish ends Serve normally: every process is complete or gone.
func (d *daemon) finish() error {
	d.stopWorkers()
	// Nothing depends on the guard any more; if even this send fails it
	// finds the socket closed and has nobody left to kill.
	d.guard.send(&message{Type: msgGuardFinished})
	d.guard.close()
	if err := d.guard.wait(guardExitTimeout); err != nil {
		return fmt.Errorf("%w: %w", ErrGuard, err)
	}
	return nil
}

func (d *daemon) close() {
	if d.stopCtx != nil {
		// The watcher may be writing to cancelFd: it must be done
		// before that fd is closed (and its number reused).
		close(d.stopCtx)
		<-d.ctxDone
		d.stopCtx = nil
	}
	d.stopWorkers()
	if d.oldProcs > 0 {
		runtime.GOMAXPROCS(d.oldProcs)
		d.oldProcs = 0
	}
	for len(d.order) > 0 {
		d.release(d.order[0])
	}
	for _, c := range d.conns {
		d.dropConn(c)
	}
	if d.listenFd >= 0 {
		unix.Close(d.listenFd)
		d.listenFd = -1
		os.Remove(d.sockPath)
	}
	if d.guard != nil {
		d.guard.close()
		d.guard.wait(guardExitTimeout)
	}
	if d.cancelFd >= 0 {
		unix.Close(d.cancelFd)
		d.cancelFd = -1
	}
	// Reads still in flight at an AsyncSource may complete after this:
	// their notify finds the fd gone rather than a reused number.
	d.nmu.Lock()
	if d.notifyFd >= 0 {
		unix.Close(d.notifyFd)
		d.notifyFd = -1
	}
	d.nmu.Unlock()
	if d.ep >= 0 {
		unix.Close(d.ep)
		d.ep = -1
	}
	if d.ownSrc && d.src != nil {
		d.src.Close()
		d.src = nil
	}
}

// release lets go of a process that is complete or gone: the daemon and
// the guard close their uffd and pidfd. Once the last uffd reference is
// gone the kernel unregisters the ranges; every page that matters is in by
// then, and the pages left missing (never dumped, or dropped by
// MADV_DONTNEED) read as zero, as they should.
func (d *daemon) release(p *process) {
	if p.done {
		return
	}
	// No worker may be copying through the uffd when it closes.
	if !p.gated {
		p.gate.lock()
		defer p.gate.unlock()
	}
	p.mu.Lock()
	p.done = true
	p.mu.Unlock()
	if d.pf != nil {
		d.pf.remove(p)
	}
	p.queue, p.head = nil, 0
	d.unwatchFd(p.u.Fd())
	p.u.Close()
	if p.pidfd >= 0 {
		d.unwatchFd(p.pidfd)
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
	if d.guard != nil && d.guard.fd >= 0 {
		if err := d.guard.send(&message{Type: msgGuardRelease, ID: p.id}); err != nil && d.fatal == nil {
			d.fail(fmt.Errorf("%w: %w", ErrGuard, err))
		}
	}
	delete(d.procs, p.id)
	for i, q := range d.order {
		if q == p {
			d.order = append(d.order[:i], d.order[i+1:]...)
			break
		}
	}
	for i, q := range d.unmatched {
		if q == p {
			d.unmatched = append(d.unmatched[:i], d.unmatched[i+1:]...)
			break
		}
	}
}

// addProcess makes p live: the guard gets dups of its fds first, then
// the daemon watches them.
func (d *daemon) addProcess(p *process) error {
	m := &message{Type: msgGuardAdd, ID: p.id, Pid: int32(p.pid)}
	fds := []int{p.u.Fd()}
	if p.pidfd >= 0 {
		m.Flags |= flagHasPidfd
		fds = append(fds, p.pidfd)
	}
	if err := d.guard.send(m, fds...); err != nil {
		p.u.Close()
		if p.pidfd >= 0 {
			unix.Close(p.pidfd)
		}
		p.done = true
		err = fmt.Errorf("%w: %w", ErrGuard, err)
		d.fail(err)
		return err
	}
	d.procs[p.id] = p
	d.order = append(d.order, p)
	if d.pf != nil {
		d.pf.add(p)
	}
	if err := d.watchFd(p.u.Fd(), unix.EPOLLIN, &watch{kind: watchUffd, proc: p}); err != nil {
		d.fail(err)
		return err
	}
	if p.pidfd >= 0 {
		if err := d.watchFd(p.pidfd, unix.EPOLLIN, &watch{kind: watchPidfd, proc: p}); err != nil {
			d.fail(err)
			return err
		}
	}
	if d.probeAt.IsZero() {
		d.probeAt = time.Now().Add(probeInterval)
	}
	return nil
}

// checkComplete releases p once nothing is pending. Events still queued
// on its uffd are read first (a FORK must not be lost) and faults already
// read are answered.
func (d *daemon) checkComplete(p *process) {
	if p.done || p.pending() > 0 {
		return
	}
	d.drainEvents(p)
	d.serveQueue(p)
	if p.done || p.pending() > 0 || len(p.reads) > 0 {
		return
	}
	d.release(p)
	if d.fatal == nil && !d.anyPending() {
		d.allInAt = time.Now()
	}
}

// gone drops a process whose mm no longer exists.
func (d *daemon) gone(p *process) {
	if p.done {
		return
	}
	if p.pending() > 0 {
		d.stats.ProcessesGone++
	}
	d.release(p)
}

// probe checks that p's mm still exists (see uffd.FD.Alive).
func (d *daemon) probe(p *process) {
	// An unexpected probe error says nothing about the process: keep
	// serving it; copies report ESRCH anyway once it is gone.
	if alive, err := p.u.Alive(p.probeAddr); err == nil && !alive {
		d.gone(p)
	}
}

// pidfdReady: the process exited. Its mm is normally gone with it, but a
// CLONE_VM sibling may still use it, so the uffd decides.
func (d *daemon) pidfdReady(p *process) {
	d.unwatchFd(p.pidfd)
	if !p.done {
		d.probe(p)
	}
}

// stopWorkers ends prefetch workers (before processes are let go, so none
// is left copying).
func (d *daemon) stopWorkers() {
	d.stopping.Store(true)
	if d.pf != nil {
		d.pf.stopWorkers()
	}
}
