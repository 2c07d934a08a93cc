package kernel

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Userfaultfd ABI (linux/userfaultfd.h); x/sys/unix does not carry it.
const (
	uffdAPIVersion    = 0xAA
	uffdioAPI         = 0xc018aa3f // _IOWR(0xAA, 0x3F, struct uffdio_api)
	uffdioRegister    = 0xc020aa00 // _IOWR(0xAA, 0x00, struct uffdio_register)
	userfaultfdIocNew = 0xaa00     // _IO(0xAA, 0x00) on /dev/userfaultfd

	uffdioRegisterNr = 0x00 // _UFFDIO_REGISTER, a bit in uffdio_api.ioctls
	uffdioCopyNr     = 0x03 // _UFFDIO_COPY, a bit in uffdio_register.ioctls
	uffdioZeropageNr = 0x04 // _UFFDIO_ZEROPAGE

	uffdRegisterModeMissing = 1 << 0
)

type uffdioAPIArg struct {
	api, features, ioctls uint64
}

type uffdioRegisterArg struct {
	start, len, mode, ioctls uint64
}

// openUserfaultfd returns a new userfaultfd (O_CLOEXEC|O_NONBLOCK).
func openUserfaultfd() (int, error) {
	const flags = unix.O_CLOEXEC | unix.O_NONBLOCK
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, flags, 0, 0)
	if e == 0 {
		return int(fd), nil
	}
	if !errors.Is(e, unix.EPERM) {
		return -1, missing("userfaultfd(2) (CONFIG_USERFAULTFD)", e)
	}
	// vm.unprivileged_userfaultfd=0 and no CAP_SYS_PTRACE: the device
	// node is the other door (Linux 6.1+), governed by its file mode.
	dev, err := unix.Open("/dev/userfaultfd", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, missing("userfaultfd: syscall refused (needs CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1) and /dev/userfaultfd not usable",
			errors.Join(e, err))
	}
	defer unix.Close(dev)
	fd, _, e2 := unix.Syscall(unix.SYS_IOCTL, uintptr(dev), userfaultfdIocNew, flags)
	if e2 != 0 {
		return -1, missing("userfaultfd: USERFAULTFD_IOC_NEW on /dev/userfaultfd", e2)
	}
	return int(fd), nil
}

// uffdAPI does the UFFDIO_API handshake with no feature requested, so the
// kernel answers with every feature and ioctl it supports.
func uffdAPI(fd int) (features, ioctls uint64, err error) {
	arg := uffdioAPIArg{api: uffdAPIVersion}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uffdioAPI, uintptr(unsafe.Pointer(&arg))); e != 0 {
		return 0, 0, missing("userfaultfd: UFFDIO_API handshake", e)
	}
	return arg.features, arg.ioctls, nil
}

// uffdRegisterProbe registers one fresh anonymous page in MISSING mode and
// checks that UFFDIO_COPY and UFFDIO_ZEROPAGE are offered for it. Closing
// the uffd (or unmapping) drops the registration.
func uffdRegisterProbe(fd int) error {
	ps := os.Getpagesize()
	b, err := unix.Mmap(-1, 0, ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("userfaultfd: mmap: %w", err)
	}
	defer unix.Munmap(b)
	arg := uffdioRegisterArg{
		start: sliceStart(b),
		len:   uint64(ps),
		mode:  uffdRegisterModeMissing,
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uffdioRegister, uintptr(unsafe.Pointer(&arg))); e != 0 {
		return missing("userfaultfd: UFFDIO_REGISTER of anonymous memory in MISSING mode", e)
	}
	const want = 1<<uffdioCopyNr | 1<<uffdioZeropageNr
	if arg.ioctls&want != want {
		return missing(fmt.Sprintf("userfaultfd: registered range offers ioctls %#x, lacks UFFDIO_COPY/ZEROPAGE", arg.ioctls), nil)
	}
	return nil
}
