package kernel

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cloneArgs is struct clone_args up to CLONE_ARGS_SIZE_VER1 (set_tid).
type cloneArgs struct {
	flags, pidfd, childTid, parentTid, exitSignal, stack, stackSize, tls uint64
	setTid, setTidSize                                                   uint64
}

// clone3SetTidABI asks the kernel whether it knows clone_args.set_tid without
// creating a task. It passes the VER1 size with set_tid_size=1 but set_tid
// NULL: a kernel that knows set_tid rejects that pair with EINVAL before
// anything else; a kernel that only knows VER0 sees non-zero bytes past its
// struct and says E2BIG; no clone3 at all is ENOSYS. As a second guard the
// flags hold CLONE_THREAD without CLONE_SIGHAND, which copy_process always
// refuses, so even a kernel that accepted the rest could not fork this
// multi-threaded Go process.
func clone3SetTidABI() error {
	args := cloneArgs{flags: unix.CLONE_THREAD, setTid: 0, setTidSize: 1}
	_, _, e := unix.Syscall(unix.SYS_CLONE3, uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args), 0)
	switch {
	case errors.Is(e, unix.EINVAL):
		return nil
	case errors.Is(e, unix.ENOSYS):
		return missing("clone3: no such syscall (Linux 5.3+)", e)
	case errors.Is(e, unix.E2BIG):
		return missing("clone3: kernel does not know clone_args.set_tid (Linux 5.5+)", e)
	case e == 0:
		// Cannot happen (see above); if it did, a thread was made.
		return fmt.Errorf("clone3: probe call unexpectedly succeeded")
	default:
		return missing("clone3: probe call refused (seccomp?)", e)
	}
}

// cloneArgs must be exactly CLONE_ARGS_SIZE_VER1 bytes.
var _ [unix.CLONE_ARGS_SIZE_VER1 - unsafe.Sizeof(cloneArgs{})]struct{}
var _ [unsafe.Sizeof(cloneArgs{}) - unix.CLONE_ARGS_SIZE_VER1]struct{}
