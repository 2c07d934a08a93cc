package lazypages

import (
	"os"
	"strconv"

	"github.com/lazyr/lazyr/internal/procfs"
	"golang.org/x/sys/unix"
)

// killTree SIGKILLs the processes behind pidfds and every descendant of
// pids. Descendants are collected (and pinned with pidfds) before anything
// is killed: a killed parent's children are reparented at once and could
// no longer be found. A fork racing with this cannot complete unnoticed:
// the forking task waits until its FORK event is read, which nobody does
// any more, and SIGKILL ends that wait.
//
// SIGKILL through a pidfd is queued for every thread before the call
// returns, and a task with SIGKILL pending never returns to user space, so
// once killTree returns the processes cannot run again even if their
// userfaultfd is released and their faults would then read zero.
//
// Everything is stopped (SIGSTOP) before anything is killed: otherwise a
// parent killed after its child could still wake from waitpid() and run
// on for a moment, seeing the child die.
func killTree(pidfds []int, pids []int) {
	all := append([]int(nil), pidfds...)
	var extra []int
	for _, pid := range descendants(pids) {
		if fd, err := unix.PidfdOpen(pid, 0); err == nil {
			extra = append(extra, fd)
		}
	}
	all = append(all, extra...)
	for _, sig := range []unix.Signal{unix.SIGSTOP, unix.SIGKILL} {
		for _, fd := range all {
			unix.PidfdSendSignal(fd, sig, nil, 0)
		}
	}
	for _, fd := range extra {
		unix.Close(fd)
	}
}

// descendants walks /proc once and returns every process below pids.
func descendants(pids []int) []int {
	if len(pids) == 0 {
		return nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := procfs.ReadStat(pid)
		if err != nil {
			continue // gone meanwhile
		}
		children[st.PPid] = append(children[st.PPid], pid)
	}
	seen := map[int]bool{}
	for _, p := range pids {
		seen[p] = true
	}
	var out []int
	queue := append([]int(nil), pids...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
				queue = append(queue, c)
			}
		}
	}
	return out
}
