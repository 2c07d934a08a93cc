package sys

import "golang.org/x/sys/unix"

const (
	kcmpFile = 0 // KCMP_FILE
	kcmpVM   = 1 // KCMP_VM
)

// SameFile reports whether fd1 in pid1 and fd2 in pid2 are the same open file description (kcmp KCMP_FILE).
func SameFile(pid1, fd1, pid2, fd2 int) (bool, error) {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpFile, uintptr(fd1), uintptr(fd2), 0)
	if e != 0 {
		return false, e
	}
	return r == 0, nil
}

// SameMM reports whether pid1 and pid2 share one address space (kcmp KCMP_VM).
func SameMM(pid1, pid2 int) (bool, error) {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpVM, 0, 0, 0)
	if e != 0 {
		return false, e
	}
	return r == 0, nil
}
