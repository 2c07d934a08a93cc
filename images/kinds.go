package images

import (
	"fmt"
	"strings"
	"sync"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/apparmor"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/autofs"
	binfmt_misc "github.com/checkpoint-restore/go-criu/v8/crit/images/binfmt-misc"
	bpfmap_data "github.com/checkpoint-restore/go-criu/v8/crit/images/bpfmap-data"
	bpfmap_file "github.com/checkpoint-restore/go-criu/v8/crit/images/bpfmap-file"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/cgroup"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/cpuinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/creds"
	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	criu_sa "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-sa"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventpoll"
	ext_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ext-file"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fh"
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
	packet_sock "github.com/checkpoint-restore/go-criu/v8/crit/images/packet-sock"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pidns"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pipe"
	pipe_data "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	remap_file_path "github.com/checkpoint-restore/go-criu/v8/crit/images/remap-file-path"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/rlimit"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/seccomp"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/siginfo"
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
	"github.com/checkpoint-restore/go-criu/v8/crit/images/tun"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/userns"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/utsns"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"github.com/checkpoint-restore/go-criu/v8/magic"
	"google.golang.org/protobuf/proto"
)

// layout says how the bytes after an image's header are organised.
type layout int

const (
	layoutPlain   layout = iota // entries only
	layoutPayload               // each entry followed by raw bytes, sized by payloadLen
	layoutPagemap               // one PagemapHead, then PagemapEntry until EOF
	layoutGhost                 // GhostFileEntry, then chunks or the raw file contents
	layoutIPC                   // System V IPC objects, with CRIU's padding rules (ipc.go)
	layoutRaw                   // no header, no entries (pages, ip(8) dumps)
)

// kind describes one image file kind: its name format, magic and entries.
type kind struct {
	prefix string // file name up to the variable part, without ".img"
	arg    byte   // 0 (fixed name), 'u' (decimal), 'x' (hex) or 's' (word)
	magic  string // name in go-criu's magic table ("" for raw images)
	// service images (stats, irmap-cache) carry IMG_SERVICE instead of
	// IMG_COMMON in front of their magic (CRIU's O_SERVICE flag).
	service bool
	// bare: the file name has no ".img" (CRIU names its statistics stats-dump and stats-restore,
	// criu/image-desc.c, and the tools that read them look for exactly those names).
	bare     bool
	layout   layout
	newEntry func() proto.Message
	// payloadLen returns how many raw bytes follow entry m (layoutPayload).
	payloadLen func(m proto.Message) (uint64, error)
}

func (k *kind) String() string {
	suffix := ".img"
	if k.bare {
		suffix = ""
	}
	switch k.arg {
	case 0:
		return k.prefix + suffix
	case 's':
		return k.prefix + "%s" + suffix
	}
	return k.prefix + "%" + string(k.arg) + suffix
}

func newer[T any, PT interface {
	*T
	proto.Message
}]() func() proto.Message {
	return func() proto.Message { return PT(new(T)) }
}

// The table follows CRIU's criu/image-desc.c (imgset_template) and
// criu/include/magic.h, restricted to the images go-criu has types for.
// Formats there use %u/%lu for pids and ids, %x for ghost files and TCP
// streams, %s for stats. Images whose magic CRIU aliases (PSIGNAL_MAGIC ==
// SIGNAL_MAGIC, SHMEM_PAGEMAP_MAGIC == PAGEMAP_MAGIC, BINFMT_MISC_OLD) share
// a magic name here; decoding by magic picks the first row.
var kinds = []kind{
	{prefix: "inventory", magic: "INVENTORY", newEntry: newer[inventory.InventoryEntry]()},
	{prefix: "stats-", arg: 's', magic: "STATS", service: true, bare: true, newEntry: newer[stats.StatsEntry]()},
	{prefix: "irmap-cache", magic: "IRMAP_CACHE", service: true, newEntry: newer[fh.IrmapCacheEntry]()},
	{prefix: "pstree", magic: "PSTREE", newEntry: newer[pstree.PstreeEntry]()},

	// Per task.
	{prefix: "core-", arg: 'u', magic: "CORE", newEntry: newer[criu_core.CoreEntry]()},
	{prefix: "ids-", arg: 'u', magic: "IDS", newEntry: newer[criu_core.TaskKobjIdsEntry]()},
	{prefix: "mm-", arg: 'u', magic: "MM", newEntry: newer[mm.MmEntry]()},
	{prefix: "vmas-", arg: 'u', magic: "VMAS", newEntry: newer[vma.VmaEntry]()},
	{prefix: "pagemap-", arg: 'u', magic: "PAGEMAP", layout: layoutPagemap},
	{prefix: "pagemap-shmem-", arg: 'u', magic: "PAGEMAP", layout: layoutPagemap},
	{prefix: "pages-", arg: 'u', layout: layoutRaw},
	{prefix: "fs-", arg: 'u', magic: "FS", newEntry: newer[fs.FsEntry]()},
	{prefix: "creds-", arg: 'u', magic: "CREDS", newEntry: newer[creds.CredsEntry]()},
	{prefix: "sigacts-", arg: 'u', magic: "SIGACT", newEntry: newer[criu_sa.SaEntry]()},
	{prefix: "itimers-", arg: 'u', magic: "ITIMERS", newEntry: newer[timer.ItimerEntry]()},
	{prefix: "posix-timers-", arg: 'u', magic: "POSIX_TIMERS", newEntry: newer[timer.PosixTimerEntry]()},
	{prefix: "rlimit-", arg: 'u', magic: "RLIMIT", newEntry: newer[rlimit.RlimitEntry]()},
	{prefix: "signal-s-", arg: 'u', magic: "SIGNAL", newEntry: newer[siginfo.SignalQueueEntry]()},
	{prefix: "signal-p-", arg: 'u', magic: "SIGNAL", newEntry: newer[siginfo.SignalQueueEntry]()},

	// Files and file descriptors.
	{prefix: "fdinfo-", arg: 'u', magic: "FDINFO", newEntry: newer[fdinfo.FdinfoEntry]()},
	{prefix: "files", magic: "FILES", newEntry: newer[fdinfo.FileEntry]()},
	{prefix: "reg-files", magic: "REG_FILES", newEntry: newer[regfile.RegFileEntry]()},
	{prefix: "ext-files", magic: "EXT_FILES", newEntry: newer[ext_file.ExtFileEntry]()},
	{prefix: "ns-files", magic: "NS_FILES", newEntry: newer[ns.NsFileEntry]()},
	{prefix: "remap-fpath", magic: "REMAP_FPATH", newEntry: newer[remap_file_path.RemapFilePathEntry]()},
	{prefix: "ghost-file-", arg: 'x', magic: "GHOST_FILE", layout: layoutGhost},
	{prefix: "memfd", magic: "MEMFD_INODE", newEntry: newer[memfd.MemfdInodeEntry]()},
	{prefix: "pipes", magic: "PIPES", newEntry: newer[pipe.PipeEntry]()},
	{prefix: "pipes-data", magic: "PIPES_DATA", layout: layoutPayload, newEntry: newer[pipe_data.PipeDataEntry](), payloadLen: pipeDataLen},
	{prefix: "fifo", magic: "FIFO", newEntry: newer[fifo.FifoEntry]()},
	{prefix: "fifo-data", magic: "FIFO_DATA", layout: layoutPayload, newEntry: newer[pipe_data.PipeDataEntry](), payloadLen: pipeDataLen},
	{prefix: "eventfd", magic: "EVENTFD_FILE", newEntry: newer[eventfd.EventfdFileEntry]()},
	{prefix: "eventpoll", magic: "EVENTPOLL_FILE", newEntry: newer[eventpoll.EventpollFileEntry]()},
	{prefix: "eventpoll-tfd", magic: "EVENTPOLL_TFD", newEntry: newer[eventpoll.EventpollTfdEntry]()},
	{prefix: "signalfd", magic: "SIGNALFD", newEntry: newer[signalfd.SignalfdEntry]()},
	{prefix: "timerfd", magic: "TIMERFD", newEntry: newer[timerfd.TimerfdEntry]()},
	{prefix: "inotify", magic: "INOTIFY_FILE", newEntry: newer[fsnotify.InotifyFileEntry]()},
	{prefix: "inotify-wd", magic: "INOTIFY_WD", newEntry: newer[fsnotify.InotifyWdEntry]()},
	{prefix: "fanotify", magic: "FANOTIFY_FILE", newEntry: newer[fsnotify.FanotifyFileEntry]()},
	{prefix: "fanotify-mark", magic: "FANOTIFY_MARK", newEntry: newer[fsnotify.FanotifyMarkEntry]()},
	{prefix: "tty", magic: "TTY_FILES", newEntry: newer[tty.TtyFileEntry]()},
	{prefix: "tty-info", magic: "TTY_INFO", newEntry: newer[tty.TtyInfoEntry]()},
	{prefix: "tty-data", magic: "TTY_DATA", newEntry: newer[tty.TtyDataEntry]()},
	{prefix: "filelocks", magic: "FILE_LOCKS", newEntry: newer[file_lock.FileLockEntry]()},
	{prefix: "tunfile", magic: "TUNFILE", newEntry: newer[tun.TunfileEntry]()},
	{prefix: "bpfmap-file", magic: "BPFMAP_FILE", newEntry: newer[bpfmap_file.BpfmapFileEntry]()},
	{prefix: "bpfmap-data", magic: "BPFMAP_DATA", layout: layoutPayload, newEntry: newer[bpfmap_data.BpfmapDataEntry](), payloadLen: bpfmapDataLen},

	// Sockets.
	{prefix: "unixsk", magic: "UNIXSK", newEntry: newer[sk_unix.UnixSkEntry]()},
	{prefix: "inetsk", magic: "INETSK", newEntry: newer[sk_inet.InetSkEntry]()},
	{prefix: "packetsk", magic: "PACKETSK", newEntry: newer[packet_sock.PacketSockEntry]()},
	{prefix: "netlinksk", magic: "NETLINK_SK", newEntry: newer[sk_netlink.NetlinkSkEntry]()},
	{prefix: "sk-queues", magic: "SK_QUEUES", layout: layoutPayload, newEntry: newer[sk_packet.SkPacketEntry](), payloadLen: skQueueLen},
	{prefix: "tcp-stream-", arg: 'x', magic: "TCP_STREAM", layout: layoutPayload, newEntry: newer[tcp_stream.TcpStreamEntry](), payloadLen: tcpStreamLen},

	// Namespaces and the rest of the environment.
	{prefix: "utsns-", arg: 'u', magic: "UTSNS", newEntry: newer[utsns.UtsnsEntry]()},
	{prefix: "ipcns-var-", arg: 'u', magic: "IPC_VAR", newEntry: newer[ipc_var.IpcVarEntry]()},
	{prefix: "ipcns-shm-", arg: 'u', magic: "IPCNS_SHM", layout: layoutIPC, newEntry: newer[ipc_shm.IpcShmEntry]()},
	{prefix: "ipcns-msg-", arg: 'u', magic: "IPCNS_MSG", layout: layoutIPC, newEntry: newer[ipc_msg.IpcMsgEntry]()},
	{prefix: "ipcns-sem-", arg: 'u', magic: "IPCNS_SEM", layout: layoutIPC, newEntry: newer[ipc_sem.IpcSemEntry]()},
	{prefix: "mountpoints-", arg: 'u', magic: "MNTS", newEntry: newer[mnt.MntEntry]()},
	{prefix: "netdev-", arg: 'u', magic: "NETDEV", newEntry: newer[netdev.NetDeviceEntry]()},
	{prefix: "netns-", arg: 'u', magic: "NETNS", newEntry: newer[netdev.NetnsEntry]()},
	{prefix: "userns-", arg: 'u', magic: "USERNS", newEntry: newer[userns.UsernsEntry]()},
	{prefix: "timens-", arg: 'u', magic: "TIMENS", newEntry: newer[timens.TimensEntry]()},
	{prefix: "pidns-", arg: 'u', magic: "PIDNS", newEntry: newer[pidns.PidnsEntry]()},
	{prefix: "autofs-", arg: 'u', magic: "AUTOFS", newEntry: newer[autofs.AutofsEntry]()},
	{prefix: "binfmt-misc", magic: "BINFMT_MISC", newEntry: newer[binfmt_misc.BinfmtMiscEntry]()},
	{prefix: "binfmt-misc-", arg: 'u', magic: "BINFMT_MISC", newEntry: newer[binfmt_misc.BinfmtMiscEntry]()},
	{prefix: "cgroup", magic: "CGROUP", newEntry: newer[cgroup.CgroupEntry]()},
	{prefix: "cpuinfo", magic: "CPUINFO", newEntry: newer[cpuinfo.CpuinfoEntry]()},
	{prefix: "seccomp", magic: "SECCOMP", newEntry: newer[seccomp.SeccompEntry]()},
	{prefix: "apparmor", magic: "APPARMOR", newEntry: newer[apparmor.ApparmorEntry]()},

	// Raw images written by external tools (ip, iptables, nft): no header.
	{prefix: "ifaddr-", arg: 'u', layout: layoutRaw},
	{prefix: "route-", arg: 'u', layout: layoutRaw},
	{prefix: "route6-", arg: 'u', layout: layoutRaw},
	{prefix: "rule-", arg: 'u', layout: layoutRaw},
	{prefix: "iptables-", arg: 'u', layout: layoutRaw},
	{prefix: "ip6tables-", arg: 'u', layout: layoutRaw},
	{prefix: "nftables-", arg: 'u', layout: layoutRaw},
	{prefix: "netns-ct-", arg: 'u', layout: layoutRaw},
	{prefix: "netns-exp-", arg: 'u', layout: layoutRaw},
}

func pipeDataLen(m proto.Message) (uint64, error) {
	e, ok := m.(*pipe_data.PipeDataEntry)
	if !ok {
		return 0, fmt.Errorf("pipe data: unexpected entry type %T", m)
	}
	return uint64(e.GetBytes()), nil
}

func skQueueLen(m proto.Message) (uint64, error) {
	e, ok := m.(*sk_packet.SkPacketEntry)
	if !ok {
		return 0, fmt.Errorf("socket queue: unexpected entry type %T", m)
	}
	return uint64(e.GetLength()), nil
}

// tcpStreamLen: the in queue then the out queue follow the entry.
func tcpStreamLen(m proto.Message) (uint64, error) {
	e, ok := m.(*tcp_stream.TcpStreamEntry)
	if !ok {
		return 0, fmt.Errorf("tcp stream: unexpected entry type %T", m)
	}
	return uint64(e.GetInqLen()) + uint64(e.GetOutqLen()), nil
}

// bpfmapDataLen: all keys then all values follow the entry.
func bpfmapDataLen(m proto.Message) (uint64, error) {
	e, ok := m.(*bpfmap_data.BpfmapDataEntry)
	if !ok {
		return 0, fmt.Errorf("bpf map data: unexpected entry type %T", m)
	}
	return uint64(e.GetKeysBytes()) + uint64(e.GetValuesBytes()), nil
}

// match reports whether file name base (without ".img", if it has one) has this kind.
func (k *kind) match(base string) bool {
	if k.arg == 0 {
		return base == k.prefix
	}
	rest, ok := strings.CutPrefix(base, k.prefix)
	if !ok || rest == "" || len(rest) > 32 {
		return false
	}
	for _, c := range []byte(rest) {
		var good bool
		switch k.arg {
		case 'u':
			good = c >= '0' && c <= '9'
		case 'x':
			good = c >= '0' && c <= '9' || c >= 'a' && c <= 'f'
		case 's':
			good = c >= 'a' && c <= 'z' || c == '_'
		}
		if !good {
			return false
		}
	}
	return true
}

// kindOf finds the kind of an image from its file name.
func kindOf(name string) (*kind, error) {
	base, suffixed := strings.CutSuffix(name, ".img")
	for i := range kinds {
		if kinds[i].bare != suffixed && kinds[i].match(base) {
			return &kinds[i], nil
		}
	}
	return nil, fmt.Errorf("unknown image name %q", name)
}

// kindByMagic finds the kind for a magic name read from a file header.
func kindByMagic(name string) *kind {
	for i := range kinds {
		if kinds[i].magic == name {
			return &kinds[i]
		}
	}
	return nil
}

// magicTable is go-criu's generated magic table, built once.
var magicTable = sync.OnceValue(magic.LoadMagic)

func magicValue(name string) (uint32, error) {
	v, ok := magicTable().ByName[name]
	if !ok {
		return 0, fmt.Errorf("magic %s missing from go-criu's table", name)
	}
	return uint32(v), nil
}

func magicName(v uint32) (string, bool) {
	n, ok := magicTable().ByValue[uint64(v)]
	return n, ok
}
