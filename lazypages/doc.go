// Package lazypages is the memory side of lazy restore: a daemon that fills
// restored processes' anonymous memory on demand through userfaultfd, and
// the client restore uses to hand processes over to it.
//
// Hand-off. Restore creates each process, makes it call userfaultfd(),
// pulls the fd out with pidfd_getfd, does the API handshake with
// RequiredFeatures (fork, remap, remove and unmap events) and registers the
// lazy VMAs in missing mode. It then sends the uffd and a pidfd over the
// SOCK_SEQPACKET socket WORKDIR/lazy-pages.sock (Client.Register: typed,
// versioned binary messages, fds in SCM_RIGHTS; protocol.go) and lets the
// process run only after the daemon's ack. Client.Done ends the restore.
//
// Serving. One epoll loop watches the listening socket, the connections,
// every uffd and a pidfd per process. A fault is answered with
// UFFDIO_COPY of the pending run around it (up to an aligned 64 KiB) read
// from the PageSource, or with the zero page when the page is not pending
// (never dumped, already dropped). Per process a lazySet records which
// pages still have to come from the source; fork, mremap, MADV_DONTNEED and
// munmap events copy, move or drop its entries, so a page removed by the
// process reads zero afterwards instead of being refilled from the image.
// When no fault is waiting, prefetch copies the remaining pages in chunks
// growing from 64 KiB to 4 MiB, checking for faults between chunks. A
// process whose pages are all in is released (its uffd closed); Serve
// returns once Done came and no process is left.
//
// Safety. When the last reference to a uffd goes away the kernel
// unregisters its ranges and missing pages read as zero: a dead daemon
// would leave processes running on wrong memory. So Serve first starts a
// guard process (this binary re-executed with GuardArg; main must call
// GuardMain) that receives a dup of every uffd and a pidfd of every
// process. While it holds them, faults block rather than read zero. If its
// socket to the daemon ends without a "finished" message (the daemon
// crashed, was SIGKILLed, or gave up), the guard SIGKILLs every process it
// holds and their descendants, then exits. The daemon kills them itself on
// its own unrecoverable errors (page source failure, the restore aborting,
// the guard dying, cancellation).
package lazypages
