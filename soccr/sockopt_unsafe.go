package soccr

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// tcpInfoHead is the first eight bytes of struct tcp_info. golang.org/x/sys/unix.TCPInfo cannot be used: it
// models the byte holding the tcpi_snd_wscale:4/tcpi_rcv_wscale:4 bit-field as padding, and that byte is
// what a restore needs.
type tcpInfoHead struct {
	State       uint8
	CaState     uint8
	Retransmits uint8
	Probes      uint8
	Backoff     uint8
	Options     uint8
	Wscale      uint8 // low nibble: snd_wscale, high nibble: rcv_wscale
	Flags       uint8
}

// tcpRepairWindow mirrors struct tcp_repair_window (include/uapi/linux/tcp.h, Linux 4.8+).
type tcpRepairWindow struct {
	SndWl1    uint32
	SndWnd    uint32
	MaxWindow uint32
	RcvWnd    uint32
	RcvWup    uint32
}

func getsockopt(fd, level, opt int, p unsafe.Pointer, size uintptr) (uintptr, error) {
	l := uint32(size)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, e
	}
	return uintptr(l), nil
}

func setsockopt(fd, level, opt int, p unsafe.Pointer, size uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(p), size, 0)
	if e != 0 {
		return e
	}
	return nil
}

// getTCPInfoHead reads the leading fields of TCP_INFO. The kernel copies min(optlen, sizeof(tcp_info))
// bytes, so asking for eight bytes is valid on every kernel.
func getTCPInfoHead(fd int) (tcpInfoHead, error) {
	var ti tcpInfoHead
	n, err := getsockopt(fd, unix.SOL_TCP, unix.TCP_INFO, unsafe.Pointer(&ti), unsafe.Sizeof(ti))
	if err != nil {
		return ti, err
	}
	if n != unsafe.Sizeof(ti) {
		return ti, unix.EINVAL
	}
	return ti, nil
}

func getRepairWindow(fd int) (tcpRepairWindow, error) {
	var w tcpRepairWindow
	_, err := getsockopt(fd, unix.SOL_TCP, unix.TCP_REPAIR_WINDOW, unsafe.Pointer(&w), unsafe.Sizeof(w))
	return w, err
}

func setRepairWindow(fd int, w tcpRepairWindow) error {
	return setsockopt(fd, unix.SOL_TCP, unix.TCP_REPAIR_WINDOW, unsafe.Pointer(&w), unsafe.Sizeof(w))
}

// setUint32 sets an option whose kernel side reads a u32 (TCP_QUEUE_SEQ, TCP_TIMESTAMP): SetsockoptInt
// would pass an int, which is the same size on Linux but not the same type in the ABI.
func setUint32(fd, level, opt int, v uint32) error {
	return setsockopt(fd, level, opt, unsafe.Pointer(&v), unsafe.Sizeof(v))
}

func getUint32(fd, level, opt int) (uint32, error) {
	var v uint32
	_, err := getsockopt(fd, level, opt, unsafe.Pointer(&v), unsafe.Sizeof(v))
	return v, err
}
