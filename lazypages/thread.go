package lazypages

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// Scheduling of the loop's thread.
//
// A fault costs its thread the time until the loop gets a processor, so
// the loop runs on a thread of its own with a higher priority and a short
// scheduler slice. Both matter on a small machine where prefetch workers
// and the restored processes keep the processors busy: this kernel's
// scheduler (EEVDF) lets a running task finish its slice before a woken
// one may preempt it, unless the woken one asks for a shorter slice
// (sched_attr.sched_runtime for SCHED_NORMAL, Linux 6.12+; older kernels
// ignore it). The nice value only counts against threads of the same
// scheduling group (the daemon's own workers, with autogroups), and
// raising it needs CAP_SYS_NICE; without it the loop keeps its nice value
// and asks for the short slice only.
const (
	loopNice  = -10
	loopSlice = 100_000 // ns, the shortest the kernel accepts
)

// loopThread locks the calling goroutine to its thread for good and sets
// the thread's priority. The thread ends with the goroutine (Go exits a
// thread whose goroutine returns locked), so the priority stays with it.
func loopThread() {
	runtime.LockOSThread()
	attr := unix.SchedAttr{Policy: unix.SCHED_NORMAL, Nice: loopNice, Runtime: loopSlice}
	if unix.SchedSetAttr(0, &attr, 0) == nil {
		return
	}
	if cur, err := unix.SchedGetAttr(0, 0); err == nil {
		cur.Runtime = loopSlice
		_ = unix.SchedSetAttr(0, cur, 0) // best effort: the loop works without it
	}
}

// defaultWorkers is the number of prefetch workers when Options leave it
// open: one per two processors, at most maxDefaultWorkers. Measured on
// two processors, a second worker made prefetch slower, not faster: the
// workers and the loop take turns at a process's gate, and every turn
// idles the others (prefetch.go).
func defaultWorkers() int {
	return max(1, min(runtime.NumCPU()/2, maxDefaultWorkers))
}
