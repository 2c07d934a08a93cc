// Package restore turns a CRIU-format image directory back into a running process, in place: same PID,
// same addresses, same registers, the program continuing where it stopped.
//
// The Go runtime is multi-threaded, so lazyr never forks to run Go code in a child. Instead compel starts
// a ~130-byte stub process (no fds, one thread) under ptrace, and restore drives it by injected syscalls:
//
//  1. read and validate every image first; nothing is created for a broken image set (the stub starts
//     meanwhile, on the tracer thread, which stays pinned to one CPU with the tasks it creates until they
//     are detached: see compel.Tracer.Pin);
//  2. the stub clone3()s the task with set_tid = the dumped PID and CLONE_PARENT, so lazyr itself is the
//     parent (it can wait for the exit status), and the stub is killed;
//  3. in the new task: map a small restorer area (a `syscall` gadget plus scratch memory) where no dumped
//     mapping lies, unmap everything of the stub's, mremap the vDSO areas to their dumped addresses, and
//     mmap every dumped VMA at its address (files opened inside the task);
//  4. fill memory: UFFDIO_COPY from the mapped pages files (process_vm_writev for small amounts and
//     private file mappings) for eager restore; for --lazy-pages the task's userfaultfd is pulled
//     out with pidfd_getfd, the lazy ranges registered and handed to the lazy-pages daemon;
//  5. files, cwd, the mm fields (PR_SET_MM_MAP), signal handlers, timers, limits, credentials;
//  6. the restorer area is unmapped by the last injected syscall, and the task resumes with its dumped
//     registers, FPU state and signal mask, re-issuing a system call it had been interrupted in.
//
// Every failure kills what was created (and PTRACE_O_EXITKILL kills it if lazyr itself dies), so no
// half-restored process is ever left behind.
package restore
