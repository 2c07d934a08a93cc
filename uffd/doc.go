// Package uffd is a small Go API over Linux userfaultfd(2).
//
// A userfaultfd lets one process resolve the page faults of another (or its
// own) address space: ranges are registered with UFFDIO_REGISTER, a first
// touch of a missing page then blocks the faulting thread and queues a
// message on the fd, and a handler fills the page with UFFDIO_COPY or
// UFFDIO_ZEROPAGE, which also wakes the thread. With the non-cooperative
// features (EVENT_FORK, EVENT_REMAP, EVENT_REMOVE, EVENT_UNMAP) the fd also
// reports changes the process makes to its own address space.
//
// All ioctls act on the mm of the task that created the fd, not on the
// caller's: an fd pulled out of another task with pidfd_getfd(2) drives that
// task's memory. Once that mm is gone (the task exited or exec'd) every
// ioctl that needs it fails with ESRCH.
//
// Kernel behaviour callers must know (the first, second and fourth point
// and the REMAP/UNMAP order are checked by the tests here):
//   - UFFDIO_API succeeds once per fd; a failed handshake leaves the fd
//     usable for another try.
//   - A copy that stops part-way fails with EAGAIN whatever the cause and
//     reports the bytes done; the rest, retried, reports the real cause.
//   - Non-cooperative events block the task that caused them until the
//     message is read, and while one is in flight the fill ioctls answer
//     EAGAIN. A moving mremap reports REMAP and then UNMAP of the old
//     range.
//   - A fault wait is interruptible: a signal makes the faulting thread
//     retry the access. In a Go process (preemption signals) a fault can
//     therefore be re-reported, and a page filled with DONTWAKE may be
//     seen before Wake.
//
// The package has no policy: it encodes the ioctl structs, decodes
// uffd_msg, and keeps the kernel's errno in every error so callers can test
// errors.Is(err, unix.EEXIST) and friends. CopyErrno and ZeroPageErrno
// return the bare errno instead, for hot paths where an expected result
// (EEXIST after a race) must not cost an allocation. Layouts and numbers follow
// include/uapi/linux/userfaultfd.h; pointer-passing ioctls live in
// ioctl_unsafe.go.
package uffd
