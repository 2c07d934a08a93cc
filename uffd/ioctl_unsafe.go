package uffd

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Mirrors of the uapi structs. All fields are __u64/__s64, so Go's layout
// equals the C one (checked against the header in the tests).
type uffdioAPI struct {
	api      uint64
	features uint64
	ioctls   uint64
}

type uffdioRange struct {
	start uint64
	len   uint64
}

type uffdioRegister struct {
	rng    uffdioRange
	mode   uint64
	ioctls uint64
}

type uffdioCopy struct {
	dst  uint64
	src  uint64
	len  uint64
	mode uint64
	copy int64
}

type uffdioZeroPage struct {
	rng      uffdioRange
	mode     uint64
	zeropage int64
}

type uffdioWriteProtect struct {
	rng  uffdioRange
	mode uint64
}

type uffdioContinue struct {
	rng    uffdioRange
	mode   uint64
	mapped int64
}

func (u *FD) ioctl(req uintptr, arg unsafe.Pointer) error {
	if errno := u.ioctlErrno(req, arg); errno != 0 {
		return errno
	}
	return nil
}

// ioctlErrno issues the ioctl, retrying on EINTR, and returns the errno (0
// on success).
func (u *FD) ioctlErrno(req uintptr, arg unsafe.Pointer) unix.Errno {
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(u.fd), req, uintptr(arg))
		if errno != unix.EINTR {
			return errno
		}
	}
}

// API performs the UFFDIO_API handshake, enabling features. It returns the
// feature set the kernel reports as available (a superset of what was
// enabled) and the mask of fd-level ioctls (bits 1<<IoctlXxx). It can
// succeed only once per userfaultfd. When the kernel lacks some requested
// features the error is a *MissingFeaturesError naming them.
func (u *FD) API(features uint64) (got uint64, ioctls uint64, err error) {
	a := uffdioAPI{api: APIVersion, features: features}
	if errno := u.ioctl(ioctlAPI, unsafe.Pointer(&a)); errno != nil {
		return 0, 0, apiError(features, errno)
	}
	return a.features, a.ioctls, nil
}

// Register registers [start, start+length) in the given modes (ModeMissing,
// ModeWP, ModeMinor). It returns the mask of range ioctls available on it.
func (u *FD) Register(start, length uint64, mode uint64) (ioctls uint64, err error) {
	r := uffdioRegister{rng: uffdioRange{start, length}, mode: mode}
	if errno := u.ioctl(ioctlRegister, unsafe.Pointer(&r)); errno != nil {
		return 0, fmt.Errorf("UFFDIO_REGISTER [%#x,+%#x) mode %#x: %w", start, length, mode, errno)
	}
	return r.ioctls, nil
}

// Unregister removes [start, start+length) from the userfaultfd. Blocked
// faults in it are woken and then see ordinary memory.
func (u *FD) Unregister(start, length uint64) error {
	r := uffdioRange{start, length}
	if errno := u.ioctl(ioctlUnregister, unsafe.Pointer(&r)); errno != nil {
		return fmt.Errorf("UFFDIO_UNREGISTER [%#x,+%#x): %w", start, length, errno)
	}
	return nil
}

// Wake wakes threads blocked on faults in [start, start+length), for use
// after Copy/ZeroPage with a DONTWAKE mode.
func (u *FD) Wake(start, length uint64) error {
	r := uffdioRange{start, length}
	if errno := u.ioctl(ioctlWake, unsafe.Pointer(&r)); errno != nil {
		return fmt.Errorf("UFFDIO_WAKE [%#x,+%#x): %w", start, length, errno)
	}
	return nil
}

// Copy atomically fills the missing pages at dst with src (a multiple of
// the page size) and wakes the faulting threads unless CopyModeDontWake.
//
// It returns the number of bytes copied, also on error. Kernel quirk: when
// the copy stops part-way the ioctl fails with EAGAIN whatever stopped it,
// and n > 0 says how far it got; retrying the rest from dst+n reports the
// real cause. With n == 0 the errno is the cause itself: EEXIST, the page
// at dst is already present (count it as done); EAGAIN, a non-cooperative
// event (fork, mremap, ...) is in flight and must be read before retrying;
// ESRCH, the target mm is gone; ENOENT, no registered VMA covers dst.
func (u *FD) Copy(dst uint64, src []byte, mode uint64) (int64, error) {
	n, errno := u.CopyErrno(dst, src, mode)
	return progress(n, errno, "UFFDIO_COPY", dst, uint64(len(src)))
}

// CopyErrno is Copy for hot paths: the same ioctl and results, but the
// error is the bare errno (0 on success). Results a caller expects and
// handles (EEXIST, EAGAIN) then cost no allocation.
func (u *FD) CopyErrno(dst uint64, src []byte, mode uint64) (int64, unix.Errno) {
	if len(src) == 0 {
		return 0, unix.EINVAL
	}
	c := uffdioCopy{
		dst:  dst,
		src:  uint64(uintptr(unsafe.Pointer(&src[0]))),
		len:  uint64(len(src)),
		mode: mode,
	}
	errno := u.ioctlErrno(ioctlCopy, unsafe.Pointer(&c))
	// src is referenced only through an integer field: keep it reachable
	// until the kernel is done reading it.
	runtime.KeepAlive(src)
	return max(c.copy, 0), errno
}

// ZeroPage maps the zero page over the missing pages of [start,
// start+length). Results are reported like Copy's.
func (u *FD) ZeroPage(start, length uint64, mode uint64) (int64, error) {
	n, errno := u.ZeroPageErrno(start, length, mode)
	return progress(n, errno, "UFFDIO_ZEROPAGE", start, length)
}

// ZeroPageErrno is ZeroPage with the bare errno, like CopyErrno.
func (u *FD) ZeroPageErrno(start, length uint64, mode uint64) (int64, unix.Errno) {
	z := uffdioZeroPage{rng: uffdioRange{start, length}, mode: mode}
	errno := u.ioctlErrno(ioctlZeroPage, unsafe.Pointer(&z))
	return max(z.zeropage, 0), errno
}

// Continue resolves minor faults (ModeMinor) in [start, start+length) by
// mapping the pages already in the page cache. Results are reported like
// Copy's.
func (u *FD) Continue(start, length uint64, mode uint64) (int64, error) {
	c := uffdioContinue{rng: uffdioRange{start, length}, mode: mode}
	errno := u.ioctlErrno(ioctlContinue, unsafe.Pointer(&c))
	return progress(c.mapped, errno, "UFFDIO_CONTINUE", start, length)
}

// WriteProtect sets (wp) or clears write protection on [start,
// start+length), which must be registered with ModeWP. Clearing wakes
// threads blocked on write-protect faults there.
func (u *FD) WriteProtect(start, length uint64, wp bool) error {
	w := uffdioWriteProtect{rng: uffdioRange{start, length}}
	if wp {
		w.mode = WriteProtectModeWP
	}
	if errno := u.ioctl(ioctlWriteProtect, unsafe.Pointer(&w)); errno != nil {
		return fmt.Errorf("UFFDIO_WRITEPROTECT [%#x,+%#x) wp=%v: %w", start, length, wp, errno)
	}
	return nil
}

// progress turns the kernel's "bytes done or -errno" result field plus the
// ioctl's errno into (bytes done, error).
func progress(done int64, errno unix.Errno, op string, start, length uint64) (int64, error) {
	done = max(done, 0)
	if errno != 0 {
		return done, fmt.Errorf("%s [%#x,+%#x) after %d bytes: %w", op, start, length, done, errno)
	}
	return done, nil
}
