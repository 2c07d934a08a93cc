package lazypages

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lazyr/lazyr/internal/procfs"
	"github.com/lazyr/lazyr/internal/sys"
	"golang.org/x/sys/unix"
)

// A FORK event gives the child's new userfaultfd but not its pid. The pid
// matters for safety: the guard can only kill what it has a pidfd for. At
// the moment the event is read the child is not yet linked into the task
// list (the kernel reports the fork from dup_mmap, before the child is
// visible), so the daemon looks for it afterwards among the parent's
// children: a child it has not seen before, that does not share the
// parent's mm (a vfork/CLONE_VM child produces no FORK event), and that
// still has userfaultfd-registered VMAs ("um" in smaps; a spawned child
// that exec'd has none). Candidates go to unmatched forks oldest first.
//
// The parent may exit before the child is found (a daemonizing double
// fork does exactly that); the child is then reparented and the parent's
// list no longer has it. The fallback scans all of /proc for processes
// started since the fork that pass the same checks.
//
// Two forks from different threads of one parent at the same instant can
// have their pidfds swapped; that is harmless for killing (both die), and
// exits are confirmed on the uffd itself (probe) before a process is
// dropped. A fork not found after matchMaxTries attempts has exited or
// exec'd: its uffd probe drops it.

const matchMaxTries = 12

func (d *daemon) matchChildren() {
	var global []int // lazily scanned
	globalDone := false
	for _, c := range slices.Clone(d.unmatched) {
		if c.done || c.pid > 0 {
			continue
		}
		c.matchTries++
		par := c.parent
		if par.pid > 0 && d.matchFrom(c, par, sortedChildren(par.pid), true) {
			continue
		}
		// The first tries may simply be too early (the child is not
		// linked yet); after that the parent may be gone.
		if par.pid > 0 && c.matchTries <= 2 {
			continue
		}
		if !globalDone {
			global, globalDone = startedSince(c.forkTick), true
		} else {
			global = slices.DeleteFunc(global, d.pidTaken)
		}
		d.matchFrom(c, par, global, false)
	}
	d.unmatched = slices.DeleteFunc(d.unmatched, func(c *process) bool {
		return c.done || c.pid > 0 || c.matchTries >= matchMaxTries
	})
	if len(d.unmatched) > 0 {
		d.matchWait = min(max(d.matchWait*2, time.Millisecond), matchMaxBackoff)
		d.matchAt = time.Now().Add(d.matchWait)
	}
}

// matchFrom gives c the first acceptable candidate. Candidates from the
// parent's own list that fail the checks are remembered as not forks.
func (d *daemon) matchFrom(c, par *process, cands []int, ownChildren bool) bool {
	for _, pid := range cands {
		if par.knownChildren[pid] || d.pidTaken(pid) {
			continue
		}
		if (par.pid > 0 && sameMM(par.pid, pid)) || !hasUffdVMA(pid) {
			if ownChildren {
				par.knownChildren[pid] = true
			}
			continue
		}
		pidfd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue
		}
		par.knownChildren[pid] = true
		d.matched(c, pid, pidfd)
		return true
	}
	return false
}

// startedSince lists the processes started at or after boot tick since,
// oldest first.
func startedSince(since uint64) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	type cand struct {
		pid   int
		start uint64
	}
	var cs []cand
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		st, err := procfs.ReadStat(pid)
		if err != nil || st.StartTime+1 < since {
			continue
		}
		cs = append(cs, cand{pid, st.StartTime})
	}
	slices.SortFunc(cs, func(a, b cand) int { return cmpU64(a.start, b.start) })
	out := make([]int, len(cs))
	for i, c := range cs {
		out[i] = c.pid
	}
	return out
}

// userHZ is the unit of /proc/PID/stat's starttime (USER_HZ, 100 on every
// architecture Linux ships with a fixed value for).
const userHZ = 100

// bootTicks is now in /proc/PID/stat starttime units (boot-time clock).
func bootTicks() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return uint64(ts.Nano()) / (1e9 / userHZ)
}

func (d *daemon) matched(c *process, pid, pidfd int) {
	c.pid, c.pidfd = pid, pidfd
	if err := d.guard.send(&message{Type: msgGuardPidfd, ID: c.id, Pid: int32(pid)}, pidfd); err != nil {
		d.fail(fmt.Errorf("%w: %w", ErrGuard, err))
		return
	}
	if err := d.watchFd(pidfd, unix.EPOLLIN, &watch{kind: watchPidfd, proc: c}); err != nil {
		d.fail(err)
	}
}

func (d *daemon) pidTaken(pid int) bool {
	for _, p := range d.order {
		if p.pid == pid {
			return true
		}
	}
	return false
}

func sortedChildren(pid int) []int {
	kids := childrenOf(pid)
	slices.Sort(kids)
	return kids
}

// hasUffdVMA reports whether pid has a VMA registered for missing faults.
func hasUffdVMA(pid int) bool {
	maps, err := procfs.Smaps(pid)
	if err != nil {
		return false
	}
	for _, m := range maps {
		if m.HasFlag("um") {
			return true
		}
	}
	return false
}

func sameMM(pid1, pid2 int) bool {
	same, err := sys.SameMM(pid1, pid2)
	return err == nil && same
}

// pidOfPidfd returns the pid a pidfd refers to as this process sees it
// (the "Pid:" line of its fdinfo): restore may run the restored tree in
// its own pid namespace, where the pid it reports differs from ours. It
// returns -1 when the process is gone (the kernel shows -1).
func pidOfPidfd(pidfd int) (int, error) {
	fi, err := procfs.ReadFdInfo(os.Getpid(), pidfd)
	if err != nil {
		return 0, err
	}
	for _, l := range fi.Lines {
		if v, ok := strings.CutPrefix(l, "Pid:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("fd %d is not a pidfd", pidfd)
}
