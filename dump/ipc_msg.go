package dump

import (
	"errors"
	"fmt"

	ipc_desc "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-desc"
	ipc_msg "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-msg"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/sys"
)

// ipcDesc is the ipc_desc_entry of an object of the given id.
func ipcDesc(id int, p unix.SysvIpcPerm) *ipc_desc.IpcDescEntry {
	return &ipc_desc.IpcDescEntry{
		Key: proto.Uint32(uint32(p.Key)), Uid: proto.Uint32(p.Uid), Gid: proto.Uint32(p.Gid),
		Cuid: proto.Uint32(p.Cuid), Cgid: proto.Uint32(p.Cgid), Mode: proto.Uint32(p.Mode), Id: proto.Uint32(uint32(id)),
	}
}

// dumpMsgQueues reads every message queue of the namespace with its messages, which stay queued
// (msgrcv MSG_COPY reads a message by its index without taking it).
// Preconditions: runs in the namespace (sys.InNamespaceOf), the tree frozen.
func dumpMsgQueues() ([]images.IpcMsgQueue, error) {
	maxIdx, err := sys.MsgMaxIndex()
	if err != nil {
		return nil, fmt.Errorf("msgctl(MSG_INFO): %w", err)
	}
	var out []images.IpcMsgQueue
	for i := 0; i <= maxIdx; i++ {
		var ds sys.MsqidDS
		id, err := sys.MsgCtl(i, sys.MsgStat, &ds)
		if errors.Is(err, unix.EINVAL) {
			continue // a free slot
		}
		if err != nil {
			return nil, fmt.Errorf("msgctl(MSG_STAT) of index %d: %w", i, err)
		}
		q := images.IpcMsgQueue{Entry: &ipc_msg.IpcMsgEntry{
			Desc: ipcDesc(id, ds.Perm), Qbytes: proto.Uint32(uint32(ds.Qbytes)), Qnum: proto.Uint32(uint32(ds.Qnum)),
		}}
		for j := 0; j < int(ds.Qnum); j++ {
			// No message is longer than all the queue's bytes together.
			typ, data, err := sys.MsgCopyAt(id, j, int(ds.Cbytes))
			if err != nil {
				return nil, fmt.Errorf("message queue %d: message %d of %d: %w", id, j, ds.Qnum, err)
			}
			q.Msgs = append(q.Msgs, images.IpcMsg{Type: typ, Data: data})
		}
		out = append(out, q)
	}
	return out, nil
}
