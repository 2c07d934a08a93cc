package kernel

import "fmt"

// Feature is the result of one probe; Err == nil means supported.
type Feature struct {
	Name string
	Err  error
}

// uffdFeatures are the userfaultfd features lazyr uses, each reported as
// its own Feature by Probe.
var uffdFeatures = []struct {
	name string
	bit  uint64
	why  string
}{
	{"uffd_wp", UffdFeaturePagefaultFlagWP, "write-protect faults on anonymous memory"},
	{"uffd_wp_async", UffdFeatureWPAsync, "asynchronous write-protect (dirty tracking with PAGEMAP_SCAN, Linux 6.7+)"},
	{"uffd_minor_shmem", UffdFeatureMinorShmem, "minor faults on shmem (Linux 5.14+)"},
	{"uffd_event_fork", UffdFeatureEventFork, "fork events"},
	{"uffd_event_remap", UffdFeatureEventRemap, "mremap events"},
	{"uffd_event_remove", UffdFeatureEventRemove, "madvise(DONTNEED/REMOVE) events"},
	{"uffd_event_unmap", UffdFeatureEventUnmap, "munmap events"},
}

// Probe runs every probe, in a fixed order. Each cleans up after itself (no
// leaked fds, processes, BPF objects or mappings).
func Probe() []Feature {
	out := []Feature{
		{"ptrace", ProbePtrace()},
		{"pidfd_getfd", ProbePidfdGetfd()},
		{"clone3_set_tid", ProbeClone3SetTid()},
	}
	feats, err := ProbeUserfaultfd()
	out = append(out, Feature{"userfaultfd", err})
	for _, f := range uffdFeatures {
		var ferr error
		switch {
		case err != nil:
			ferr = missing("userfaultfd "+f.why+": no usable userfaultfd", nil)
		case feats&f.bit == 0:
			ferr = missing(fmt.Sprintf("userfaultfd %s: kernel reports features %s", f.why, describeFeatures(feats)), nil)
		}
		out = append(out, Feature{f.name, ferr})
	}
	return append(out,
		Feature{"pagemap_scan", ProbePagemapScan()},
		Feature{"tcp_repair", ProbeTCPRepair()},
		Feature{"bpf", ProbeBPF()},
		Feature{"mem_soft_dirty", ProbeMemSoftDirty()},
	)
}
