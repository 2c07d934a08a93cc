package restore

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	ipc_shm "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-shm"
	ipc_var "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-var"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/sys"
)

// The IPC namespace. A tree dumped with an IPC namespace of its own (ipcns-var-NSID.img, NSID the root's
// ipc_ns_id) gets a fresh one, made with the root (CLONE_NEWIPC); before any task is built lazyr joins it
// from a thread of its own, sets its sysctls and creates its System V objects with their dumped ids
// (kernel.{shm,msg,sem}_next_id make the next create use an id). A tree dumped in lazyr's namespace has
// only the shared memory segments it attached: one still there (the dump killed the tree, the segment
// lived on) is attached as it is, a missing one is created again with its id. Once every task has
// attached its segments, the ones that were marked IPC_RMID are marked again, and the sysctls that would
// disturb the restore itself (the *_next_id asked for by the tree, shm_rmid_forced) are set last.

// ErrIPCIDInUse: a System V object the images need cannot get its id, another object has it.
var ErrIPCIDInUse = errors.New("System V IPC id in use")

// ipcRestore is the tree's IPC namespace while it is restored. A nil *ipcRestore (nothing to do) is valid.
type ipcRestore struct {
	nsID  uint32
	newNS bool                 // a fresh IPC namespace is made with the root
	vars  *ipc_var.IpcVarEntry // its sysctls (newNS)
	segs  []images.IpcShm      // sorted by id
	byID  map[uint32]*ipc_shm.IpcShmEntry
	msgs  []images.IpcMsgQueue // newNS
	sems  []images.IpcSem      // newNS

	pid     int   // a task in the namespace, as lazyr sees it (set by prepare)
	created []int // segments this restore created in lazyr's namespace (removed again if it fails)
	rmid    []int // segments to mark IPC_RMID once every task has attached
}

// loadIPC reads the IPC images of the tree whose root is root, and checks that every System V attach of
// every process has its segment.
func loadIPC(d *images.Dir, root *plan, procs []*plan) (*ipcRestore, error) {
	ir := &ipcRestore{byID: map[uint32]*ipc_shm.IpcShmEntry{}}
	if ids := root.core.GetIds(); ids != nil && ids.IpcNsId != nil {
		ir.nsID = ids.GetIpcNsId()
		if name := images.IpcVarName(ir.nsID); d.Exists(name) {
			ir.newNS = true
			var err error
			if ir.vars, err = images.ReadOne[ipc_var.IpcVarEntry](d, name); err != nil {
				return nil, wrapImg(name, err)
			}
		}
		if name := images.IpcShmName(ir.nsID); d.Exists(name) {
			segs, err := d.ReadIpcShm(ir.nsID)
			if err != nil {
				return nil, wrapImg(name, err)
			}
			for _, s := range segs {
				id := s.Entry.GetDesc().GetId()
				if s.Entry.GetDesc() == nil || ir.byID[id] != nil {
					return nil, bad("%s: segment %d listed twice or without its description", name, id)
				}
				ir.byID[id] = s.Entry
				ir.segs = append(ir.segs, s)
			}
		}
		if name := images.IpcMsgName(ir.nsID); ir.newNS && d.Exists(name) {
			var err error
			if ir.msgs, err = d.ReadIpcMsg(ir.nsID); err != nil {
				return nil, wrapImg(name, err)
			}
		}
		if name := images.IpcSemName(ir.nsID); ir.newNS && d.Exists(name) {
			var err error
			if ir.sems, err = d.ReadIpcSem(ir.nsID); err != nil {
				return nil, wrapImg(name, err)
			}
		}
	}
	for _, p := range procs {
		for _, v := range p.vmas {
			if v.GetStatus()&images.VMAAreaSysVIPC != 0 && ir.byID[uint32(v.GetShmid())] == nil {
				return nil, bad("mapping %#x of process %d attaches System V segment %d, which is not in %s",
					v.GetStart(), p.pid, v.GetShmid(), images.IpcShmName(ir.nsID))
			}
		}
	}
	if !ir.newNS && len(ir.segs) == 0 {
		return nil, nil
	}
	return ir, nil
}

// newNamespace reports whether the root is to be made in a fresh IPC namespace.
func (ir *ipcRestore) newNamespace() bool { return ir != nil && ir.newNS }

// prepare sets up the namespace that the task pid is in: sysctls and objects.
// Preconditions: called from Tracer.Do (the calling thread is in lazyr's own IPC namespace); no task
// has been built yet.
func (ir *ipcRestore) prepare(pid int, d *images.Dir) error {
	if ir == nil {
		return nil
	}
	ir.pid = pid
	err := sys.InNamespaceOf(pid, "ipc", func() error {
		if ir.newNS {
			if err := writeIPCVars(ir.vars, false); err != nil {
				return err
			}
		}
		for _, s := range ir.segs {
			if err := ir.prepareSegment(d, s); err != nil {
				return fmt.Errorf("System V shared memory segment %d: %w", s.Entry.GetDesc().GetId(), err)
			}
		}
		if err := createMsgQueues(ir.msgs); err != nil {
			return err
		}
		return createSemSets(ir.sems)
	})
	if err != nil {
		return fmt.Errorf("IPC namespace: %w", err)
	}
	return nil
}

// finish marks the segments that were marked IPC_RMID again, now that every task has attached them, and
// sets the sysctls left for last.
// Preconditions: every task of the tree is built and still stopped.
func (ir *ipcRestore) finish() error {
	if ir == nil {
		return nil
	}
	err := sys.InNamespaceOf(ir.pid, "ipc", func() error {
		for _, id := range ir.rmid {
			if _, err := unix.SysvShmCtl(id, unix.IPC_RMID, nil); err != nil {
				return fmt.Errorf("mark System V segment %d IPC_RMID: %w", id, err)
			}
		}
		if ir.newNS {
			return writeIPCVars(ir.vars, true)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("IPC namespace: %w", err)
	}
	return nil
}

// undo removes the segments a failed restore created in lazyr's namespace (a fresh namespace goes away
// with its tasks). The tasks may be gone already: this runs in lazyr's namespace directly.
func (ir *ipcRestore) undo() {
	if ir == nil || ir.newNS {
		return
	}
	for _, id := range ir.created {
		_, _ = unix.SysvShmCtl(id, unix.IPC_RMID, nil)
	}
	ir.created = nil
}

// writeSysctl writes a sysctl of the calling thread's namespaces (/proc/sys/NAME).
func writeSysctl(name, value string) error {
	if err := os.WriteFile("/proc/sys/"+name, []byte(value), 0); err != nil {
		return fmt.Errorf("sysctl %s = %s: %w", name, value, err)
	}
	return nil
}

// writeIPCVars writes the namespace's sysctls: without late those a restore can have from the start,
// with late the *_next_id the tree had asked for and shm_rmid_forced (which would destroy segments lazyr
// created and no task has attached yet).
func writeIPCVars(v *ipc_var.IpcVarEntry, late bool) error {
	type ctl struct {
		name string
		val  *uint64
	}
	u32 := func(p *uint32) *uint64 {
		if p == nil {
			return nil
		}
		n := uint64(*p)
		return &n
	}
	var ctls []ctl
	if late {
		ctls = []ctl{
			{"kernel/msg_next_id", u32(v.MsgNextId)}, {"kernel/sem_next_id", u32(v.SemNextId)},
			{"kernel/shm_next_id", u32(v.ShmNextId)}, {"kernel/shm_rmid_forced", u32(v.ShmRmidForced)},
		}
	} else {
		if sem := v.GetSemCtls(); len(sem) > 0 {
			s := make([]string, len(sem))
			for i, n := range sem {
				s[i] = strconv.FormatUint(uint64(n), 10)
			}
			if err := writeSysctl("kernel/sem", strings.Join(s, " ")); err != nil {
				return err
			}
		}
		// kernel/auto_msgmni is left alone: writing it has had no effect since Linux 4.x (beyond a line in
		// the kernel log).
		ctls = []ctl{
			{"kernel/msgmax", u32(v.MsgCtlmax)}, {"kernel/msgmnb", u32(v.MsgCtlmnb)}, {"kernel/msgmni", u32(v.MsgCtlmni)},
			{"kernel/shmmax", v.ShmCtlmax}, {"kernel/shmall", v.ShmCtlall}, {"kernel/shmmni", u32(v.ShmCtlmni)},
			{"fs/mqueue/queues_max", u32(v.MqQueuesMax)}, {"fs/mqueue/msg_max", u32(v.MqMsgMax)},
			{"fs/mqueue/msgsize_max", u32(v.MqMsgsizeMax)}, {"fs/mqueue/msg_default", u32(v.MqMsgDefault)},
			{"fs/mqueue/msgsize_default", u32(v.MqMsgsizeDefault)},
		}
	}
	for _, c := range ctls {
		if c.val == nil {
			continue // not in the image (an optional field)
		}
		if err := writeSysctl(c.name, strconv.FormatUint(*c.val, 10)); err != nil {
			return err
		}
	}
	return nil
}

// createWithID creates a System V object with a given id: the namespace's kernel.KIND_next_id makes the
// next create use it. If the index part of the id is taken the kernel picks another free slot; that one
// is removed again and the id reported taken.
func createWithID(kind string, id int, create func() (int, error), remove func(id int)) error {
	if err := writeSysctl("kernel/"+kind+"_next_id", strconv.Itoa(id)); err != nil {
		return err
	}
	got, err := create()
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("its key is taken by another object: %w: %w", ErrIPCIDInUse, err)
		}
		return err
	}
	if got != id {
		remove(got)
		return fmt.Errorf("created with id %d instead of %d, whose slot another object has: %w", got, id, ErrIPCIDInUse)
	}
	return nil
}

// readSysctlInt reads a number sysctl of the calling thread's namespaces.
func readSysctlInt(name string) (int64, error) {
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return 0, fmt.Errorf("sysctl %s: %w", name, err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("sysctl %s: %w", name, err)
	}
	return n, nil
}
