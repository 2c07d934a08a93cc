package kernel

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/internal/procfs"
)

// children lists the live children of this process (over all its threads).
func children(t *testing.T) []int {
	t.Helper()
	tasks, err := procfs.Tasks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, tid := range tasks {
		c, err := procfs.Children(os.Getpid(), tid)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		out = append(out, c...)
	}
	return out
}

// noLeaks runs fn and fails if it left fds or children behind.
func noLeaks(t *testing.T, fn func()) {
	t.Helper()
	fds, kids := fdCount(t), children(t)
	fn()
	if n := fdCount(t); n != fds {
		t.Errorf("fds: %d before, %d after", fds, n)
	}
	if k := children(t); len(k) > len(kids) {
		t.Errorf("children: %v before, %v after", kids, k)
	}
}

func TestProbePtrace(t *testing.T) {
	noLeaks(t, func() {
		if err := ProbePtrace(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestProbePidfdGetfd(t *testing.T) {
	noLeaks(t, func() {
		if err := ProbePidfdGetfd(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestProbeClone3SetTid(t *testing.T) {
	// Reaching the end at all shows the ABI call created no thread: one
	// without Go state running on our stack would crash the process.
	noLeaks(t, func() {
		if err := ProbeClone3SetTid(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestProbeUserfaultfd(t *testing.T) {
	var feats uint64
	noLeaks(t, func() {
		var err error
		if feats, err = ProbeUserfaultfd(); err != nil {
			t.Fatal(err)
		}
	})
	// What DESIGN.md records for this machine.
	want := UffdFeatureEventFork | UffdFeatureEventRemap | UffdFeatureEventRemove | UffdFeatureEventUnmap |
		UffdFeaturePagefaultFlagWP | UffdFeatureWPAsync | UffdFeatureMinorShmem | UffdFeatureMissingShmem
	if feats&want != want {
		t.Errorf("features %s lack %s", describeFeatures(feats), describeFeatures(want&^feats))
	}
	t.Logf("userfaultfd features: %s", describeFeatures(feats))
}

func TestUffdFeatureNames(t *testing.T) {
	got := UffdFeatureNames(UffdFeatureEventFork | UffdFeatureWPAsync | 1<<40)
	if !slices.Equal(got, []string{"EVENT_FORK", "WP_ASYNC", "bit 40"}) {
		t.Errorf("names %v", got)
	}
	if UffdFeatureNames(0) != nil {
		t.Error("names of 0")
	}
	// Every bit 0..16 has a name of its own.
	seen := map[string]bool{}
	for i := 0; i <= 16; i++ {
		n := UffdFeatureNames(1 << i)
		if len(n) != 1 || seen[n[0]] || strings.HasPrefix(n[0], "bit ") {
			t.Errorf("bit %d: %v", i, n)
		}
		seen[n[0]] = true
	}
}

func TestProbePagemapScan(t *testing.T) {
	noLeaks(t, func() {
		if err := ProbePagemapScan(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestProbeTCPRepair(t *testing.T) {
	noLeaks(t, func() {
		if err := ProbeTCPRepair(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestProbeBPF(t *testing.T) {
	noLeaks(t, func() {
		if err := ProbeBPF(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestProbeMemSoftDirtyMissingHere(t *testing.T) {
	var err error
	noLeaks(t, func() { err = ProbeMemSoftDirty() })
	// DESIGN.md: CONFIG_MEM_SOFT_DIRTY is off on this machine.
	if !errors.Is(err, ErrNotSupported) {
		t.Errorf("soft-dirty: %v, want ErrNotSupported", err)
	}
}

func TestMissingKeepsErrno(t *testing.T) {
	err := missing("thing", unix.EPERM)
	if !errors.Is(err, ErrNotSupported) || !errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOENT) {
		t.Errorf("%v", err)
	}
	if err := missing("thing", nil); !errors.Is(err, ErrNotSupported) || err.Error() != "thing: not supported" {
		t.Errorf("%v", err)
	}
}
