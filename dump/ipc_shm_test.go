package dump

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

var readSink byte

// TestResidentExtents: the data of a segment are its pages in memory that are not all zeros; a page
// only read (which shared memory allocates) and pages never touched are holes, and the last page counts
// only up to the end of the segment.
func TestResidentExtents(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	const size = 4*4096 + 10
	id, err := unix.SysvShmGet(unix.IPC_PRIVATE, size, unix.IPC_CREAT|0o600)
	if err != nil {
		t.Fatal(err)
	}
	b, err := unix.SysvShmAttach(id, 0, 0)
	if _, rerr := unix.SysvShmCtl(id, unix.IPC_RMID, nil); rerr != nil { // gone with the detach
		t.Error(rerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer unix.SysvShmDetach(b)
	b[4096+7] = 1
	readSink = b[2*4096] // read: in memory now, but zeros
	b[3*4096] = 2
	b[size-1] = 3
	got, err := residentExtents(b, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := "[[4096 8192] [12288 16394]]"; fmt.Sprint(got) != want {
		t.Errorf("extents %v, want %s", got, want)
	}
	// With pages in swap, every page is looked at; still no zero page.
	if got, err = residentExtents(b, true); err != nil || fmt.Sprint(got) != "[[4096 8192] [12288 16394]]" {
		t.Errorf("extents with swap %v (%v)", got, err)
	}
}
