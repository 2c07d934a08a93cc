package dump

import (
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/lazyr/lazyr/internal/procfs"
)

// TestEarlySmaps: VmFlags read before the freeze are used when the layout is unchanged, and smaps is
// read again when it changed; either way each mapping gets the flags smaps shows for it.
func TestEarlySmaps(t *testing.T) {
	child := exec.Command("sleep", "60")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		child.Process.Kill()
		child.Wait()
	}()
	pid := child.Process.Pid
	// Let the dynamic loader finish: the layout must hold still.
	var last []procfs.Mapping
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		maps, err := procfs.Maps(pid)
		if err != nil {
			t.Fatal(err)
		}
		if last != nil && sameLayout(maps, last) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the child's layout keeps changing")
		}
		last = maps
	}
	early := readSmapsEarly(pid)
	if len(early[pid]) == 0 {
		t.Fatal("no early smaps of the child")
	}
	want, err := procfs.Smaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	check := func(maps []procfs.Mapping) {
		t.Helper()
		if len(maps) != len(want) {
			t.Fatalf("%d mappings, want %d", len(maps), len(want))
		}
		for i := range maps {
			if !sameMapping(maps[i], want[i]) || !slices.Equal(maps[i].VmFlags, want[i].VmFlags) {
				t.Fatalf("mapping %d: %+v, want %+v", i, maps[i], want[i])
			}
		}
	}

	maps, reused, err := early.mappings(pid)
	if err != nil {
		t.Fatal(err)
	}
	if !reused {
		t.Error("an unchanged layout did not reuse the early VmFlags")
	}
	check(maps)

	// A layout that changed since the early read (here: the early read lacks a mapping).
	early[pid] = early[pid][1:]
	maps, reused, err = early.mappings(pid)
	if err != nil {
		t.Fatal(err)
	}
	if reused {
		t.Error("a changed layout reused the early VmFlags")
	}
	check(maps)

	// A process the early read did not see is read in the window.
	delete(early, pid)
	if maps, reused, err = early.mappings(pid); err != nil || reused {
		t.Fatalf("unknown process: reused %v, %v", reused, err)
	}
	check(maps)
}
