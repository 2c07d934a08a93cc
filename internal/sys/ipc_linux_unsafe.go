package sys

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MsgCtl is msgctl(2) with a struct msqid64_ds.
func MsgCtl(id, cmd int, ds *MsqidDS) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_MSGCTL, uintptr(id), uintptr(cmd), uintptr(unsafe.Pointer(ds)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// MsgMaxIndex is ShmMaxIndex for message queues (msgctl MSG_INFO).
func MsgMaxIndex() (int, error) {
	var buf MsqidDS // struct msginfo is smaller
	return MsgCtl(0, MsgInfo, &buf)
}

// MsgGet is msgget(2).
func MsgGet(key int32, flag int) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_MSGGET, uintptr(key), uintptr(flag), 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// MsgCopyAt returns the message at index i of queue id and leaves it queued (msgrcv with MSG_COPY and
// IPC_NOWAIT; ENOMSG: no message at i). max is the largest message size to accept (kernel.msgmax).
func MsgCopyAt(id, i, max int) (typ uint64, data []byte, err error) {
	buf := make([]byte, 8+max)
	r, _, e := unix.Syscall6(unix.SYS_MSGRCV, uintptr(id), uintptr(unsafe.Pointer(&buf[0])), uintptr(max), uintptr(i),
		unix.IPC_NOWAIT|MsgCopy, 0)
	if e != 0 {
		return 0, nil, e
	}
	return binary.LittleEndian.Uint64(buf), buf[8 : 8+r : 8+r], nil
}

// MsgSend queues a message of type typ on queue id (msgsnd(2)).
func MsgSend(id int, typ uint64, data []byte, flag int) error {
	buf := make([]byte, 8+len(data))
	binary.LittleEndian.PutUint64(buf, typ)
	copy(buf[8:], data)
	_, _, e := unix.Syscall6(unix.SYS_MSGSND, uintptr(id), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(data)), uintptr(flag), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func semctl(id, num, cmd int, arg unsafe.Pointer) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), uintptr(num), uintptr(cmd), uintptr(arg), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// SemCtl is semctl(2) for the commands that take a struct semid64_ds (IPC_STAT, IPC_SET, SEM_STAT).
func SemCtl(id, cmd int, ds *SemidDS) (int, error) { return semctl(id, 0, cmd, unsafe.Pointer(ds)) }

// SemMaxIndex is ShmMaxIndex for semaphore sets (semctl SEM_INFO).
func SemMaxIndex() (int, error) {
	var buf SemidDS // struct seminfo is smaller
	return semctl(0, 0, SemInfo, unsafe.Pointer(&buf))
}

// SemGet is semget(2).
func SemGet(key int32, nsems, flag int) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_SEMGET, uintptr(key), uintptr(nsems), uintptr(flag))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// SemGetAll reads the values of all len(vals) semaphores of set id (semctl GETALL).
func SemGetAll(id int, vals []uint16) error {
	if len(vals) == 0 {
		return unix.EINVAL
	}
	_, err := semctl(id, 0, semGetAll, unsafe.Pointer(&vals[0]))
	return err
}

// SemSetAll sets the values of all len(vals) semaphores of set id (semctl SETALL).
func SemSetAll(id int, vals []uint16) error {
	if len(vals) == 0 {
		return unix.EINVAL
	}
	_, err := semctl(id, 0, semSetAll, unsafe.Pointer(&vals[0]))
	return err
}

// ShmAddr returns the address of a segment attached with unix.SysvShmAttach (memory the Go runtime does
// not move).
func ShmAddr(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}

// Mincore reports which pages of the mapped memory b are in memory (mincore(2)): bit 0 of vec[i] for
// page i; vec needs a byte per page, the last one partial.
func Mincore(b []byte, vec []byte) error {
	if len(b) == 0 || len(vec) < (len(b)+unix.Getpagesize()-1)/unix.Getpagesize() {
		return unix.EINVAL
	}
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0])))
	if e != 0 {
		return e
	}
	return nil
}
