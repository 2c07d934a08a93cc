package dump

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"time"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/siginfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timer"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/utsns"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
)

// imgVersion is CRIU's CRTOOLS_IMAGES_V1_1 inventory version.
const imgVersion = 2

// result is everything collected from one process.
type result struct {
	proc    *proc
	id      uint32 // the process's ids (files, mm, pages image)
	info    *procInfo
	inj     *injected
	threads []*threadInfo
	areas   []*area
	fds     []*fdinfo.FdinfoEntry
	uts     *utsns.UtsnsEntry // the tree's own UTS namespace, recorded with its init
	timers  []*timer.PosixTimerEntry
	signals *siginfo.SignalQueueEntry // pending for the whole process
}

// createDir opens the image directory for writing. A stale inventory from an earlier dump is removed first:
// the inventory marks a complete image set, and this one is not complete until write() ends. Without
// durable, images are not fsynced at all (see writeImages).
func createDir(path string, durable bool) (*images.Dir, error) {
	d, err := images.CreateWithOptions(path, images.Options{DeferSync: !durable})
	if err != nil {
		return nil, err
	}
	if d.Exists(images.InventoryName) {
		if err := d.Remove(images.InventoryName); err != nil {
			return nil, fmt.Errorf("remove stale inventory: %w", err)
		}
	}
	return d, nil
}

func nsID(pid int, name string) *uint32 {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, name), &st); err != nil {
		return nil
	}
	return proto.Uint32(uint32(st.Ino))
}

func (r *result) ids() *criu_core.TaskKobjIdsEntry {
	id := proto.Uint32(r.id)
	pid := r.proc.pid
	return &criu_core.TaskKobjIdsEntry{
		VmId: id, FilesId: id, FsId: id, SighandId: id,
		PidNsId: nsID(pid, "pid"), NetNsId: nsID(pid, "net"), IpcNsId: nsID(pid, "ipc"),
		UtsNsId: nsID(pid, "uts"), MntNsId: nsID(pid, "mnt"), UserNsId: nsID(pid, "user"),
		CgroupNsId: nsID(pid, "cgroup"), TimeNsId: nsID(pid, "time"),
	}
}

type image struct {
	name    string
	entries []proto.Message
}

// images returns the per-process images of a live process.
func (r *result) images(ft *fileTable) ([]image, error) {
	pid, info := r.proc.vpid, r.info
	ids := r.ids()
	exeID, err := ft.mapped(info.exe, unix.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("executable %s: %w", info.exe, err)
	}
	cwdID, err := ft.mapped(info.cwd, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, fmt.Errorf("cwd %s: %w", info.cwd, err)
	}
	rootID, err := ft.mapped(info.root, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, fmt.Errorf("root %s: %w", info.root, err)
	}
	var vmas []*vma.VmaEntry
	for _, a := range r.areas {
		vmas = append(vmas, a.entry)
	}
	s := info.stat
	mme := &mm.MmEntry{
		MmStartCode: proto.Uint64(s.StartCode), MmEndCode: proto.Uint64(s.EndCode),
		MmStartData: proto.Uint64(s.StartData), MmEndData: proto.Uint64(s.EndData),
		MmStartStack: proto.Uint64(s.StartStack), MmStartBrk: proto.Uint64(s.StartBrk),
		MmBrk: proto.Uint64(r.inj.brk), MmArgStart: proto.Uint64(s.ArgStart), MmArgEnd: proto.Uint64(s.ArgEnd),
		MmEnvStart: proto.Uint64(s.EnvStart), MmEnvEnd: proto.Uint64(s.EnvEnd),
		ExeFileId: proto.Uint32(exeID), MmSavedAuxv: info.auxv, Vmas: vmas,
		Dumpable: proto.Int32(r.inj.dumpable), ThpDisabled: proto.Bool(r.inj.thpDisabled),
	}
	var out []image
	for i, th := range r.threads {
		ce := coreEntry(info, r.inj, th, ids, i == 0)
		if i == 0 {
			ce.Tc.Timers.Posix = r.timers
			ce.Tc.SignalsS = r.signals
		}
		out = append(out, image{images.CoreName(th.vtid), []proto.Message{ce}})
	}
	fdEntries := make([]proto.Message, len(r.fds))
	for i, e := range r.fds {
		fdEntries[i] = e
	}
	if r.uts != nil {
		out = append(out, image{images.UtsnsName(ids.GetUtsNsId()), []proto.Message{r.uts}})
	}
	return append(out,
		image{images.IDsName(pid), []proto.Message{ids}},
		image{images.MmName(pid), []proto.Message{mme}},
		image{images.FsName(pid), []proto.Message{&fs.FsEntry{CwdId: proto.Uint32(cwdID), RootId: proto.Uint32(rootID), Umask: proto.Uint32(info.status.Umask)}}},
		image{images.FdinfoName(ids.GetFilesId()), fdEntries},
	), nil
}

// pstreeEntry is the process's line in pstree.img (the root's parent is recorded as 0, as CRIU does).
func (r *result) pstreeEntry() *pstree.PstreeEntry {
	p := r.proc
	e := &pstree.PstreeEntry{
		Pid: proto.Uint32(uint32(p.vpid)), Ppid: proto.Uint32(uint32(p.vppid)),
		Pgid: proto.Uint32(uint32(p.vpgid)), Sid: proto.Uint32(uint32(p.vsid)),
	}
	if p.zombie {
		e.Threads = []uint32{uint32(p.vpid)}
	}
	for _, th := range r.threads {
		e.Threads = append(e.Threads, uint32(th.vtid))
	}
	return e
}

// writeImages stores every image but the pages (already written), fsyncs them and the directory, and
// writes the inventory last.
//
// A lazy dump (a migration source) writes its images without any fsync (durable false): the fsyncs cost
// milliseconds of downtime, and they would protect nothing. The dumped tree stays alive until the
// destination confirms that it has everything (these images, fetched through the page server, and every
// lazy page), and the lazy pages are never in the images: a crash of the source machine loses the
// process whether its images were synced or not. An ordinary dump, which kills the tree, syncs first.
func writeImages(d *images.Dir, results []*result, ft *fileTable, st *Stats, frozen time.Time, durable bool) error {
	var all []image
	var tree []proto.Message
	for _, r := range results {
		tree = append(tree, r.pstreeEntry())
		if r.proc.zombie {
			all = append(all, image{images.CoreName(r.proc.vpid), []proto.Message{zombieCore(r.proc)}})
			continue
		}
		imgs, err := r.images(ft)
		if err != nil {
			return fmt.Errorf("process %d: %w", r.proc.pid, err)
		}
		all = append(all, imgs...)
	}
	fileEntries := make([]proto.Message, len(ft.entries))
	for i, e := range ft.entries {
		fileEntries[i] = e
	}
	all = append(all, image{images.PstreeName, tree}, image{images.FilesName, fileEntries})
	for _, e := range ft.extra {
		all = append(all, image{e.name, e.entries})
	}
	for _, w := range all {
		if err := d.Write(w.name, w.entries...); err != nil {
			return fmt.Errorf("write %s: %w", w.name, err)
		}
	}
	for _, w := range ft.extraRaw {
		if err := w(d); err != nil {
			return err
		}
	}
	st.FrozenTime = time.Since(frozen)
	if err := d.Write(images.StatsDumpName, statsEntry(st)); err != nil {
		return fmt.Errorf("write %s: %w", images.StatsDumpName, err)
	}
	if durable {
		if err := d.Sync(); err != nil {
			return err
		}
	}
	inv := &inventory.InventoryEntry{
		ImgVersion:  proto.Uint32(imgVersion),
		FdinfoPerId: proto.Bool(true),
		RootIds:     results[0].ids(),
		NsPerId:     proto.Bool(true),
		Lsmtype:     inventory.Lsmtype_NO_LSM.Enum(),
		DumpUptime:  proto.Uint64(uptimeMicros()),
	}
	if err := d.Write(images.InventoryName, inv); err != nil {
		return fmt.Errorf("write %s: %w", images.InventoryName, err)
	}
	if !durable {
		return nil
	}
	return d.Sync()
}

func statsEntry(st *Stats) *stats.StatsEntry {
	us := func(d time.Duration) *uint32 { return proto.Uint32(uint32(d.Microseconds())) }
	return &stats.StatsEntry{Dump: &stats.DumpStatsEntry{
		FreezingTime: us(st.FreezingTime), FrozenTime: us(st.FrozenTime),
		MemdumpTime: us(st.MemdumpTime), MemwriteTime: us(st.MemwriteTime),
		PagesScanned: proto.Uint64(st.PagesScanned), PagesSkippedParent: proto.Uint64(0),
		PagesWritten: proto.Uint64(st.PagesWritten), PagesLazy: proto.Uint64(st.PagesLazy),
	}}
}

func uptimeMicros() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return uint64(ts.Nano() / 1000)
}
