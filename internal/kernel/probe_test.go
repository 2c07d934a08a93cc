package kernel

import (
	"errors"
	"os"
	"testing"
)

// fdCount is the number of open fds of this process.
func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestProbe(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the expected feature list is that of root on the project machine")
	}
	before := fdCount(t)
	feats := Probe()
	after := fdCount(t)
	if after != before {
		t.Errorf("Probe leaked fds: %d before, %d after", before, after)
	}

	// This machine (see DESIGN.md) has everything but soft-dirty.
	wantOK := []string{"ptrace", "pidfd_getfd", "clone3_set_tid", "userfaultfd", "uffd_wp", "uffd_wp_async",
		"uffd_minor_shmem", "uffd_event_fork", "uffd_event_remap", "uffd_event_remove", "uffd_event_unmap",
		"pagemap_scan", "tcp_repair", "bpf"}
	wantMissing := []string{"mem_soft_dirty"}
	if len(feats) != len(wantOK)+len(wantMissing) {
		t.Errorf("got %d features, want %d: %v", len(feats), len(wantOK)+len(wantMissing), feats)
	}
	got := map[string]error{}
	for _, f := range feats {
		t.Logf("%-18s %v", f.Name, f.Err)
		got[f.Name] = f.Err
	}
	for _, n := range wantOK {
		if err, ok := got[n]; !ok || err != nil {
			t.Errorf("%s: present=%v err=%v, want supported", n, ok, err)
		}
	}
	for _, n := range wantMissing {
		if err, ok := got[n]; !ok || !errors.Is(err, ErrNotSupported) {
			t.Errorf("%s: present=%v err=%v, want ErrNotSupported", n, ok, err)
		}
	}
}
