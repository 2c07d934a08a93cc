//go:build mebench

package pagesrv

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/uffd"
)

type meUffd struct{ u *uffd.FD }

func uffdNew() (*meUffd, error) {
	u, err := uffd.New(unix.O_CLOEXEC | unix.O_NONBLOCK)
	if err != nil {
		return nil, err
	}
	if _, _, err := u.API(0); err != nil {
		return nil, err
	}
	return &meUffd{u}, nil
}

func (m *meUffd) region(t *testing.T, size int) ([]byte, uint64) {
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	base := uint64(uintptr(unsafe.Pointer(&mem[0])))
	if _, err := m.u.Register(base, uint64(size), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	return mem, base
}

func (m *meUffd) copy(t *testing.T, addr uint64, b []byte) {
	if _, err := m.u.Copy(addr, b, 0); err != nil {
		panic(err)
	}
}

func (m *meUffd) release(mem []byte, base uint64) {
	m.u.Unregister(base, uint64(len(mem)))
	unix.Munmap(mem)
}
