// Package dump turns a live process into a CRIU-format image directory.
//
// The process is seized and interrupted with ptrace (package compel). State the kernel shows in /proc is
// read from there; state only the task itself can see (sigactions, sigaltstack, itimers, the clear_tid
// address, brk) is read by syscalls injected into it through a syscall instruction of its vDSO, into a
// scratch mapping that is removed again afterwards. Memory is found through /proc/PID/pagemap (present or
// swapped private pages only, the shared zero page skipped) and copied with process_vm_readv.
//
// Safety: everything that could make the dump refuse (threads, unsupported fds or mappings) is checked
// before any expensive work, and a refusal releases the task exactly as it was, in the middle of whatever
// system call it was in. The original is killed only after every image is written and fsynced, and the
// inventory, which marks an image set complete, is written last.
package dump
