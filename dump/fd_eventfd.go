package dump

import (
	"fmt"
	"strconv"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"google.golang.org/protobuf/proto"
)

// eventfdSemaphoreFlag marks an EFD_SEMAPHORE eventfd in EventfdFileEntry.flags. CRIU keeps only the file
// status flags there; an eventfd is always O_RDWR, so the O_WRONLY bit is free to carry the mode (CRIU
// restores flags with F_SETFL, which ignores the access mode bits).
const eventfdSemaphoreFlag = 1

// eventfdKind: the counter (fdinfo "eventfd-count", hex) and the semaphore mode.
type eventfdKind struct{}

func init() { registerFdKind(eventfdKind{}) }

func (eventfdKind) handles(f *openFile) bool { return f.Fd.Target == "anon_inode:[eventfd]" }

func (eventfdKind) dump(ft *fileTable, f *openFile, id uint32) (*fdinfo.FileEntry, error) {
	count, sem, err := parseEventfd(f.Info.Lines)
	if err != nil {
		return nil, err
	}
	flags := f.Flags
	if sem {
		flags |= eventfdSemaphoreFlag
	}
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_EVENTFD.Enum(),
		Id:   proto.Uint32(id),
		Efd:  &eventfd.EventfdFileEntry{Id: proto.Uint32(id), Flags: proto.Uint32(flags), Fown: zeroFown(), Counter: proto.Uint64(count)},
	}, nil
}

// parseEventfd reads "eventfd-count: %16llx" and, on kernels that show it (6.6+), "eventfd-semaphore: %d".
func parseEventfd(lines []string) (count uint64, semaphore bool, err error) {
	if count, err = fdinfoUint(lines, "eventfd-count", 16); err != nil {
		return 0, false, err
	}
	if v, ok := fdinfoValue(lines, "eventfd-semaphore"); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, false, fmt.Errorf("fdinfo eventfd-semaphore: %w", err)
		}
		semaphore = n != 0
	}
	return count, semaphore, nil
}
