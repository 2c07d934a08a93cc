package netlock

import (
	"errors"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// classify turns a failure to create a BPF object into an UnsupportedError when it means that the kernel
// or the caller's privileges do not allow it, keeping the errno.
func classify(feature string, err error) error {
	switch {
	case errors.Is(err, ebpf.ErrNotSupported),
		errors.Is(err, unix.ENOSYS),     // no bpf() system call (CONFIG_BPF_SYSCALL off)
		errors.Is(err, unix.EPERM),      // no CAP_BPF/CAP_SYS_ADMIN (or CAP_NET_ADMIN for tc programs)
		errors.Is(err, unix.EOPNOTSUPP): // BPF disabled for this kind of object
		return &UnsupportedError{Feature: feature, Err: err}
	}
	return err
}
