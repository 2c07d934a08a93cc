package compel

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// ErrWrongThread is returned when a Task method is called outside of its Tracer's thread.
var ErrWrongThread = errors.New("compel: ptrace call from a thread that is not the tracer")

// Tracer owns the OS thread from which every ptrace request is made.
type Tracer struct {
	reqs chan func()
	tid  int
	// pinned: the tracer thread is bound to one CPU (pin.go); unpinned is its affinity from before.
	pinned   bool
	unpinned unix.CPUSet
}

// NewTracer starts the tracer goroutine and locks it to its OS thread.
func NewTracer() *Tracer {
	t := &Tracer{reqs: make(chan func())}
	ready := make(chan int)
	go func() {
		// Never unlocked: the thread must live as long as the process, since tracees (and tasks restored
		// with this thread as parent) depend on it.
		runtime.LockOSThread()
		ready <- unix.Gettid()
		for f := range t.reqs {
			f()
		}
	}()
	t.tid = <-ready
	return t
}

// Do runs f on the tracer thread and returns its error. Calls are serialised.
func (t *Tracer) Do(f func() error) error {
	if unix.Gettid() == t.tid {
		return f() // already on the tracer thread (nested call)
	}
	return <-t.Start(f)
}

// Start hands f to the tracer thread and returns once the thread has taken it, without waiting for f to
// finish: f's error arrives on the returned channel. Requests made after Start returns run after f.
// Preconditions: not called from the tracer thread (f would wait for the thread that waits for it).
func (t *Tracer) Start(f func() error) <-chan error {
	errc := make(chan error, 1)
	t.reqs <- func() {
		defer func() {
			if r := recover(); r != nil {
				errc <- fmt.Errorf("compel: panic on tracer thread: %v", r)
				panic(r)
			}
		}()
		errc <- f()
	}
	return errc
}

func (t *Tracer) check() error {
	if unix.Gettid() != t.tid {
		return ErrWrongThread
	}
	return nil
}
