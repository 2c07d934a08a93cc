package kernel

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Userfaultfd feature bits as UFFDIO_API reports them (linux/userfaultfd.h).
const (
	UffdFeaturePagefaultFlagWP  uint64 = 1 << 0 // write-protect mode on anonymous memory
	UffdFeatureEventFork        uint64 = 1 << 1
	UffdFeatureEventRemap       uint64 = 1 << 2
	UffdFeatureEventRemove      uint64 = 1 << 3
	UffdFeatureMissingHugetlbfs uint64 = 1 << 4
	UffdFeatureMissingShmem     uint64 = 1 << 5
	UffdFeatureEventUnmap       uint64 = 1 << 6
	UffdFeatureSigbus           uint64 = 1 << 7
	UffdFeatureThreadID         uint64 = 1 << 8
	UffdFeatureMinorHugetlbfs   uint64 = 1 << 9
	UffdFeatureMinorShmem       uint64 = 1 << 10
	UffdFeatureExactAddress     uint64 = 1 << 11
	UffdFeatureWPHugetlbfsShmem uint64 = 1 << 12
	UffdFeatureWPUnpopulated    uint64 = 1 << 13
	UffdFeaturePoison           uint64 = 1 << 14
	UffdFeatureWPAsync          uint64 = 1 << 15
	UffdFeatureMove             uint64 = 1 << 16
)

var uffdFeatureNames = []struct {
	bit  uint64
	name string
}{
	{UffdFeaturePagefaultFlagWP, "PAGEFAULT_FLAG_WP"},
	{UffdFeatureEventFork, "EVENT_FORK"},
	{UffdFeatureEventRemap, "EVENT_REMAP"},
	{UffdFeatureEventRemove, "EVENT_REMOVE"},
	{UffdFeatureMissingHugetlbfs, "MISSING_HUGETLBFS"},
	{UffdFeatureMissingShmem, "MISSING_SHMEM"},
	{UffdFeatureEventUnmap, "EVENT_UNMAP"},
	{UffdFeatureSigbus, "SIGBUS"},
	{UffdFeatureThreadID, "THREAD_ID"},
	{UffdFeatureMinorHugetlbfs, "MINOR_HUGETLBFS"},
	{UffdFeatureMinorShmem, "MINOR_SHMEM"},
	{UffdFeatureExactAddress, "EXACT_ADDRESS"},
	{UffdFeatureWPHugetlbfsShmem, "WP_HUGETLBFS_SHMEM"},
	{UffdFeatureWPUnpopulated, "WP_UNPOPULATED"},
	{UffdFeaturePoison, "POISON"},
	{UffdFeatureWPAsync, "WP_ASYNC"},
	{UffdFeatureMove, "MOVE"},
}

// UffdFeatureNames names the bits set in f ("EVENT_FORK", "WP_ASYNC", ...);
// unknown bits come out as "bit N".
func UffdFeatureNames(f uint64) []string {
	var out []string
	for _, n := range uffdFeatureNames {
		if f&n.bit != 0 {
			out = append(out, n.name)
			f &^= n.bit
		}
	}
	for i := 0; i < 64; i++ {
		if f&(1<<i) != 0 {
			out = append(out, fmt.Sprintf("bit %d", i))
		}
	}
	return out
}

// ProbeUserfaultfd creates a userfaultfd (the syscall, or /dev/userfaultfd
// when the syscall is refused for lack of CAP_SYS_PTRACE with
// vm.unprivileged_userfaultfd=0), does the UFFDIO_API handshake asking for no
// feature (the kernel then reports all it has), registers a page in MISSING
// mode to see that UFFDIO_COPY is offered, and returns the feature bits.
// Missing-page handling on anonymous memory, the base of lazy restore, has no
// feature bit: a nil error means it works. WP, WP_ASYNC, MINOR and the
// EVENT_* bits are optional; check them in features.
func ProbeUserfaultfd() (features uint64, err error) {
	fd, err := openUserfaultfd()
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	features, ioctls, err := uffdAPI(fd)
	if err != nil {
		return 0, err
	}
	if ioctls&(1<<uffdioRegisterNr) == 0 {
		return features, missing(fmt.Sprintf("userfaultfd: UFFDIO_API offers no UFFDIO_REGISTER (ioctls %#x)", ioctls), nil)
	}
	if err := uffdRegisterProbe(fd); err != nil {
		return features, err
	}
	return features, nil
}

// describeFeatures is for messages: "EVENT_FORK|EVENT_REMAP|...".
func describeFeatures(f uint64) string {
	return strings.Join(UffdFeatureNames(f), "|")
}
