// Package sys holds the raw system calls and ABI structures that golang.org/x/sys/unix does not cover
// (ptrace regsets and sigmask, clone3, robust lists, process_vm_* on byte slices).
//
// Everything that needs unsafe lives here, in *_unsafe.go files, so the rest of lazyr handles only typed
// values. Functions keep the errno: callers match with errors.Is(err, unix.ESRCH) and friends.
package sys
