package images

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	ipc_desc "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-desc"
	ipc_msg "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-msg"
	ipc_sem "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-sem"
	ipc_shm "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-shm"
	"google.golang.org/protobuf/proto"
)

func ipcDesc(id uint32) *ipc_desc.IpcDescEntry {
	u := proto.Uint32
	return &ipc_desc.IpcDescEntry{Key: u(0x1000 + id), Uid: u(1), Gid: u(2), Cuid: u(3), Cgid: u(4), Mode: u(0o600), Id: u(id)}
}

// TestIpcRoundTrip: segments, semaphore sets and message queues read back as written, with CRIU's
// padding (semaphore values and message bytes to 8), and DecodeFile lists them with their raw parts.
func TestIpcRoundTrip(t *testing.T) {
	d := newDir(t)
	segs := []*ipc_shm.IpcShmEntry{
		{Desc: ipcDesc(7), Size: proto.Uint64(4096*3 + 5)},
		{Desc: ipcDesc(32768), Size: proto.Uint64(4096)},
	}
	sems := []IpcSem{
		{Entry: &ipc_sem.IpcSemEntry{Desc: ipcDesc(1), Nsems: proto.Uint32(3)}, Values: []uint16{1, 5, 42}},
		{Entry: &ipc_sem.IpcSemEntry{Desc: ipcDesc(2), Nsems: proto.Uint32(4)}, Values: []uint16{0, 1, 2, 65535}},
	}
	queues := []IpcMsgQueue{
		{Entry: &ipc_msg.IpcMsgEntry{Desc: ipcDesc(3), Qbytes: proto.Uint32(16384), Qnum: proto.Uint32(3)},
			Msgs: []IpcMsg{{Type: 7, Data: []byte("hello")}, {Type: 9, Data: []byte("12345678")}, {Type: 1, Data: []byte{}}}},
		{Entry: &ipc_msg.IpcMsgEntry{Desc: ipcDesc(4), Qbytes: proto.Uint32(100), Qnum: proto.Uint32(0)}},
	}
	if err := d.WriteIpcShm(9, segs); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteIpcSem(9, sems); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteIpcMsg(9, queues); err != nil {
		t.Fatal(err)
	}
	gotSegs, err := d.ReadIpcShm(9)
	if err != nil || len(gotSegs) != 2 {
		t.Fatalf("ReadIpcShm: %v, %d segments", err, len(gotSegs))
	}
	for i, s := range gotSegs {
		if !s.Entry.GetInPagemaps() || s.Data != nil || s.Entry.GetSize() != segs[i].GetSize() || !proto.Equal(s.Entry.GetDesc(), segs[i].GetDesc()) {
			t.Errorf("segment %d: %v (data %d bytes), want %v in pagemaps", i, s.Entry, len(s.Data), segs[i])
		}
	}
	gotSems, err := d.ReadIpcSem(9)
	if err != nil || len(gotSems) != 2 {
		t.Fatalf("ReadIpcSem: %v, %d sets", err, len(gotSems))
	}
	for i, s := range gotSems {
		if !proto.Equal(s.Entry, sems[i].Entry) || !equalU16(s.Values, sems[i].Values) {
			t.Errorf("set %d: %v %v, want %v %v", i, s.Entry, s.Values, sems[i].Entry, sems[i].Values)
		}
	}
	gotQueues, err := d.ReadIpcMsg(9)
	if err != nil || len(gotQueues) != 2 {
		t.Fatalf("ReadIpcMsg: %v, %d queues", err, len(gotQueues))
	}
	for i, q := range gotQueues {
		if !proto.Equal(q.Entry, queues[i].Entry) || len(q.Msgs) != len(queues[i].Msgs) {
			t.Fatalf("queue %d: %v with %d messages", i, q.Entry, len(q.Msgs))
		}
		for j, m := range q.Msgs {
			if m.Type != queues[i].Msgs[j].Type || !bytes.Equal(m.Data, queues[i].Msgs[j].Data) {
				t.Errorf("queue %d message %d: type %d %q", i, j, m.Type, m.Data)
			}
		}
	}
	// CRIU's padding: 3 values take 8 bytes, 4 values 8, a 5-byte message 8, an 8-byte one 8.
	st, err := os.Stat(filepath.Join(d.Path(), IpcSemName(9)))
	if err != nil {
		t.Fatal(err)
	}
	var want int64 = 8
	for _, s := range sems {
		want += 4 + int64(proto.Size(s.Entry)) + 8
	}
	if st.Size() != want {
		t.Errorf("%s is %d bytes, want %d", IpcSemName(9), st.Size(), want)
	}
	for _, c := range []struct {
		name    string
		entries int
		extra   []string
	}{
		{IpcShmName(9), 2, []string{"", ""}},
		{IpcSemName(9), 2, []string{"6 B", "8 B"}},
		{IpcMsgName(9), 5, []string{"", "5 B", "8 B", "0 B", ""}},
	} {
		img, err := DecodeFile(filepath.Join(d.Path(), c.name))
		if err != nil {
			t.Errorf("DecodeFile %s: %v", c.name, err)
			continue
		}
		if len(img.Entries) != c.entries || len(img.Extra) != c.entries {
			t.Errorf("DecodeFile %s: %d entries, want %d", c.name, len(img.Entries), c.entries)
			continue
		}
		for i, x := range c.extra {
			if img.Extra[i] != x {
				t.Errorf("DecodeFile %s: entry %d extra %q, want %q", c.name, i, img.Extra[i], x)
			}
		}
	}
	if err := d.WriteIpcSem(9, []IpcSem{{Entry: &ipc_sem.IpcSemEntry{Desc: ipcDesc(1), Nsems: proto.Uint32(2)}, Values: []uint16{1}}}); err == nil {
		t.Error("WriteIpcSem accepted 1 value for 2 semaphores")
	}
}

func equalU16(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestIpcShmInline: an older CRIU's ipcns-shm carries the contents after each entry, padded to 4 bytes;
// they are read back, and a truncated file is corrupt.
func TestIpcShmInline(t *testing.T) {
	d := newDir(t)
	k, err := kindOf(IpcShmName(1))
	if err != nil {
		t.Fatal(err)
	}
	buf, err := appendHeader(nil, k)
	if err != nil {
		t.Fatal(err)
	}
	contents := [][]byte{[]byte("abcdefg"), bytes.Repeat([]byte{9}, 8)}
	for i, c := range contents {
		if buf, err = appendEntry(buf, &ipc_shm.IpcShmEntry{Desc: ipcDesc(uint32(i)), Size: proto.Uint64(uint64(len(c)))}); err != nil {
			t.Fatal(err)
		}
		buf = append(buf, c...)
		buf = append(buf, make([]byte, (4-len(c)%4)%4)...)
	}
	path := filepath.Join(d.Path(), IpcShmName(1))
	if err := os.WriteFile(path, buf, 0o600); err != nil {
		t.Fatal(err)
	}
	segs, err := d.ReadIpcShm(1)
	if err != nil || len(segs) != 2 {
		t.Fatalf("ReadIpcShm: %v, %d segments", err, len(segs))
	}
	for i, s := range segs {
		if !bytes.Equal(s.Data, contents[i]) {
			t.Errorf("segment %d: %q, want %q", i, s.Data, contents[i])
		}
	}
	img, err := DecodeFile(path)
	if err != nil || len(img.Entries) != 2 || img.Extra[0] != "7 B" {
		t.Errorf("DecodeFile: %v, %+v", err, img)
	}
	if err := os.WriteFile(path, buf[:len(buf)-3], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ReadIpcShm(1); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated image: %v, want ErrCorrupt", err)
	}
	// A message queue claiming more messages than the file holds.
	k, _ = kindOf(IpcMsgName(1))
	buf, _ = appendHeader(nil, k)
	buf, _ = appendEntry(buf, &ipc_msg.IpcMsgEntry{Desc: ipcDesc(1), Qbytes: proto.Uint32(1), Qnum: proto.Uint32(2)})
	buf = binary.LittleEndian.AppendUint32(buf, 1000)
	if err := os.WriteFile(filepath.Join(d.Path(), IpcMsgName(1)), buf, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ReadIpcMsg(1); !errors.Is(err, ErrCorrupt) {
		t.Errorf("short message queue image: %v, want ErrCorrupt", err)
	}
	if _, err := DecodeFile(filepath.Join(d.Path(), IpcMsgName(1))); !errors.Is(err, ErrCorrupt) {
		t.Errorf("DecodeFile of a short message queue image: %v, want ErrCorrupt", err)
	}
}
