package restore

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/sys"
)

// createSemSets makes the dumped semaphore sets with their ids, owners and values.
// Preconditions: runs in the tree's fresh IPC namespace, its sysctls set.
func createSemSets(sets []images.IpcSem) error {
	for _, s := range sets {
		if err := createSemSet(s); err != nil {
			return fmt.Errorf("System V semaphore set %d: %w", s.Entry.GetDesc().GetId(), err)
		}
	}
	return nil
}

func createSemSet(s images.IpcSem) error {
	desc := s.Entry.GetDesc()
	id := int(desc.GetId())
	if len(s.Values) == 0 {
		return fmt.Errorf("%w: a set without semaphores", ErrBadImages)
	}
	err := createWithID("sem", id, func() (int, error) {
		return sys.SemGet(int32(desc.GetKey()), len(s.Values), int(desc.GetMode()&0o777)|unix.IPC_CREAT|unix.IPC_EXCL)
	}, func(got int) { _, _ = sys.SemCtl(got, unix.IPC_RMID, nil) })
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	var ds sys.SemidDS
	if _, err := sys.SemCtl(id, unix.IPC_STAT, &ds); err != nil {
		return fmt.Errorf("semctl(IPC_STAT): %w", err)
	}
	ds.Perm.Uid, ds.Perm.Gid, ds.Perm.Mode = desc.GetUid(), desc.GetGid(), desc.GetMode()&0o777
	if _, err := sys.SemCtl(id, unix.IPC_SET, &ds); err != nil {
		return fmt.Errorf("semctl(IPC_SET) owner %d:%d mode %#o: %w", desc.GetUid(), desc.GetGid(), desc.GetMode()&0o777, err)
	}
	if err := sys.SemSetAll(id, s.Values); err != nil {
		return fmt.Errorf("semctl(SETALL): %w", err)
	}
	return nil
}
