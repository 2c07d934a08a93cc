package kernel

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// tcpRepairWindowArg is struct tcp_repair_window (Linux 4.8+).
type tcpRepairWindowArg struct {
	sndWl1, sndWnd, maxWindow, rcvWnd, rcvWup uint32
}

// tcpRepairWindow reads TCP_REPAIR_WINDOW; the kernel insists on the exact
// struct size, which x/sys/unix has no getter for.
func tcpRepairWindow(fd int) error {
	var w tcpRepairWindowArg
	l := uint32(unsafe.Sizeof(w))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW,
		uintptr(unsafe.Pointer(&w)), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return missing("tcp_repair: TCP_REPAIR_WINDOW (Linux 4.8+)", e)
	}
	if w.maxWindow == 0 && w.sndWnd == 0 && w.rcvWnd == 0 {
		return fmt.Errorf("tcp_repair: TCP_REPAIR_WINDOW of a connected socket is all zero: %+v", w)
	}
	return nil
}
