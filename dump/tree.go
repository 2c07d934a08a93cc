package dump

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/compel"
	"github.com/lazyr/lazyr/internal/procfs"
)

// proc is one process of the tree while it is frozen.
type proc struct {
	pid, ppid int // as lazyr sees them
	// vpid, vppid, vpgid, vsid are the ids inside the tree's PID namespace: what the images record.
	vpid, vppid, vpgid, vsid int
	threads                  []*compel.Task // threads[0] is the thread-group leader
	zombie                   bool
	exitCode                 int
	stat                     *procfs.Stat
}

// last returns the innermost id of a /proc NSpid-style list (or def if the kernel gave none).
func last(ids []int, def int) int {
	if len(ids) == 0 {
		return def
	}
	return ids[len(ids)-1]
}

// nsDepth is the number of PID namespace levels lazyr's /proc shows for a task.
func nsDepth(st *procfs.Status) int { return max(len(st.NSpid), 1) }

// seizeTree freezes root, all its threads and all its descendants (with their threads), parents before
// children. A frozen task cannot fork or clone, so after a task is frozen its children and threads only
// change by exiting; the lists are re-read until nothing new shows up. On error everything seized is
// released as it was.
// Preconditions: called from Tracer.Do.
func seizeTree(tr *compel.Tracer, root int) (procs []*proc, err error) {
	defer func() {
		if err != nil {
			releaseTree(procs)
			procs = nil
		}
	}()
	queue := []int{root}
	parent := map[int]int{root: 0}
	vpids := map[int]int{0: 0}
	rootStatus, err := procfs.ReadStatus(root)
	if err != nil {
		return nil, fmt.Errorf("process %d: %w", root, err)
	}
	self, err := procfs.ReadStatus(os.Getpid())
	if err != nil {
		return nil, err
	}
	depth := nsDepth(rootStatus)
	if depth > nsDepth(self) && last(rootStatus.NSpid, 0) != 1 {
		return nil, fmt.Errorf("process %d is pid %d inside a PID namespace it does not start; only a tree whose root is the namespace's init (pid 1) can be dumped with its namespace: %w",
			root, last(rootStatus.NSpid, 0), ErrUnsupported)
	}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		st, err := procfs.ReadStat(pid)
		if errors.Is(err, fs.ErrNotExist) && pid != root {
			continue // exited meanwhile
		}
		if err != nil {
			return procs, fmt.Errorf("process %d: %w", pid, err)
		}
		status, err := procfs.ReadStatus(pid)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && pid != root {
				continue
			}
			return procs, fmt.Errorf("process %d: %w", pid, err)
		}
		if nsDepth(status) != depth {
			return procs, fmt.Errorf("process %d is in another PID namespace than its parent %d (nested PID namespaces are not supported yet): %w", pid, parent[pid], ErrUnsupported)
		}
		p := &proc{pid: pid, ppid: parent[pid], stat: st,
			vpid: last(status.NSpid, pid), vppid: vpids[parent[pid]],
			vpgid: last(status.NSpgid, st.Pgrp), vsid: last(status.NSsid, st.Session)}
		vpids[pid] = p.vpid
		if st.State == 'Z' || st.State == 'X' {
			if pid == root {
				return procs, fmt.Errorf("process %d: %w", pid, ErrZombie)
			}
			p.zombie, p.exitCode = true, st.ExitCode
			procs = append(procs, p)
			continue
		}
		procs = append(procs, p)
		if err := p.seizeThreads(tr); err != nil {
			return procs, err
		}
		kids, err := p.children()
		if err != nil {
			return procs, err
		}
		for _, k := range kids {
			if _, seen := parent[k]; !seen {
				parent[k] = pid
				queue = append(queue, k)
			}
		}
	}
	return procs, nil
}

// seizeThreads freezes every thread of p, the leader first.
func (p *proc) seizeThreads(tr *compel.Tracer) error {
	seized := map[int]bool{}
	for {
		tids, err := procfs.Tasks(p.pid)
		if err != nil {
			return fmt.Errorf("threads of %d: %w", p.pid, err)
		}
		sort.Slice(tids, func(i, j int) bool { return tids[i] == p.pid || (tids[j] != p.pid && tids[i] < tids[j]) })
		fresh := 0
		for _, tid := range tids {
			if seized[tid] {
				continue
			}
			t, err := tr.Seize(tid)
			if err != nil {
				if tid != p.pid && errors.Is(err, unix.ESRCH) {
					continue // the thread exited meanwhile
				}
				if errors.Is(err, unix.EPERM) {
					return fmt.Errorf("cannot trace %d (needs root or CAP_SYS_PTRACE over it): %w: %w", tid, ErrPermission, err)
				}
				return err
			}
			seized[tid] = true
			p.threads = append(p.threads, t)
			fresh++
		}
		if fresh == 0 {
			return nil
		}
	}
}

// children lists the children of all of p's threads.
func (p *proc) children() ([]int, error) {
	var out []int
	for _, t := range p.threads {
		kids, err := procfs.Children(p.pid, t.Pid)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("children of %d: %w", t.Pid, err)
		}
		out = append(out, kids...)
	}
	sort.Ints(out)
	return out, nil
}

// releaseTree lets every seized task go on exactly as it was.
func releaseTree(procs []*proc) error {
	var first error
	for _, p := range procs {
		for _, t := range p.threads {
			if err := t.Release(); err != nil && first == nil && !errors.Is(err, unix.ESRCH) {
				first = err
			}
		}
	}
	return first
}

// killTree kills every dumped process (children first, so no parent sees a child die while still there).
func killTree(procs []*proc) error {
	var first error
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		if p.zombie || len(p.threads) == 0 {
			continue
		}
		if err := unix.Kill(p.pid, unix.SIGKILL); err != nil && first == nil && !errors.Is(err, unix.ESRCH) {
			first = fmt.Errorf("kill %d: %w", p.pid, err)
		}
		compel.ReapAll(p.threads)
	}
	return first
}
