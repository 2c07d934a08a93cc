package kernel

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// PAGEMAP_SCAN ABI (linux/fs.h, Linux 6.7+).
const (
	pagemapScan   = 0xc0606610 // _IOWR('f', 16, struct pm_scan_arg)
	pageIsPresent = 1 << 3
)

type pmScanArg struct {
	size, flags, start, end, walkEnd, vec, vecLen, maxPages uint64
	categoryInverted, categoryMask, categoryAnyofMask       uint64
	returnMask                                              uint64
}

type pageRegion struct {
	start, end, categories uint64
}

var _ [96 - unsafe.Sizeof(pmScanArg{})]struct{}
var _ [unsafe.Sizeof(pmScanArg{}) - 96]struct{}

// pagemapScanPresent returns the present regions of b.
func pagemapScanPresent(pagemapFd int, b []byte) ([]pageRegion, error) {
	vec := make([]pageRegion, 4)
	// The kernel writes vec through a pointer held as an integer in arg,
	// which the syscall rules do not keep in place: pin it.
	var pin runtime.Pinner
	pin.Pin(&vec[0])
	defer pin.Unpin()
	arg := pmScanArg{
		size:         uint64(unsafe.Sizeof(pmScanArg{})),
		start:        sliceStart(b),
		end:          sliceStart(b) + uint64(len(b)),
		vec:          uint64(uintptr(unsafe.Pointer(&vec[0]))),
		vecLen:       uint64(len(vec)),
		categoryMask: pageIsPresent,
		returnMask:   pageIsPresent,
	}
	n, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(pagemapFd), pagemapScan, uintptr(unsafe.Pointer(&arg)))
	if e != 0 {
		return nil, missing("PAGEMAP_SCAN ioctl on /proc/self/pagemap (Linux 6.7+)", e)
	}
	return vec[:min(int(n), len(vec))], nil
}
