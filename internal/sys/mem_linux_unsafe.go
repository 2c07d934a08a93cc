package sys

import (
	"golang.org/x/sys/unix"
)

// maxIov is the largest iovec count process_vm_* accept in one call (UIO_MAXIOV).
const maxIov = 1024

// ReadRemote copies len(buf) bytes at addr in pid into buf with process_vm_readv.
// It loops over partial transfers and returns the number of bytes read before an error.
func ReadRemote(pid int, addr uint64, buf []byte) (int, error) {
	return remote(unix.ProcessVMReadv, pid, addr, buf)
}

// WriteRemote copies buf to addr in pid with process_vm_writev. The target range must be writable.
func WriteRemote(pid int, addr uint64, buf []byte) (int, error) {
	return remote(unix.ProcessVMWritev, pid, addr, buf)
}

type vmFunc func(pid int, local []unix.Iovec, remote []unix.RemoteIovec, flags uint) (int, error)

func remote(op vmFunc, pid int, addr uint64, buf []byte) (int, error) {
	done := 0
	for done < len(buf) {
		local := []unix.Iovec{{Base: &buf[done]}}
		local[0].SetLen(len(buf) - done)
		rem := []unix.RemoteIovec{{Base: uintptr(addr) + uintptr(done), Len: len(buf) - done}}
		n, err := op(pid, local, rem, 0)
		if err != nil {
			return done, err
		}
		if n == 0 {
			return done, unix.EFAULT
		}
		done += n
	}
	return done, nil
}

// Segment is one remote range for ReadRemoteV: Len bytes at Addr.
type Segment struct {
	Addr uint64
	Len  int
}

// ReadRemoteV gathers the remote segments, in order, into buf (len(buf) == sum of lengths) using as few
// process_vm_readv calls as the iovec limit allows.
func ReadRemoteV(pid int, segs []Segment, buf []byte) error {
	off := 0
	for len(segs) > 0 {
		n := len(segs)
		if n > maxIov {
			n = maxIov
		}
		batch := segs[:n]
		segs = segs[n:]
		total := 0
		remote := make([]unix.RemoteIovec, n)
		for i, s := range batch {
			remote[i] = unix.RemoteIovec{Base: uintptr(s.Addr), Len: s.Len}
			total += s.Len
		}
		local := []unix.Iovec{{Base: &buf[off]}}
		local[0].SetLen(total)
		got, err := unix.ProcessVMReadv(pid, local, remote, 0)
		if err != nil {
			return err
		}
		if got != total {
			// A partial read means a remote page vanished: fall back to per-segment reads for a precise error.
			for _, s := range batch {
				if _, err := ReadRemote(pid, s.Addr, buf[off:off+s.Len]); err != nil {
					return err
				}
				off += s.Len
			}
			continue
		}
		off += total
	}
	return nil
}
