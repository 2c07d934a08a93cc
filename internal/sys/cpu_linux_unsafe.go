package sys

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// CurrentCPU returns the CPU the calling thread runs on (getcpu(2); x/sys/unix has no wrapper). The
// answer may be stale as soon as it is returned unless the thread is pinned.
func CurrentCPU() (int, error) {
	var cpu uint32
	_, _, e := unix.RawSyscall(unix.SYS_GETCPU, uintptr(unsafe.Pointer(&cpu)), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(cpu), nil
}
