package kernel

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// PAGEMAP_SCAN ABI (linux/fs.h, Linux 6.7+).
const pagemapScan = 0xc0606610 // _IOWR('f', 16, struct pm_scan_arg)

type pmScanArg struct {
	size, flags, start, end, walkEnd, vec, vecLen, maxPages uint64
	categoryInverted, categoryMask, categoryAnyofMask       uint64
	returnMask                                              uint64
}

var _ [96 - unsafe.Sizeof(pmScanArg{})]struct{}
var _ [unsafe.Sizeof(pmScanArg{}) - 96]struct{}

// PagemapScan runs PAGEMAP_SCAN over [q.Start, q.End) of the address space whose /proc/PID/pagemap is
// pagemapFd and fills vec with the regions of selected pages (consecutive selected pages with the same
// categories under q.Return form one region). It returns how many regions it filled and where the walk
// stopped: short of q.End when vec filled up, so the caller continues from there. A kernel without the
// ioctl (before 6.7) fails with ENOTTY, one that does not know a category bit with EINVAL; both wrap
// ErrNotSupported.
func PagemapScan(pagemapFd int, q PagemapQuery, vec []PageRegion) (n int, walkEnd uint64, err error) {
	if len(vec) == 0 {
		return 0, q.Start, nil
	}
	// The kernel writes vec through a pointer held as an integer in arg: pin it.
	var pin runtime.Pinner
	pin.Pin(&vec[0])
	defer pin.Unpin()
	arg := pmScanArg{
		size:              uint64(unsafe.Sizeof(pmScanArg{})),
		start:             q.Start,
		end:               q.End,
		vec:               uint64(uintptr(unsafe.Pointer(&vec[0]))),
		vecLen:            uint64(len(vec)),
		categoryInverted:  q.Inverted,
		categoryMask:      q.Mask,
		categoryAnyofMask: q.AnyOf,
		returnMask:        q.Return,
	}
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(pagemapFd), pagemapScan, uintptr(unsafe.Pointer(&arg)))
		switch e {
		case 0:
			return min(int(r), len(vec)), arg.walkEnd, nil
		case unix.EINTR:
			continue
		case unix.ENOTTY, unix.EINVAL:
			return 0, q.Start, missing("PAGEMAP_SCAN ioctl (Linux 6.7+; category bits of later kernels)", e)
		}
		return 0, q.Start, fmt.Errorf("PAGEMAP_SCAN [%#x, %#x): %w", q.Start, q.End, e)
	}
}

var _ [24 - unsafe.Sizeof(PageRegion{})]struct{}
var _ [unsafe.Sizeof(PageRegion{}) - 24]struct{}
