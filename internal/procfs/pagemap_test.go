package procfs

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestPagemapSelf(t *testing.T) {
	ps := os.Getpagesize()
	b, err := unix.Mmap(-1, 0, 4*ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(b)
	if err := unix.Madvise(b, unix.MADV_NOHUGEPAGE); err != nil {
		t.Fatal(err)
	}
	b[1*ps] = 7       // written: own page
	if b[2*ps] != 0 { // read only: maps the shared zero page
		t.Fatal("fresh page not zero")
	}

	pm, err := OpenPagemap(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	e := make([]uint64, 4)
	if err := pm.Read(sliceAddr(b), e); err != nil {
		t.Fatal(err)
	}
	if e[0]&PMPresent != 0 || e[3]&PMPresent != 0 {
		t.Errorf("untouched pages present: %#x %#x", e[0], e[3])
	}
	if e[1]&PMPresent == 0 || e[1]&PMExclusive == 0 || e[1]&PMFileShared != 0 || e[1]&PMSwapped != 0 {
		t.Errorf("written page entry %#x: want present, exclusive, anon", e[1])
	}
	if e[2]&PMPresent == 0 || e[2]&PMExclusive != 0 {
		t.Errorf("read page entry %#x: want present, not exclusive", e[2])
	}

	if os.Geteuid() == 0 {
		zero, err := ZeroPFN()
		if err != nil {
			t.Fatal(err)
		}
		if zero == 0 {
			t.Fatal("ZeroPFN = 0 as root")
		}
		if got := e[2] & PMPFNMask; got != zero {
			t.Errorf("read-only page PFN %#x, zero page PFN %#x", got, zero)
		}
		if got := e[1] & PMPFNMask; got == 0 || got == zero {
			t.Errorf("written page PFN %#x (zero page %#x)", got, zero)
		}
	}

	// Chunked reads give the same entries as one read.
	e2 := make([]uint64, 4)
	if err := pm.read(sliceAddr(b), e2, 1); err != nil {
		t.Fatal(err)
	}
	for i := range e {
		if e[i]&^PMPFNMask != e2[i]&^PMPFNMask {
			t.Errorf("entry %d: one read %#x, chunked %#x", i, e[i], e2[i])
		}
	}
}

func TestPagemapChildAndLimits(t *testing.T) {
	cmd := startSleep(t, "", "")
	pid := cmd.Process.Pid
	ms, err := Maps(pid)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := OpenPagemap(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	var present int
	for _, m := range ms {
		if m.Path == "[vsyscall]" {
			continue // above TASK_SIZE: pagemap ends before it
		}
		e := make([]uint64, m.Size()/4096)
		if err := pm.read(m.Start, e, 3); err != nil {
			t.Fatalf("%+v: %v", m, err)
		}
		for _, x := range e {
			if x&PMPresent != 0 {
				present++
			}
		}
	}
	if present == 0 {
		t.Error("no present page in a running sleep")
	}
	// Past the top of the user address space there is nothing to read.
	if err := pm.Read(1<<47, make([]uint64, 1)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("read past TASK_SIZE: %v", err)
	}
	if _, err := OpenPagemap(deadPid(t)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dead pid: %v", err)
	}
}
