package uffd

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// region is a mapping owned by a test; the kernel gets its address, which
// only unsafe can take from the slice.
type region struct {
	addr uintptr
	mem  []byte
}

func newRegion(t *testing.T, mem []byte) *region {
	r := &region{addr: uintptr(unsafe.Pointer(&mem[0])), mem: mem}
	t.Cleanup(func() { r.unmap() })
	return r
}

func mapAnon(t *testing.T, pages int) *region {
	t.Helper()
	mem, err := unix.Mmap(-1, 0, pages*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	return newRegion(t, mem)
}

func mapShared(t *testing.T, fd int, pages int) *region {
	t.Helper()
	mem, err := unix.Mmap(fd, 0, pages*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap shared: %v", err)
	}
	return newRegion(t, mem)
}

// unmap releases what the region still owns. After the test moved or
// unmapped it behind the package's back, mem is nil and nothing happens.
func (r *region) unmap() {
	if r.mem != nil {
		unix.Munmap(r.mem)
		r.mem = nil
	}
}

func (r *region) bytes() []byte { return r.mem }

func (r *region) size() int { return len(r.mem) }

func (r *region) page(i int) uint64 { return uint64(r.addr) + uint64(i*pageSize) }
