package lazypages

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// gate orders the fault loop's reads of a uffd against prefetch workers'
// copies into the same process (why: prefetch.go). Workers enter it
// shared, the loop exclusively; the loop has priority: once it asks, no
// worker enters until it is done.
//
// It is not a sync.RWMutex because both sides hold it for short times and
// hand it back and forth thousands of times a second, and a sync.RWMutex
// parks the waiting thread: waking a parked thread takes tens to hundreds
// of microseconds on a virtual machine (an idle vCPU must be woken), plus
// the Go scheduler's hand-off to the loop's locked thread. Here both
// sides spin for about as long as the other side usually holds the gate
// (the loop: one worker piece; a worker: the loop's read and first copies)
// and only then sleep. Measured over a 2 GiB lazy restore, the worker sat
// idle at a sync.RWMutex gate for 200-270 ms, at this one for 60-140 ms.
type gate struct {
	writer  atomic.Bool  // the loop holds or wants the gate
	readers atomic.Int32 // workers inside

	mu      sync.Mutex
	rcond   sync.Cond // workers sleeping until the loop is done
	parked  int
	wcond   sync.Cond // the loop sleeping until the workers are out
	waiting bool
}

const (
	// readerSpin: how long a worker spins before it sleeps; the loop
	// holds the gate for a read and a few 4 KiB copies.
	readerSpin = 100 * time.Microsecond
	// writerSpin: how long the loop spins for workers to leave; one
	// prefetch piece takes ~100 µs. After that it sleeps until the last
	// one leaves.
	writerSpin = 200 * time.Microsecond
)

// enter lets a worker in, waiting while the loop holds or wants the gate.
func (g *gate) enter() {
	var start time.Time
	for {
		if !g.writer.Load() {
			g.readers.Add(1)
			// The loop sets writer and then reads readers; a worker adds
			// itself and then reads writer: one of them sees the other.
			if !g.writer.Load() {
				return
			}
			// Back off through leave: the loop may be asleep, having
			// seen this worker's short-lived count.
			g.leave()
		}
		if start.IsZero() {
			start = time.Now()
		}
		if time.Since(start) < readerSpin {
			runtime.Gosched()
			continue
		}
		g.mu.Lock()
		g.rcond.L = &g.mu
		for g.writer.Load() {
			g.parked++
			g.rcond.Wait()
			g.parked--
		}
		g.mu.Unlock()
		start = time.Time{}
	}
}

// leave lets a worker out, and wakes the loop if it waits for that.
func (g *gate) leave() {
	if g.readers.Add(-1) == 0 && g.writer.Load() {
		g.mu.Lock()
		if g.waiting {
			g.wcond.Signal()
		}
		g.mu.Unlock()
	}
}

// lock gives the loop the gate once the workers inside have left. It
// returns how long that took.
func (g *gate) lock() time.Duration {
	g.writer.Store(true)
	if g.readers.Load() == 0 {
		return 0
	}
	// A plain spin: the loop runs on a locked thread, for which
	// runtime.Gosched means parking it until another P hands it back.
	start := time.Now()
	for g.readers.Load() > 0 {
		if time.Since(start) < writerSpin {
			continue
		}
		g.mu.Lock()
		g.wcond.L = &g.mu
		g.waiting = true
		for g.readers.Load() > 0 {
			g.wcond.Wait()
		}
		g.waiting = false
		g.mu.Unlock()
	}
	return time.Since(start)
}

// unlock lets workers in again.
func (g *gate) unlock() {
	g.writer.Store(false)
	g.mu.Lock()
	if g.parked > 0 {
		g.rcond.Broadcast()
	}
	g.mu.Unlock()
}
