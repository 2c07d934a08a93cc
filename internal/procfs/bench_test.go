package procfs

import (
	"bytes"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func BenchmarkParseSmaps(b *testing.B) {
	data, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := parseSmaps(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSmapsSelf(b *testing.B) {
	for b.Loop() {
		if _, err := Smaps(os.Getpid()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPagemapRead reads the entries of a 256 MiB mapping, half of it
// touched; bytes/s is address space covered per second.
func BenchmarkPagemapRead(b *testing.B) {
	const size = 256 << 20
	m, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Munmap(m)
	for i := 0; i < size/2; i += 4096 {
		m[i] = 1
	}
	pm, err := OpenPagemap(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	defer pm.Close()
	e := make([]uint64, size/4096)
	b.SetBytes(size)
	for b.Loop() {
		if err := pm.Read(sliceAddr(m), e); err != nil {
			b.Fatal(err)
		}
	}
}
