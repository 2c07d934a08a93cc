package integration

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/cgroup"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/cpuinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/creds"
	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	criu_sa "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-sa"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventpoll"
	ext_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ext-file"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fifo"
	file_lock "github.com/checkpoint-restore/go-criu/v8/crit/images/file-lock"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fsnotify"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	ipc_msg "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-msg"
	ipc_sem "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-sem"
	ipc_shm "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-shm"
	ipc_var "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-var"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/memfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mnt"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/netdev"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/ns"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pidns"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pipe"
	pipe_data "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	remap_file_path "github.com/checkpoint-restore/go-criu/v8/crit/images/remap-file-path"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/rlimit"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/seccomp"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/signalfd"
	sk_inet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	sk_netlink "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-netlink"
	sk_packet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-packet"
	sk_unix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timens"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timer"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timerfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/tty"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/userns"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/utsns"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"github.com/checkpoint-restore/go-criu/v8/magic"
	"google.golang.org/protobuf/proto"
)

// entryTypes maps an image magic name to the protobuf message of its entries,
// as CRIU's crit does. (go-criu's own table lives in crit/cli, which pulls in
// cobra; this is the same mapping without that dependency.) PAGEMAP and
// GHOST_FILE have their own decoders in crit and take no entry type.
var entryTypes = map[string]func() proto.Message{
	"CGROUP":         func() proto.Message { return &cgroup.CgroupEntry{} },
	"CORE":           func() proto.Message { return &criu_core.CoreEntry{} },
	"CPUINFO":        func() proto.Message { return &cpuinfo.CpuinfoEntry{} },
	"CREDS":          func() proto.Message { return &creds.CredsEntry{} },
	"EVENTFD_FILE":   func() proto.Message { return &eventfd.EventfdFileEntry{} },
	"EVENTPOLL_FILE": func() proto.Message { return &eventpoll.EventpollFileEntry{} },
	"EVENTPOLL_TFD":  func() proto.Message { return &eventpoll.EventpollTfdEntry{} },
	"EXT_FILES":      func() proto.Message { return &ext_file.ExtFileEntry{} },
	"FANOTIFY_FILE":  func() proto.Message { return &fsnotify.FanotifyFileEntry{} },
	"FANOTIFY_MARK":  func() proto.Message { return &fsnotify.FanotifyMarkEntry{} },
	"FDINFO":         func() proto.Message { return &fdinfo.FdinfoEntry{} },
	"FIFO":           func() proto.Message { return &fifo.FifoEntry{} },
	"FIFO_DATA":      func() proto.Message { return &pipe_data.PipeDataEntry{} },
	"FILES":          func() proto.Message { return &fdinfo.FileEntry{} },
	"FILE_LOCKS":     func() proto.Message { return &file_lock.FileLockEntry{} },
	"FS":             func() proto.Message { return &fs.FsEntry{} },
	"IDS":            func() proto.Message { return &criu_core.TaskKobjIdsEntry{} },
	"INETSK":         func() proto.Message { return &sk_inet.InetSkEntry{} },
	"INOTIFY_FILE":   func() proto.Message { return &fsnotify.InotifyFileEntry{} },
	"INOTIFY_WD":     func() proto.Message { return &fsnotify.InotifyWdEntry{} },
	"INVENTORY":      func() proto.Message { return &inventory.InventoryEntry{} },
	"IPC_VAR":        func() proto.Message { return &ipc_var.IpcVarEntry{} },
	"IPCNS_SHM":      func() proto.Message { return &ipc_shm.IpcShmEntry{} },
	"IPCNS_MSG":      func() proto.Message { return &ipc_msg.IpcMsgEntry{} },
	"IPCNS_SEM":      func() proto.Message { return &ipc_sem.IpcSemEntry{} },
	"ITIMERS":        func() proto.Message { return &timer.ItimerEntry{} },
	"MEMFD_INODE":    func() proto.Message { return &memfd.MemfdInodeEntry{} },
	"MM":             func() proto.Message { return &mm.MmEntry{} },
	"MNTS":           func() proto.Message { return &mnt.MntEntry{} },
	"NETDEV":         func() proto.Message { return &netdev.NetDeviceEntry{} },
	"NETLINK_SK":     func() proto.Message { return &sk_netlink.NetlinkSkEntry{} },
	"NETNS":          func() proto.Message { return &netdev.NetnsEntry{} },
	"NS_FILES":       func() proto.Message { return &ns.NsFileEntry{} },
	"PIDNS":          func() proto.Message { return &pidns.PidnsEntry{} },
	"PIPES":          func() proto.Message { return &pipe.PipeEntry{} },
	"PIPES_DATA":     func() proto.Message { return &pipe_data.PipeDataEntry{} },
	"POSIX_TIMERS":   func() proto.Message { return &timer.PosixTimerEntry{} },
	"PSTREE":         func() proto.Message { return &pstree.PstreeEntry{} },
	"REG_FILES":      func() proto.Message { return &regfile.RegFileEntry{} },
	"REMAP_FPATH":    func() proto.Message { return &remap_file_path.RemapFilePathEntry{} },
	"RLIMIT":         func() proto.Message { return &rlimit.RlimitEntry{} },
	"SECCOMP":        func() proto.Message { return &seccomp.SeccompEntry{} },
	"SIGACT":         func() proto.Message { return &criu_sa.SaEntry{} },
	"SIGNALFD":       func() proto.Message { return &signalfd.SignalfdEntry{} },
	"SK_QUEUES":      func() proto.Message { return &sk_packet.SkPacketEntry{} },
	"STATS":          func() proto.Message { return &stats.StatsEntry{} },
	"TCP_STREAM":     func() proto.Message { return &tcp_stream.TcpStreamEntry{} },
	"TIMENS":         func() proto.Message { return &timens.TimensEntry{} },
	"TIMERFD":        func() proto.Message { return &timerfd.TimerfdEntry{} },
	"TTY_DATA":       func() proto.Message { return &tty.TtyDataEntry{} },
	"TTY_FILES":      func() proto.Message { return &tty.TtyFileEntry{} },
	"TTY_INFO":       func() proto.Message { return &tty.TtyInfoEntry{} },
	"UNIXSK":         func() proto.Message { return &sk_unix.UnixSkEntry{} },
	"USERNS":         func() proto.Message { return &userns.UsernsEntry{} },
	"UTSNS":          func() proto.Message { return &utsns.UtsnsEntry{} },
	"VMAS":           func() proto.Message { return &vma.VmaEntry{} },
	"PAGEMAP":        func() proto.Message { return nil },
	"GHOST_FILE":     func() proto.Message { return nil },
}

// decodeImage decodes one image file with go-criu's crit.
func decodeImage(path string) (*crit.CriuImage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	name, err := crit.ReadMagic(f)
	if err != nil {
		return nil, fmt.Errorf("magic: %w", err)
	}
	newEntry, ok := entryTypes[name]
	if !ok {
		return nil, fmt.Errorf("magic %s has no known entry type", name)
	}
	if name == "IPCNS_SHM" {
		return decodeIpcShm(f)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	img, err := crit.New(f, nil, "", false, false).Decode(newEntry())
	if err != nil {
		return nil, fmt.Errorf("decode %s image: %w", name, err)
	}
	return img, nil
}

// mustDecode decodes an image of dir or fails the test.
func mustDecode(t *testing.T, dir, name string) *crit.CriuImage {
	t.Helper()
	img, err := decodeImage(filepath.Join(dir, name))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(img.Entries) == 0 {
		t.Fatalf("%s: no entries", name)
	}
	return img
}

// coreIP returns the instruction pointer saved in core-PID.img.
func coreIP(t *testing.T, dir string, pid int) uint64 {
	t.Helper()
	img := mustDecode(t, dir, fmt.Sprintf("core-%d.img", pid))
	core, ok := img.Entries[0].Message.(*criu_core.CoreEntry)
	if !ok {
		t.Fatalf("core-%d.img: entry is %T", pid, img.Entries[0].Message)
	}
	return core.GetThreadInfo().GetGpregs().GetIp()
}

// dumpedFilePos returns the file position the dump recorded for the regular
// file at path (files.img, or the older separate reg-files.img).
func dumpedFilePos(t *testing.T, dir, path string) int64 {
	t.Helper()
	same := func(name string) bool {
		return strings.TrimPrefix(name, "/") == strings.TrimPrefix(path, "/")
	}
	if img, err := decodeImage(filepath.Join(dir, "files.img")); err == nil {
		for _, e := range img.Entries {
			if fe, ok := e.Message.(*fdinfo.FileEntry); ok && fe.GetReg() != nil && same(fe.GetReg().GetName()) {
				return int64(fe.GetReg().GetPos())
			}
		}
	}
	if img, err := decodeImage(filepath.Join(dir, "reg-files.img")); err == nil {
		for _, e := range img.Entries {
			if rf, ok := e.Message.(*regfile.RegFileEntry); ok && same(rf.GetName()) {
				return int64(rf.GetPos())
			}
		}
	}
	t.Fatalf("no regular file %s in the images of %s", path, dir)
	return 0
}

// imagePayloadOffset is where the first entry of an image starts: after its
// magic, which newer CRIU images precede with IMG_COMMON or IMG_SERVICE.
func imagePayloadOffset(t *testing.T, b []byte) int {
	t.Helper()
	if len(b) < 8 {
		t.Fatalf("image of %d bytes", len(b))
	}
	m := magic.LoadMagic()
	first := uint64(binary.LittleEndian.Uint32(b))
	if first == m.ByName["IMG_COMMON"] || first == m.ByName["IMG_SERVICE"] {
		return 8
	}
	return 4
}

// decodeIpcShm decodes an ipcns-shm image (f past its magic) the way CRIU reads it. go-criu's crit (v8.3)
// cannot: it ignores in_pagemaps and reads a segment's size in bytes of contents after every
// IpcShmEntry, where CRIU (since 3.x) and lazyr keep the contents in pagemap-shmem-ID.img, so it fails
// on CRIU's own images too. The entries are go-criu's generated type; a segment whose contents are
// inline (an older CRIU) has them skipped, padded to 4 bytes.
func decodeIpcShm(f *os.File) (*crit.CriuImage, error) {
	img := &crit.CriuImage{Magic: "IPCNS_SHM"}
	for {
		var size [4]byte
		if _, err := io.ReadFull(f, size[:]); err == io.EOF {
			return img, nil
		} else if err != nil {
			return nil, fmt.Errorf("entry %d: %w", len(img.Entries), err)
		}
		buf := make([]byte, binary.LittleEndian.Uint32(size[:]))
		if _, err := io.ReadFull(f, buf); err != nil {
			return nil, fmt.Errorf("entry %d: %w", len(img.Entries), err)
		}
		e := &ipc_shm.IpcShmEntry{}
		if err := proto.Unmarshal(buf, e); err != nil {
			return nil, fmt.Errorf("entry %d: %w", len(img.Entries), err)
		}
		img.Entries = append(img.Entries, &crit.CriuEntry{Message: e})
		if !e.GetInPagemaps() {
			if _, err := f.Seek(int64((e.GetSize()+3)&^3), io.SeekCurrent); err != nil {
				return nil, err
			}
		}
	}
}
