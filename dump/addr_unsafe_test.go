package dump

import "unsafe"

// addrOf is the address of b's first byte, for tests that read their own memory as a task's.
func addrOf(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }
