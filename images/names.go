package images

import "fmt"

// Names of the per-process and per-object images (CRIU's criu/image-desc.c
// formats; %u and %d print the same for the positive ids used here).

// CoreName is core-PID.img: registers, thread core state (criu_core.CoreEntry).
func CoreName(pid int) string { return fmt.Sprintf("core-%d.img", pid) }

// IDsName is ids-PID.img: the task's kernel object ids (criu_core.TaskKobjIdsEntry).
func IDsName(pid int) string { return fmt.Sprintf("ids-%d.img", pid) }

// MmName is mm-PID.img: the address space (mm.MmEntry with its VMAs).
func MmName(pid int) string { return fmt.Sprintf("mm-%d.img", pid) }

// PagemapName is pagemap-PID.img: which pages the pages file holds.
func PagemapName(pid int) string { return fmt.Sprintf("pagemap-%d.img", pid) }

// PagesName is pages-ID.img: raw page contents, no header.
func PagesName(id uint32) string { return fmt.Sprintf("pages-%d.img", id) }

// FdinfoName is fdinfo-ID.img, ID being the files_id of ids-PID.img.
func FdinfoName(id uint32) string { return fmt.Sprintf("fdinfo-%d.img", id) }

// FsName is fs-PID.img: cwd, root and umask (fs.FsEntry).
func FsName(pid int) string { return fmt.Sprintf("fs-%d.img", pid) }

// CredsName is creds-PID.img (creds.CredsEntry).
func CredsName(pid int) string { return fmt.Sprintf("creds-%d.img", pid) }

// SigactsName is sigacts-PID.img, used by old CRIU versions (criu_sa.SaEntry);
// newer ones keep the actions in the core image.
func SigactsName(pid int) string { return fmt.Sprintf("sigacts-%d.img", pid) }

// ItimersName is itimers-PID.img (timer.ItimerEntry), old layout.
func ItimersName(pid int) string { return fmt.Sprintf("itimers-%d.img", pid) }

// PosixTimersName is posix-timers-PID.img (timer.PosixTimerEntry), old layout.
func PosixTimersName(pid int) string { return fmt.Sprintf("posix-timers-%d.img", pid) }

// RlimitName is rlimit-PID.img (rlimit.RlimitEntry), old layout.
func RlimitName(pid int) string { return fmt.Sprintf("rlimit-%d.img", pid) }

// SignalName is the pending-signal queue of a task: signal-p-PID.img for the
// private queue, signal-s-PID.img for the shared one (siginfo.SignalQueueEntry).
func SignalName(pid int, shared bool) string {
	if shared {
		return fmt.Sprintf("signal-s-%d.img", pid)
	}
	return fmt.Sprintf("signal-p-%d.img", pid)
}

// UtsnsName is utsns-ID.img (utsns.UtsnsEntry).
func UtsnsName(id uint32) string { return fmt.Sprintf("utsns-%d.img", id) }

// IpcVarName is ipcns-var-ID.img (ipc_var.IpcVarEntry).
func IpcVarName(id uint32) string { return fmt.Sprintf("ipcns-var-%d.img", id) }

// MountpointsName is mountpoints-ID.img (mnt.MntEntry).
func MountpointsName(id uint32) string { return fmt.Sprintf("mountpoints-%d.img", id) }

// NetnsName is netns-ID.img (netdev.NetnsEntry).
func NetnsName(id uint32) string { return fmt.Sprintf("netns-%d.img", id) }

// NetdevName is netdev-ID.img (netdev.NetDeviceEntry).
func NetdevName(id uint32) string { return fmt.Sprintf("netdev-%d.img", id) }

// UsernsName is userns-ID.img (userns.UsernsEntry).
func UsernsName(id uint32) string { return fmt.Sprintf("userns-%d.img", id) }

// TimensName is timens-ID.img (timens.TimensEntry).
func TimensName(id uint32) string { return fmt.Sprintf("timens-%d.img", id) }

// PidnsName is pidns-ID.img (pidns.PidnsEntry).
func PidnsName(id uint32) string { return fmt.Sprintf("pidns-%d.img", id) }

// PagemapShmemName is pagemap-shmem-SHMID.img: the pagemap of a shared
// memory object (shmem mapping, memfd), same format as a task pagemap.
func PagemapShmemName(shmid uint64) string { return fmt.Sprintf("pagemap-shmem-%d.img", shmid) }

// GhostFileName is ghost-file-ID.img; CRIU prints this id in hex.
func GhostFileName(id uint32) string { return fmt.Sprintf("ghost-file-%x.img", id) }

// TCPStreamName is tcp-stream-INO.img, one per established TCP socket; CRIU
// prints the socket inode in hex.
func TCPStreamName(ino uint32) string { return fmt.Sprintf("tcp-stream-%x.img", ino) }

// Names of the global images.
const (
	InventoryName    = "inventory.img"
	PstreeName       = "pstree.img"
	FilesName        = "files.img"
	PipesDataName    = "pipes-data.img"
	StatsDumpName    = "stats-dump" // no ".img", as CRIU names them
	StatsRestoreName = "stats-restore"

	RegFilesName     = "reg-files.img"
	ExtFilesName     = "ext-files.img"
	NsFilesName      = "ns-files.img"
	PipesName        = "pipes.img"
	FifoName         = "fifo.img"
	FifoDataName     = "fifo-data.img"
	EventfdName      = "eventfd.img"
	EventpollName    = "eventpoll.img"
	EventpollTfdName = "eventpoll-tfd.img"
	SignalfdName     = "signalfd.img"
	TimerfdName      = "timerfd.img"
	InotifyName      = "inotify.img"
	InotifyWdName    = "inotify-wd.img"
	FanotifyName     = "fanotify.img"
	FanotifyMarkName = "fanotify-mark.img"
	UnixSkName       = "unixsk.img"
	InetSkName       = "inetsk.img"
	PacketSkName     = "packetsk.img"
	NetlinkSkName    = "netlinksk.img"
	SkQueuesName     = "sk-queues.img"
	RemapFpathName   = "remap-fpath.img"
	MemfdName        = "memfd.img"
	TtyName          = "tty.img"
	TtyInfoName      = "tty-info.img"
	TtyDataName      = "tty-data.img"
	FileLocksName    = "filelocks.img"
	TunfileName      = "tunfile.img"
	CgroupName       = "cgroup.img"
	CpuinfoName      = "cpuinfo.img"
	SeccompName      = "seccomp.img"
	BinfmtMiscName   = "binfmt-misc.img"
	BpfmapFileName   = "bpfmap-file.img"
	BpfmapDataName   = "bpfmap-data.img"
	ApparmorName     = "apparmor.img"
	IrmapCacheName   = "irmap-cache.img"
)
