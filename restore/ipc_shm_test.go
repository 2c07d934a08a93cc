package restore

import (
	"errors"
	"testing"

	ipc_desc "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-desc"
	ipc_shm "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-shm"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/sys"
	"github.com/lazyr/lazyr/internal/testutil"
)

func segEntry(id, key uint32, size uint64, mode uint32) images.IpcShm {
	u := proto.Uint32
	return images.IpcShm{Entry: &ipc_shm.IpcShmEntry{
		Desc: &ipc_desc.IpcDescEntry{Key: u(key), Uid: u(0), Gid: u(0), Cuid: u(0), Cgid: u(0), Mode: u(mode), Id: u(id)},
		Size: proto.Uint64(size), InPagemaps: proto.Bool(true),
	}}
}

// TestPrepareSegment: a missing segment is made with its dumped id, key, mode and contents (holes stay
// holes, the last page is cut at the segment's end) and, marked IPC_RMID at dump, queued to be marked
// again; one that is there with its key and size is kept as it is; an id another segment has is refused.
func TestPrepareSegment(t *testing.T) {
	testutil.InPrivateIPCNS(t, func() {
		d, err := images.Create(t.TempDir())
		if err != nil {
			t.Error(err)
			return
		}
		defer d.Close()
		const id, size = 3*32768 + 5, 9*images.PageSize + 100
		writeShmemImage(t, d, id, 1<<30, []uint64{0, 3, 4, 9})
		ir := &ipcRestore{newNS: true}
		if err := ir.prepareSegment(d, segEntry(id, 0x77, size, 0o640|sys.ShmDest)); err != nil {
			t.Errorf("prepareSegment: %v", err)
			return
		}
		var ds unix.SysvShmDesc
		if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &ds); err != nil || ds.Perm.Key != 0x77 || ds.Segsz != size || ds.Perm.Mode != 0o640 {
			t.Errorf("segment %d: %v, key %#x size %d mode %#o", id, err, ds.Perm.Key, ds.Segsz, ds.Perm.Mode)
		}
		if len(ir.rmid) != 1 || ir.rmid[0] != id {
			t.Errorf("segments to mark IPC_RMID: %v, want [%d]", ir.rmid, id)
		}
		b, err := unix.SysvShmAttach(id, 0, unix.SHM_RDONLY)
		if err != nil {
			t.Error(err)
			return
		}
		vec := make([]byte, 10)
		if err := sys.Mincore(b, vec); err != nil {
			t.Error(err)
		}
		for p := 0; p < 10; p++ {
			want := byte(0)
			if p == 0 || p == 3 || p == 4 || p == 9 {
				want = byte(p + 1)
			}
			if inMem := vec[p]&1 == 1; inMem != (want != 0) {
				t.Errorf("page %d in memory: %v, want %v (holes stay holes)", p, vec[p]&1 == 1, want != 0)
			}
			if got := b[p*images.PageSize]; got != want {
				t.Errorf("page %d holds %d, want %d", p, got, want)
			}
		}
		if b[size-1] != 10 {
			t.Errorf("last byte %d, want 10", b[size-1])
		}
		unix.SysvShmDetach(b)
		// There already, same key and size: kept (not refilled).
		ir2 := &ipcRestore{newNS: true}
		if err := ir2.prepareSegment(d, segEntry(id, 0x77, size, 0o640)); err != nil || len(ir2.rmid) != 0 {
			t.Errorf("existing segment: %v, rmid %v", err, ir2.rmid)
		}
		// Another key under that id: refused.
		if err := ir2.prepareSegment(d, segEntry(id, 0x78, size, 0o640)); !errors.Is(err, ErrIPCIDInUse) {
			t.Errorf("id of another segment: %v, want ErrIPCIDInUse", err)
		}
	})
}
