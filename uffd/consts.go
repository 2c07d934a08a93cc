package uffd

// APIVersion is UFFD_API, the only userfaultfd API version there is.
const APIVersion = 0xAA

// Feature bits for API (uffdio_api.features).
const (
	FeaturePagefaultFlagWP      uint64 = 1 << 0
	FeatureEventFork            uint64 = 1 << 1
	FeatureEventRemap           uint64 = 1 << 2
	FeatureEventRemove          uint64 = 1 << 3
	FeatureMissingHugetlbfs     uint64 = 1 << 4
	FeatureMissingShmem         uint64 = 1 << 5
	FeatureEventUnmap           uint64 = 1 << 6
	FeatureSigbus               uint64 = 1 << 7
	FeatureThreadID             uint64 = 1 << 8
	FeatureMinorHugetlbfs       uint64 = 1 << 9
	FeatureMinorShmem           uint64 = 1 << 10
	FeatureExactAddress         uint64 = 1 << 11
	FeatureWPHugetlbfsShmem     uint64 = 1 << 12
	FeatureWPUnpopulated        uint64 = 1 << 13
	FeaturePoison               uint64 = 1 << 14
	FeatureWPAsync              uint64 = 1 << 15
	FeatureMove                 uint64 = 1 << 16
	FeatureMinorGuestMemfd      uint64 = 1 << 17
	FeatureNonCooperativeEvents        = FeatureEventFork | FeatureEventRemap | FeatureEventRemove | FeatureEventUnmap
)

var featureNames = [...]string{
	"PAGEFAULT_FLAG_WP", "EVENT_FORK", "EVENT_REMAP", "EVENT_REMOVE",
	"MISSING_HUGETLBFS", "MISSING_SHMEM", "EVENT_UNMAP", "SIGBUS",
	"THREAD_ID", "MINOR_HUGETLBFS", "MINOR_SHMEM", "EXACT_ADDRESS",
	"WP_HUGETLBFS_SHMEM", "WP_UNPOPULATED", "POISON", "WP_ASYNC",
	"MOVE", "MINOR_GUEST_MEMFD",
}

// Event codes (uffd_msg.event). They start at 0x12, not 0, on purpose in
// the kernel ("to be more strict against bugs").
const (
	EventPagefault uint8 = 0x12
	EventFork      uint8 = 0x13
	EventRemap     uint8 = 0x14
	EventRemove    uint8 = 0x15
	EventUnmap     uint8 = 0x16
)

// Pagefault flags (Pagefault.Flags).
const (
	PagefaultFlagWrite uint64 = 1 << 0
	PagefaultFlagWP    uint64 = 1 << 1
	PagefaultFlagMinor uint64 = 1 << 2
)

// Register modes.
const (
	ModeMissing uint64 = 1 << 0
	ModeWP      uint64 = 1 << 1
	ModeMinor   uint64 = 1 << 2
)

// Per-ioctl mode flags.
const (
	CopyModeDontWake         uint64 = 1 << 0
	CopyModeWP               uint64 = 1 << 1
	ZeroPageModeDontWake     uint64 = 1 << 0
	ContinueModeDontWake     uint64 = 1 << 0
	ContinueModeWP           uint64 = 1 << 1
	WriteProtectModeWP       uint64 = 1 << 0
	WriteProtectModeDontWake uint64 = 1 << 1
)

// Bits of the ioctls masks returned by API and Register: 1<<IoctlXxx is set
// when the ioctl is available.
const (
	IoctlRegister     = 0x00
	IoctlUnregister   = 0x01
	IoctlWake         = 0x02
	IoctlCopy         = 0x03
	IoctlZeroPage     = 0x04
	IoctlMove         = 0x05
	IoctlWriteProtect = 0x06
	IoctlContinue     = 0x07
	IoctlPoison       = 0x08
	IoctlAPI          = 0x3F
)

// UserModeOnly is the userfaultfd(2) flag UFFD_USER_MODE_ONLY: faults taken
// in kernel mode (copy_from_user on a registered range) are not handled.
const UserModeOnly = 1

// ioctl request numbers, built like the kernel's _IO/_IOR/_IOWR macros.
const (
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2

	uffdioType = 0xAA

	sizeofAPI          = 24
	sizeofRange        = 16
	sizeofRegister     = 32
	sizeofCopy         = 40
	sizeofZeroPage     = 32
	sizeofWriteProtect = 24
	sizeofContinue     = 32

	// MsgSize is sizeof(struct uffd_msg).
	MsgSize = 32
)

func ioc(dir, typ, nr, size uintptr) uintptr {
	return dir<<30 | size<<16 | typ<<8 | nr
}

// The kernel header notes that UNREGISTER and WAKE were declared _IOR by
// mistake (the kernel reads the struct); the numbers are ABI now.
var (
	ioctlNew          = ioc(iocNone, uffdioType, 0x00, 0)
	ioctlAPI          = ioc(iocRead|iocWrite, uffdioType, IoctlAPI, sizeofAPI)
	ioctlRegister     = ioc(iocRead|iocWrite, uffdioType, IoctlRegister, sizeofRegister)
	ioctlUnregister   = ioc(iocRead, uffdioType, IoctlUnregister, sizeofRange)
	ioctlWake         = ioc(iocRead, uffdioType, IoctlWake, sizeofRange)
	ioctlCopy         = ioc(iocRead|iocWrite, uffdioType, IoctlCopy, sizeofCopy)
	ioctlZeroPage     = ioc(iocRead|iocWrite, uffdioType, IoctlZeroPage, sizeofZeroPage)
	ioctlWriteProtect = ioc(iocRead|iocWrite, uffdioType, IoctlWriteProtect, sizeofWriteProtect)
	ioctlContinue     = ioc(iocRead|iocWrite, uffdioType, IoctlContinue, sizeofContinue)
)
