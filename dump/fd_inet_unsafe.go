package dump

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// socketFilterLen returns the number of instructions of a classic BPF filter attached to the socket (0 for
// none). Asked with optlen 0, SO_GET_FILTER only reports the length (sk_get_filter); a non-zero optlen
// is taken as a count of 8-byte instructions, so getsockopt with an int-sized buffer would let the
// kernel write past it.
func socketFilterLen(fd int) (int, error) {
	var l uint32
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_GET_FILTER,
		0, uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, e
	}
	return int(l), nil
}
