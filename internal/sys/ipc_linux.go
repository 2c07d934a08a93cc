package sys

import "golang.org/x/sys/unix"

// System V IPC commands and flags golang.org/x/sys/unix lacks (include/uapi/linux/{ipc,shm,msg,sem}.h).
const (
	ShmLock    = 11 // shmctl SHM_LOCK
	ShmStat    = 13 // shmctl SHM_STAT: by index, returns the id
	ShmInfo    = 14 // shmctl SHM_INFO: returns the highest index in use
	ShmDest    = 0o1000
	ShmLocked  = 0o2000
	ShmHugeTLB = 0o4000
	ShmRemap   = 0o40000
	ShmExec    = 0o100000

	MsgStat = 11      // msgctl MSG_STAT
	MsgInfo = 12      // msgctl MSG_INFO
	MsgCopy = 0o40000 // msgrcv MSG_COPY: copy the message at an index, leave it queued

	semGetAll = 13 // semctl GETALL
	semSetAll = 17 // semctl SETALL
	SemStat   = 18 // semctl SEM_STAT
	SemInfo   = 19 // semctl SEM_INFO
)

// MsqidDS is struct msqid64_ds (x86-64).
type MsqidDS struct {
	Perm                 unix.SysvIpcPerm
	Stime, Rtime, Ctime  int64
	Cbytes, Qnum, Qbytes uint64
	Lspid, Lrpid         int32
	_                    [2]uint64
}

// SemidDS is struct semid64_ds (x86-64).
type SemidDS struct {
	Perm  unix.SysvIpcPerm
	Otime int64
	_     uint64
	Ctime int64
	_     uint64
	Nsems uint64
	_     [2]uint64
}

// ShmMaxIndex returns the highest index in use in the calling thread's IPC namespace's shared memory
// table (shmctl SHM_INFO), -1 when it is empty; ShmStatIndex takes indexes up to it.
func ShmMaxIndex() (int, error) {
	var buf unix.SysvShmDesc // struct shm_info is smaller
	return unix.SysvShmCtl(0, ShmInfo, &buf)
}

// ShmStatIndex returns the id and state of the segment at index i (shmctl SHM_STAT); EINVAL: a free
// slot.
func ShmStatIndex(i int) (int, *unix.SysvShmDesc, error) {
	var ds unix.SysvShmDesc
	id, err := unix.SysvShmCtl(i, ShmStat, &ds)
	if err != nil {
		return 0, nil, err
	}
	return id, &ds, nil
}
