package procfs

import "unsafe"

// entryBytes views pagemap entries as the bytes pread fills, so a large read
// needs no second buffer and no copy. Pagemap entries are host-endian u64s,
// which is exactly the memory layout of a []uint64.
func entryBytes(e []uint64) []byte {
	if len(e) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&e[0])), len(e)*pmEntrySize)
}

// sliceAddr is the virtual address of a non-empty mmap'ed slice.
func sliceAddr(b []byte) uint64 {
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}
