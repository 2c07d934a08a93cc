package dump

import (
	"github.com/lazyr/lazyr/internal/procfs"
)

// The dump needs each mapping's VmFlags (madvise bits, VM_GROWSDOWN), which only /proc/PID/smaps shows,
// and smaps computes Rss, Pss and the rest for every mapping by walking every page table entry: ~20 ms
// per 2 GiB of resident memory here, far more under load, all of it inside the freeze window (a lazy
// dump's downtime) and growing with memory. No cheaper interface has them: /proc/PID/maps and the
// PROCMAP_QUERY ioctl (Linux 6.11) report only rwxs and the backing, smaps_rollup no mapping at all.
//
// So smaps is read before the freeze, while the tree still runs, and once it is frozen the cheap
// /proc/PID/maps is read instead: when every line is as it was, the early VmFlags are used. When the
// layout changed in between (mmap, munmap, mprotect, brk, a partial madvise: anything that splits,
// merges, grows or moves a mapping) smaps is read again in the window, as before.
//
// The residual risk: an madvise (or prctl) that changes the flags of whole mappings without changing
// the layout, between the early read and the freeze (a few milliseconds), goes unseen; the dump then
// records the flags from just before it. They are advice (MADV_RANDOM, SEQUENTIAL, HUGEPAGE, NOHUGEPAGE,
// MERGEABLE, DONTDUMP) or fork behaviour (DONTFORK, WIPEONFORK); VM_GROWSDOWN cannot change without a
// new mapping.

// earlySmaps are the mappings of the tree's processes read before the freeze, by pid.
type earlySmaps map[int][]procfs.Mapping

// readSmapsEarly reads the smaps of root and its descendants while they still run. A process it cannot
// read (gone, or born later) is simply read in the window.
func readSmapsEarly(root int) earlySmaps {
	out := earlySmaps{}
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if _, seen := out[pid]; seen {
			continue
		}
		ms, err := procfs.Smaps(pid)
		if err != nil {
			continue
		}
		out[pid] = ms
		tids, err := procfs.Tasks(pid)
		if err != nil {
			continue
		}
		for _, tid := range tids {
			kids, _ := procfs.Children(pid, tid)
			queue = append(queue, kids...)
		}
	}
	return out
}

// mappings returns the mappings of the frozen process pid with their VmFlags: the early ones if the
// layout is unchanged (see above), else read from smaps now. reused says which.
// Preconditions: pid is frozen.
func (e earlySmaps) mappings(pid int) (maps []procfs.Mapping, reused bool, err error) {
	early, ok := e[pid]
	if !ok {
		maps, err = procfs.Smaps(pid)
		return maps, false, err
	}
	if maps, err = procfs.Maps(pid); err != nil {
		return nil, false, err
	}
	if !sameLayout(maps, early) {
		maps, err = procfs.Smaps(pid)
		return maps, false, err
	}
	// Rss is what it was before the freeze: a lazy dump uses it to see areas that were wholly resident
	// then (lazy_scan.go). Anon stays zero, the dump does not use it.
	for i := range maps {
		maps[i].VmFlags, maps[i].Rss = early[i].VmFlags, early[i].Rss
	}
	return maps, true, nil
}

// sameLayout reports whether two readings list the same mappings: same ranges, permissions, backing.
func sameLayout(a, b []procfs.Mapping) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameMapping(a[i], b[i]) {
			return false
		}
	}
	return true
}

func sameMapping(x, y procfs.Mapping) bool {
	return x.Start == y.Start && x.End == y.End && x.Read == y.Read && x.Write == y.Write && x.Exec == y.Exec &&
		x.Shared == y.Shared && x.Offset == y.Offset && x.Major == y.Major && x.Minor == y.Minor &&
		x.Inode == y.Inode && x.Path == y.Path && x.Deleted == y.Deleted
}
