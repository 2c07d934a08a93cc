// Package kernel probes the kernel features lazyr depends on, for `lazyr
// check` and for callers that want to fail early with a plain reason.
//
// Each probe exercises the real interface the way lazyr will use it (seize
// a child with ptrace, pull an fd with pidfd_getfd, hand-shake a
// userfaultfd, run a PAGEMAP_SCAN, load a BPF program, ...) instead of
// reading config files or comparing version numbers, and undoes everything
// it did: every fd is closed, every child killed and reaped, every mapping
// unmapped. A missing feature is an error that wraps ErrNotSupported and,
// where the kernel gave one, the errno (errors.Is(err, unix.EPERM) tells a
// missing capability from a missing kernel option).
//
// Raw syscalls and ioctl structs live in the *_unsafe.go files.
package kernel
