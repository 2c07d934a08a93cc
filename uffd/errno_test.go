package uffd

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

// The errno variants report what Copy and ZeroPage report, as bare errnos.
func TestCopyErrno(t *testing.T) {
	u := newFD(t, 0)
	r := mapAnon(t, 8)
	if _, err := u.Register(r.page(0), uint64(r.size()), ModeMissing); err != nil {
		t.Fatal(err)
	}
	if n, errno := u.CopyErrno(r.page(3), pattern(3), 0); n != pageSize || errno != 0 {
		t.Fatalf("CopyErrno = %d, %v", n, errno)
	}
	if n, errno := u.CopyErrno(r.page(3), pattern(4), 0); n != 0 || errno != unix.EEXIST {
		t.Fatalf("CopyErrno over a present page = %d, %v; want 0, EEXIST", n, errno)
	}
	src := bytes.Repeat(pattern(6), 4)
	if n, errno := u.CopyErrno(r.page(1), src, 0); n != 2*pageSize || errno != unix.EAGAIN {
		t.Fatalf("partial CopyErrno = %d, %v; want %d, EAGAIN", n, errno, 2*pageSize)
	}
	if n, errno := u.CopyErrno(r.page(0), nil, 0); n != 0 || errno != unix.EINVAL {
		t.Fatalf("empty CopyErrno = %d, %v", n, errno)
	}
	if n, errno := u.ZeroPageErrno(r.page(5), 2*pageSize, 0); n != 2*pageSize || errno != 0 {
		t.Fatalf("ZeroPageErrno = %d, %v", n, errno)
	}
	if n, errno := u.ZeroPageErrno(r.page(5), pageSize, 0); n != 0 || errno != unix.EEXIST {
		t.Fatalf("ZeroPageErrno over a present page = %d, %v; want EEXIST", n, errno)
	}
	mem := r.bytes()
	if !bytes.Equal(mem[pageSize:2*pageSize], pattern(6)) || !bytes.Equal(mem[3*pageSize:4*pageSize], pattern(3)) {
		t.Error("page contents wrong")
	}
	if mem[5*pageSize+17] != 0 || mem[6*pageSize+9] != 0 {
		t.Error("zero pages are not zero")
	}
	// Not registered: ENOENT.
	other := mapAnon(t, 1)
	if _, errno := u.CopyErrno(other.page(0), pattern(1), 0); errno != unix.ENOENT {
		t.Errorf("CopyErrno outside the ranges: %v, want ENOENT", errno)
	}
}

// The hot-path variants do not allocate, not even for an expected failure.
func TestCopyErrnoAllocs(t *testing.T) {
	u := newFD(t, 0)
	r := mapAnon(t, 4)
	if _, err := u.Register(r.page(0), uint64(r.size()), ModeMissing); err != nil {
		t.Fatal(err)
	}
	src := pattern(1)
	if _, errno := u.CopyErrno(r.page(0), src, 0); errno != 0 {
		t.Fatal(errno)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, errno := u.CopyErrno(r.page(0), src, 0); errno != unix.EEXIST {
			t.Fatal(errno)
		}
		if _, errno := u.ZeroPageErrno(r.page(0), pageSize, 0); errno != unix.EEXIST {
			t.Fatal(errno)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per EEXIST round", allocs)
	}
}
