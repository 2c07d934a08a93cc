package kernel

import "unsafe"

// sliceStart is the address of a non-empty mmap'ed slice (memory the Go
// runtime does not move).
func sliceStart(b []byte) uint64 {
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}
