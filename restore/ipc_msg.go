package restore

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/sys"
)

// createMsgQueues makes the dumped message queues with their ids, owners, sizes and messages, in order.
// Preconditions: runs in the tree's fresh IPC namespace, its sysctls set.
func createMsgQueues(queues []images.IpcMsgQueue) error {
	for _, q := range queues {
		if err := createMsgQueue(q); err != nil {
			return fmt.Errorf("System V message queue %d: %w", q.Entry.GetDesc().GetId(), err)
		}
	}
	return nil
}

func createMsgQueue(q images.IpcMsgQueue) error {
	desc := q.Entry.GetDesc()
	id := int(desc.GetId())
	err := createWithID("msg", id, func() (int, error) {
		return sys.MsgGet(int32(desc.GetKey()), int(desc.GetMode()&0o777)|unix.IPC_CREAT|unix.IPC_EXCL)
	}, func(got int) { _, _ = sys.MsgCtl(got, unix.IPC_RMID, nil) })
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	var ds sys.MsqidDS
	if _, err := sys.MsgCtl(id, unix.IPC_STAT, &ds); err != nil {
		return fmt.Errorf("msgctl(IPC_STAT): %w", err)
	}
	ds.Perm.Uid, ds.Perm.Gid, ds.Perm.Mode = desc.GetUid(), desc.GetGid(), desc.GetMode()&0o777
	ds.Qbytes = uint64(q.Entry.GetQbytes())
	if err := setQueue(id, &ds); err != nil {
		return err
	}
	for i, m := range q.Msgs {
		if err := sys.MsgSend(id, m.Type, m.Data, unix.IPC_NOWAIT); err != nil {
			return fmt.Errorf("msgsnd message %d of %d (%d bytes): %w", i, len(q.Msgs), len(m.Data), err)
		}
	}
	return nil
}

// setQueue applies owner, mode and size (msgctl IPC_SET). A size above kernel.msgmnb needs
// CAP_SYS_RESOURCE, which root may lack (it does where lazyr was made): the namespace's msgmnb is
// raised for the call and put back.
func setQueue(id int, ds *sys.MsqidDS) error {
	mnb, err := readSysctlInt("kernel/msgmnb")
	if err != nil {
		return err
	}
	if ds.Qbytes > uint64(mnb) {
		if err := writeSysctl("kernel/msgmnb", strconv.FormatUint(ds.Qbytes, 10)); err != nil {
			return err
		}
		defer writeSysctl("kernel/msgmnb", strconv.FormatInt(mnb, 10))
	}
	if _, err := sys.MsgCtl(id, unix.IPC_SET, ds); err != nil {
		return fmt.Errorf("msgctl(IPC_SET) owner %d:%d mode %#o size %d: %w", ds.Perm.Uid, ds.Perm.Gid, ds.Perm.Mode, ds.Qbytes, err)
	}
	return nil
}
