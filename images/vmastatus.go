package images

// VMA status bits of CRIU's image ABI (criu/include/image.h), stored in VmaEntry.status.
const (
	VMAAreaRegular  = 1 << 0
	VMAAreaStack    = 1 << 1
	VMAAreaVsyscall = 1 << 2
	VMAAreaVDSO     = 1 << 3
	VMAAreaHeap     = 1 << 5
	VMAFilePrivate  = 1 << 6
	VMAFileShared   = 1 << 7
	VMAAnonShared   = 1 << 8
	VMAAnonPrivate  = 1 << 9
	VMAAreaSysVIPC  = 1 << 10 // a System V shared memory attach; VmaEntry.shmid is the segment id
	VMAAreaVVAR     = 1 << 12
	VMAAreaMemfd    = 1 << 14
)

// File lock kinds of CRIU's file-lock images (FileLockEntry.flag).
const (
	FileLockPosix = 1    // fcntl(F_SETLK) record locks, owned by the process
	FileLockFlock = 2    // flock(2), owned by the open file description
	FileLockOFD   = 1024 // fcntl(F_OFD_SETLK), owned by the open file description
)

// UnixSkExtern marks a unix socket whose peer lies outside the dumped tree (UnixSkEntry.uflags).
const UnixSkExtern = 1
