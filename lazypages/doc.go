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
// process run only after the daemon's ack, which costs O(ranges + dumped
// extents), not O(pages). Client.Done ends the restore.
//
// Serving (fault.go). One epoll loop, on a thread of its own with a raised
// priority (thread.go), watches the listening socket, the connections,
// every uffd and a pidfd per process. A fault on a pending page is answered
// with a 4 KiB UFFDIO_COPY of that page alone, which wakes the thread: that
// is the fault's latency (Stats). The rest of the pending run around it in
// the aligned 64 KiB window is copied right after; when the process walks
// its memory in one direction while prefetch runs, the loop copies up to
// 2 MiB ahead of it instead, next to the prefetch workers. A page that is
// not pending (never dumped, already dropped) gets the zero page. Per
// process a lazySet records which pages still have to come from the
// source; fork, mremap, MADV_DONTNEED and munmap events copy, move or drop
// its entries, so a page removed by the process reads zero afterwards
// instead of being refilled from the image.
//
// Sources (source.go). The default source, the images directory, maps each
// pages file and hands slices of the mapping straight to UFFDIO_COPY
// (MappedSource): no read into a buffer. Other sources are read into a
// buffer per copier. An AsyncSource (a page server) is never waited for on
// the loop: faults start reads and return to the loop, later faults on
// pages being read wait for that read, completions are copied in on the
// loop (async.go).
//
// Prefetch (prefetch.go). Workers, a fixed pool, copy the remaining pages
// in 256 KiB pieces from where the last fault was, in the direction the
// faults go, while the loop serves faults: concurrent UFFDIO_COPYs on one
// uffd are fine, whoever fills a page second meets EEXIST. Reading an
// event from a uffd lets the process zap pages (MADV_DONTNEED) with the
// copy side unlocked, so the loop reads a process's uffd only while no
// worker copies into it (gate.go); a piece bounds that wait (ReadWait in
// Stats). Prefetch holds back while a restore is still registering
// processes, so the restore has the processors to itself. A process whose
// pages are all in is released (its uffd closed); Serve returns once Done
// came and no process is left.
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
