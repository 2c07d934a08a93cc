//go:build mebench

package uffd

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestMeCopyRate(t *testing.T) {
	u, err := New(unix.O_CLOEXEC | unix.O_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, _, err := u.API(0); err != nil {
		t.Fatal(err)
	}
	piece, _ := strconv.Atoi(os.Getenv("ME_PIECE"))
	if piece == 0 {
		piece = 256 << 10
	}
	const size = 2 << 30
	for _, mode := range []string{"hot", "cold"} {
		mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			t.Fatal(err)
		}
		base := uint64(uintptr(unsafe.Pointer(&mem[0])))
		if _, err := u.Register(base, size, ModeMissing); err != nil {
			t.Fatal(err)
		}
		var src []byte
		if mode == "hot" {
			src = make([]byte, piece)
		} else {
			src = make([]byte, size)
		}
		for i := range src {
			src[i] = byte(i)
		}
		var ru0, ru1 syscall.Rusage
		syscall.Getrusage(0, &ru0)
		start := time.Now()
		for off := 0; off < size; off += piece {
			s := src
			if mode == "cold" {
				s = src[off : off+piece]
			}
			if _, err := u.Copy(base+uint64(off), s, 0); err != nil {
				t.Fatal(err)
			}
		}
		d := time.Since(start)
		syscall.Getrusage(0, &ru1)
		cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
		fmt.Printf("ME %s piece %d: %v %.0f MB/s cpu %v\n", mode, piece, d, float64(size)/d.Seconds()/1e6, cpu)
		u.Unregister(base, size)
		unix.Munmap(mem)
		src = nil
	}
}
