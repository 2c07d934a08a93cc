package procfs

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sigevent is struct sigevent on linux/amd64 (64 bytes).
type sigevent struct {
	value  uint64
	signo  int32
	notify int32
	tid    int32
	_      [44]byte
}

// timerCreate calls timer_create(2) and deletes the timer at test end.
func timerCreate(t *testing.T, clock int, sev sigevent) int {
	t.Helper()
	var id int32
	_, _, e := unix.Syscall(unix.SYS_TIMER_CREATE, uintptr(clock), uintptr(unsafe.Pointer(&sev)), uintptr(unsafe.Pointer(&id)))
	if e != 0 {
		t.Fatalf("timer_create: %v", e)
	}
	t.Cleanup(func() { unix.Syscall(unix.SYS_TIMER_DELETE, uintptr(id), 0, 0) })
	return int(id)
}
