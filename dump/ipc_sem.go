package dump

import (
	"errors"
	"fmt"

	ipc_sem "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-sem"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/sys"
)

// dumpSemSets reads every semaphore set of the namespace with its values. What the kernel keeps per
// process (SEM_UNDO adjustments) and the last operation's pid are not in CRIU's images and are lost.
// Preconditions: runs in the namespace (sys.InNamespaceOf), the tree frozen.
func dumpSemSets() ([]images.IpcSem, error) {
	maxIdx, err := sys.SemMaxIndex()
	if err != nil {
		return nil, fmt.Errorf("semctl(SEM_INFO): %w", err)
	}
	var out []images.IpcSem
	for i := 0; i <= maxIdx; i++ {
		var ds sys.SemidDS
		id, err := sys.SemCtl(i, sys.SemStat, &ds)
		if errors.Is(err, unix.EINVAL) {
			continue // a free slot
		}
		if err != nil {
			return nil, fmt.Errorf("semctl(SEM_STAT) of index %d: %w", i, err)
		}
		vals := make([]uint16, ds.Nsems)
		if err := sys.SemGetAll(id, vals); err != nil {
			return nil, fmt.Errorf("semaphore set %d: semctl(GETALL): %w", id, err)
		}
		out = append(out, images.IpcSem{
			Entry:  &ipc_sem.IpcSemEntry{Desc: ipcDesc(id, ds.Perm), Nsems: proto.Uint32(uint32(ds.Nsems))},
			Values: vals,
		})
	}
	return out, nil
}
