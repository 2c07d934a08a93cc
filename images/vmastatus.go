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
	VMAAreaVVAR     = 1 << 12
)
