package lazypages

import (
	"strconv"
	"time"

	"github.com/lazyr/lazyr/uffd"
)

// process is one address space the daemon fills: a registered process or
// a child that forked off one (with its own userfaultfd).
type process struct {
	id     uint64 // daemon-wide, also the guard's key
	pid    int    // 0 while a forked child's pid is not known yet
	srcPid int    // whose pages the page source holds (the dumped pid)
	u      *uffd.FD
	pidfd  int // -1 when unknown
	lazy   *lazySet
	conn   *conn    // the hand-off connection that registered it (nil for forks)
	parent *process // for forks: the process it forked from

	// queue holds page faults read but not served yet: reading to get at
	// events (EAGAIN) must not lose them.
	queue []queuedFault
	// cursor is where prefetch continues: right after the last fault or
	// the last prefetched run, for locality.
	cursor uint64
	// knownChildren are children that are not forks we wait for (they
	// existed at registration, or were matched already).
	knownChildren map[int]bool
	// forkTick is when a child's FORK event was read, in /proc stat
	// starttime units; matchTries counts attempts to find its pid.
	forkTick   uint64
	matchTries int
	// probeAddr is an address inside the lazy ranges, for liveness probes.
	probeAddr uint64
	done      bool // released: complete or gone
}

type queuedFault struct {
	addr uint64
	at   time.Time
}

func (p *process) label() string {
	if p.pid > 0 {
		return "pid " + strconv.Itoa(p.pid)
	}
	return "fork of pid " + strconv.Itoa(p.srcPid) + " (id " + strconv.FormatUint(p.id, 10) + ")"
}
