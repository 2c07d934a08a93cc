package dump

import (
	"fmt"
	"time"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
)

// imgVersion is CRIU's CRTOOLS_IMAGES_V1_1 inventory version.
const imgVersion = 2

// result is everything collected from one task, ready to be written.
type result struct {
	pid     int
	dir     *images.Dir
	info    *procInfo
	inj     *injected
	areas   []*area
	files   *fileTable
	sigmask uint64
}

// createDir opens the image directory for writing. A stale inventory from an earlier dump is removed first:
// the inventory marks a complete image set, and this one is not complete until write() ends.
func createDir(path string) (*images.Dir, error) {
	d, err := images.Create(path)
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
	one := proto.Uint32(1)
	return &criu_core.TaskKobjIdsEntry{
		VmId: one, FilesId: one, FsId: one, SighandId: one,
		PidNsId: nsID(r.pid, "pid"), NetNsId: nsID(r.pid, "net"), IpcNsId: nsID(r.pid, "ipc"),
		UtsNsId: nsID(r.pid, "uts"), MntNsId: nsID(r.pid, "mnt"), UserNsId: nsID(r.pid, "user"),
		CgroupNsId: nsID(r.pid, "cgroup"), TimeNsId: nsID(r.pid, "time"),
	}
}

// write stores every image but the pages (already written), fsyncs them and the directory, and writes the
// inventory last.
func (r *result) write(st *Stats, frozen time.Time) error {
	d, pid, info := r.dir, r.pid, r.info
	ids := r.ids()
	exeID, err := r.files.mapped(info.exe, unix.O_RDONLY)
	if err != nil {
		return fmt.Errorf("executable %s: %w", info.exe, err)
	}
	cwdID, err := r.files.mapped(info.cwd, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("cwd %s: %w", info.cwd, err)
	}
	rootID, err := r.files.mapped(info.root, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("root %s: %w", info.root, err)
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
	writes := []struct {
		name    string
		entries []proto.Message
	}{
		{images.CoreName(pid), []proto.Message{coreEntry(info, r.inj, r.sigmask, ids)}},
		{images.IDsName(pid), []proto.Message{ids}},
		{images.MmName(pid), []proto.Message{mme}},
		{images.FsName(pid), []proto.Message{&fs.FsEntry{CwdId: proto.Uint32(cwdID), RootId: proto.Uint32(rootID), Umask: proto.Uint32(info.status.Umask)}}},
		{images.PstreeName, []proto.Message{&pstree.PstreeEntry{
			Pid: proto.Uint32(uint32(pid)), Ppid: proto.Uint32(0),
			Pgid: proto.Uint32(uint32(s.Pgrp)), Sid: proto.Uint32(uint32(s.Session)),
			Threads: []uint32{uint32(pid)},
		}}},
	}
	fdEntries := make([]proto.Message, len(r.files.fds))
	for i, e := range r.files.fds {
		fdEntries[i] = e
	}
	writes = append(writes, struct {
		name    string
		entries []proto.Message
	}{images.FdinfoName(ids.GetFilesId()), fdEntries})
	fileEntries := make([]proto.Message, len(r.files.entries))
	for i, e := range r.files.entries {
		fileEntries[i] = e
	}
	writes = append(writes, struct {
		name    string
		entries []proto.Message
	}{images.FilesName, fileEntries})
	for _, w := range writes {
		if err := d.Write(w.name, w.entries...); err != nil {
			return fmt.Errorf("write %s: %w", w.name, err)
		}
	}
	for _, e := range r.files.extra {
		if err := d.Write(e.name, e.entries...); err != nil {
			return fmt.Errorf("write %s: %w", e.name, err)
		}
	}
	for _, w := range r.files.extraRaw {
		if err := w(d); err != nil {
			return err
		}
	}
	st.FrozenTime = time.Since(frozen)
	if err := d.Write(images.StatsDumpName, statsEntry(st)); err != nil {
		return fmt.Errorf("write %s: %w", images.StatsDumpName, err)
	}
	if err := d.Sync(); err != nil {
		return err
	}
	inv := &inventory.InventoryEntry{
		ImgVersion:  proto.Uint32(imgVersion),
		FdinfoPerId: proto.Bool(true),
		RootIds:     ids,
		NsPerId:     proto.Bool(true),
		Lsmtype:     inventory.Lsmtype_NO_LSM.Enum(),
		DumpUptime:  proto.Uint64(uptimeMicros()),
	}
	if err := d.Write(images.InventoryName, inv); err != nil {
		return fmt.Errorf("write %s: %w", images.InventoryName, err)
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
