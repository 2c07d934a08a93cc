package sys

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

func ptrace(req int, pid int, addr, data uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, data, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// PtraceSeize attaches to pid without stopping it, with the given PTRACE_O_* options.
func PtraceSeize(pid int, options int) error {
	return ptrace(unix.PTRACE_SEIZE, pid, 0, uintptr(options))
}

// PtraceGetRegSet reads regset nt (e.g. NT_X86_XSTATE) into buf and returns the length the kernel filled.
func PtraceGetRegSet(pid int, nt int, buf []byte) (int, error) {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	if err := ptrace(unix.PTRACE_GETREGSET, pid, uintptr(nt), uintptr(unsafe.Pointer(&iov))); err != nil {
		return 0, err
	}
	return int(iov.Len), nil
}

// PtraceSetRegSet writes regset nt from buf.
func PtraceSetRegSet(pid int, nt int, buf []byte) error {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	return ptrace(unix.PTRACE_SETREGSET, pid, uintptr(nt), uintptr(unsafe.Pointer(&iov)))
}

// PtraceGetSigMask returns the blocked signal mask of a stopped tracee.
func PtraceGetSigMask(pid int) (uint64, error) {
	var m uint64
	err := ptrace(unix.PTRACE_GETSIGMASK, pid, 8, uintptr(unsafe.Pointer(&m)))
	return m, err
}

// PtraceSetSigMask sets the blocked signal mask of a stopped tracee.
func PtraceSetSigMask(pid int, mask uint64) error {
	return ptrace(unix.PTRACE_SETSIGMASK, pid, 8, uintptr(unsafe.Pointer(&mask)))
}

// RseqConfig is struct ptrace_rseq_configuration.
type RseqConfig struct {
	AbiPointer uint64
	AbiSize    uint32
	Signature  uint32
	Flags      uint32
	_          uint32
}

// PtraceGetRseqConfig returns the rseq registration of a stopped tracee (AbiPointer 0: none).
func PtraceGetRseqConfig(pid int) (RseqConfig, error) {
	var c RseqConfig
	err := ptrace(unix.PTRACE_GET_RSEQ_CONFIGURATION, pid, unsafe.Sizeof(c), uintptr(unsafe.Pointer(&c)))
	return c, err
}

// GetRobustList returns the robust futex list head and length registered by pid.
func GetRobustList(pid int) (head uint64, length uint64, err error) {
	_, _, e := unix.Syscall(unix.SYS_GET_ROBUST_LIST, uintptr(pid), uintptr(unsafe.Pointer(&head)), uintptr(unsafe.Pointer(&length)))
	if e != 0 {
		return 0, 0, e
	}
	return head, length, nil
}

// SiginfoSize is sizeof(siginfo_t).
const SiginfoSize = 128

// PtracePeekSiginfo returns the queued (pending) signals of a stopped tracee, as raw siginfo_t records:
// the thread's own queue, or with shared the process-wide one.
func PtracePeekSiginfo(tid int, shared bool) ([][]byte, error) {
	type args struct {
		off   uint64
		flags uint32
		nr    int32
	}
	var out [][]byte
	buf := make([]byte, 32*SiginfoSize)
	for off := uint64(0); ; {
		a := args{off: off, nr: 32}
		if shared {
			a.flags = unix.PTRACE_PEEKSIGINFO_SHARED
		}
		n, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_PEEKSIGINFO, uintptr(tid), uintptr(unsafe.Pointer(&a)), uintptr(unsafe.Pointer(&buf[0])), 0, 0)
		if e != 0 {
			return nil, e
		}
		if n == 0 {
			return out, nil
		}
		for i := 0; i < int(n); i++ {
			out = append(out, append([]byte(nil), buf[i*SiginfoSize:(i+1)*SiginfoSize]...))
		}
		off += uint64(n)
	}
}
