package restore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	fsimg "github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/utsns"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"

	"github.com/lazyr/lazyr/images"
)

// treePlan is a fully read and checked image set: its processes, parents before children.
type treePlan struct {
	procs []*plan
	byPid map[int]*plan
	// newPidNS: the root is the init (pid 1) of its own PID namespace; the tree is restored into a fresh
	// one, with the same pids inside it.
	newPidNS bool
	uts      *utsns.UtsnsEntry // the tree's own UTS namespace, if it had one
	// ipc: the tree's IPC namespace (its own, or the System V segments it attached in lazyr's); nil when
	// there is nothing to restore of it (ipc_ns.go).
	ipc *ipcRestore
}

// plan is one process of the image set (the file table and pipe data are shared by all).
type plan struct {
	dir     *images.Dir
	pid     int
	tree    *pstree.PstreeEntry
	core    *criu_core.CoreEntry // the thread-group leader's
	threads []threadPlan         // the other threads
	zombie  bool
	parent  *plan
	mm      *mm.MmEntry
	vmas    []*vma.VmaEntry // sorted by start
	pagemap *images.Pagemap
	fds     []*fdinfo.FdinfoEntry
	fs      *fsimg.FsEntry
	files   map[uint32]*fdinfo.FileEntry // shared by the whole tree
	pipes   map[uint32][]byte            // shared by the whole tree
}

// CRIU's task states (core.tc.task_state).
const (
	taskAlive = 1
	taskDead  = 2
)

// threadPlan is a non-leader thread.
type threadPlan struct {
	tid  int
	core *criu_core.CoreEntry
}

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadImages, fmt.Sprintf(format, args...))
}

// load reads every image needed and checks that they fit together, before anything is created.
func load(path string) (*treePlan, error) {
	if st, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: images directory %s does not exist", ErrBadImages, path)
		}
		return nil, fmt.Errorf("images directory %s: %w", path, err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory", ErrBadImages, path)
	}
	d, err := images.Open(path)
	if err != nil {
		return nil, err
	}
	if !d.Exists(images.InventoryName) {
		return nil, bad("%s has no %s: not a complete image set (did the dump fail?)", path, images.InventoryName)
	}
	inv, err := images.ReadOne[inventory.InventoryEntry](d, images.InventoryName)
	if err != nil {
		return nil, wrapImg(images.InventoryName, err)
	}
	if inv.GetImgVersion() != 2 {
		return nil, bad("inventory: image version %d, lazyr reads version 2", inv.GetImgVersion())
	}
	trees, err := images.Read[pstree.PstreeEntry](d, images.PstreeName)
	if err != nil {
		return nil, wrapImg(images.PstreeName, err)
	}
	if len(trees) == 0 {
		return nil, bad("%s lists no process", images.PstreeName)
	}
	files, err := images.Read[fdinfo.FileEntry](d, images.FilesName)
	if err != nil {
		return nil, wrapImg(images.FilesName, err)
	}
	fileMap := map[uint32]*fdinfo.FileEntry{}
	for _, f := range files {
		fileMap[f.GetId()] = f
	}
	pipes, err := d.ReadPipeData()
	if err != nil {
		return nil, wrapImg(images.PipesDataName, err)
	}
	pipeMap := map[uint32][]byte{}
	for _, pd := range pipes {
		pipeMap[pd.PipeID] = pd.Data
	}
	tp := &treePlan{byPid: map[int]*plan{}}
	for i, e := range trees {
		p := &plan{dir: d, tree: e, pid: int(e.GetPid()), files: fileMap, pipes: pipeMap}
		if _, dup := tp.byPid[p.pid]; dup {
			return nil, bad("%s lists process %d twice", images.PstreeName, p.pid)
		}
		if i > 0 {
			if p.parent = tp.byPid[int(e.GetPpid())]; p.parent == nil {
				return nil, bad("%s: the parent %d of process %d comes after it or is missing", images.PstreeName, e.GetPpid(), p.pid)
			}
		}
		if err := p.load(); err != nil {
			return nil, err
		}
		tp.procs = append(tp.procs, p)
		tp.byPid[p.pid] = p
	}
	root := tp.procs[0]
	if root.zombie {
		return nil, bad("the root process %d is a zombie", root.pid)
	}
	tp.newPidNS = root.pid == 1
	// A utsns image exists only for a tree with a UTS namespace of its own (with or without its own PID
	// namespace): it is restored into a fresh one.
	if ids := root.core.GetIds(); ids != nil && d.Exists(images.UtsnsName(ids.GetUtsNsId())) {
		if tp.uts, err = images.ReadOne[utsns.UtsnsEntry](d, images.UtsnsName(ids.GetUtsNsId())); err != nil {
			return nil, wrapImg(images.UtsnsName(ids.GetUtsNsId()), err)
		}
	}
	if tp.ipc, err = loadIPC(d, root, tp.procs); err != nil {
		return nil, err
	}
	return tp, nil
}

// remoteMemory reports whether some pages are marked lazy but are not in the pages files (a post-copy
// migration source, dump --lazy-pages, kept them to serve): only a lazy restore fed by a page server has
// them.
func (tp *treePlan) remoteMemory() bool {
	for _, p := range tp.procs {
		if p.pagemap == nil {
			continue // a zombie
		}
		for _, e := range p.pagemap.Extents {
			if e.Flags&images.PELazy != 0 && !e.Present() {
				return true
			}
		}
	}
	return false
}

func wrapImg(name string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrBadImages, name, err)
}

// load reads one process's images.
func (p *plan) load() error {
	d := p.dir
	var err error
	if p.core, err = images.ReadOne[criu_core.CoreEntry](d, images.CoreName(p.pid)); err != nil {
		return wrapImg(images.CoreName(p.pid), err)
	}
	if p.core.GetMtype() != criu_core.CoreEntry_X86_64 || p.core.GetTc() == nil {
		return bad("%s: not an x86-64 task core", images.CoreName(p.pid))
	}
	if p.core.GetTc().GetTaskState() == taskDead {
		p.zombie = true
		return nil
	}
	if p.core.GetTc().GetTaskState() != taskAlive {
		return fmt.Errorf("process %d in task state %d: %w", p.pid, p.core.GetTc().GetTaskState(), ErrUnsupported)
	}
	if err := checkThreadCore(p.pid, p.core); err != nil {
		return err
	}
	tids := p.tree.GetThreads()
	if len(tids) == 0 || int(tids[0]) != p.pid {
		return bad("%s: the first thread of process %d is not its leader", images.PstreeName, p.pid)
	}
	for _, tid := range tids[1:] {
		c, err := images.ReadOne[criu_core.CoreEntry](d, images.CoreName(int(tid)))
		if err != nil {
			return wrapImg(images.CoreName(int(tid)), err)
		}
		if err := checkThreadCore(int(tid), c); err != nil {
			return err
		}
		p.threads = append(p.threads, threadPlan{tid: int(tid), core: c})
	}
	if p.mm, err = images.ReadOne[mm.MmEntry](d, images.MmName(p.pid)); err != nil {
		return wrapImg(images.MmName(p.pid), err)
	}
	p.vmas = append(p.vmas, p.mm.GetVmas()...)
	sort.Slice(p.vmas, func(i, j int) bool { return p.vmas[i].GetStart() < p.vmas[j].GetStart() })
	for i, v := range p.vmas {
		if v.GetStart() >= v.GetEnd() || v.GetStart()%images.PageSize != 0 || v.GetEnd()%images.PageSize != 0 {
			return bad("%s: bad mapping %#x-%#x", images.MmName(p.pid), v.GetStart(), v.GetEnd())
		}
		if i > 0 && p.vmas[i-1].GetEnd() > v.GetStart() {
			return bad("%s: overlapping mappings at %#x", images.MmName(p.pid), v.GetStart())
		}
	}
	if p.pagemap, err = d.ReadPagemap(p.pid); err != nil {
		return wrapImg(images.PagemapName(p.pid), err)
	}
	for _, e := range p.pagemap.Extents {
		// An extent may run over several adjacent mappings; every page must be in one.
		for addr := e.Vaddr; addr < e.End(); {
			v := p.vmaAt(addr)
			if v == nil {
				return bad("%s: pages at %#x lie outside every mapping", images.PagemapName(p.pid), addr)
			}
			addr = v.GetEnd()
		}
	}
	ids := p.core.GetIds()
	filesID := uint32(1)
	if ids != nil {
		filesID = ids.GetFilesId()
	}
	if d.Exists(images.FdinfoName(filesID)) {
		if p.fds, err = images.Read[fdinfo.FdinfoEntry](d, images.FdinfoName(filesID)); err != nil {
			return wrapImg(images.FdinfoName(filesID), err)
		}
	}
	for _, fd := range p.fds {
		if p.files[fd.GetId()] == nil {
			return bad("fd %d refers to file id %d missing from %s", fd.GetFd(), fd.GetId(), images.FilesName)
		}
	}
	if p.fs, err = images.ReadOne[fsimg.FsEntry](d, images.FsName(p.pid)); err != nil {
		return wrapImg(images.FsName(p.pid), err)
	}
	for _, id := range []uint32{p.fs.GetCwdId(), p.fs.GetRootId(), p.mm.GetExeFileId()} {
		if p.files[id].GetReg() == nil {
			return bad("file id %d (cwd, root or executable) missing from %s", id, images.FilesName)
		}
	}
	for _, v := range p.vmas {
		if f := p.files[uint32(v.GetShmid())]; v.GetStatus()&(images.VMAFilePrivate|images.VMAFileShared) != 0 &&
			f.GetReg() == nil && (v.GetStatus()&images.VMAAreaMemfd == 0 || f.GetMemfd() == nil) {
			return bad("mapping %#x refers to file id %d missing from %s", v.GetStart(), v.GetShmid(), images.FilesName)
		}
	}
	return nil
}

// checkThreadCore checks that a thread's core has what restore needs.
func checkThreadCore(tid int, c *criu_core.CoreEntry) error {
	ti := c.GetThreadInfo()
	if c.GetMtype() != criu_core.CoreEntry_X86_64 || ti == nil || ti.GetGpregs() == nil || ti.GetFpregs() == nil || c.GetThreadCore() == nil {
		return bad("%s: not an x86-64 thread core with registers", images.CoreName(tid))
	}
	return nil
}

func (p *plan) vmaAt(addr uint64) *vma.VmaEntry {
	i := sort.Search(len(p.vmas), func(i int) bool { return p.vmas[i].GetEnd() > addr })
	if i < len(p.vmas) && p.vmas[i].GetStart() <= addr {
		return p.vmas[i]
	}
	return nil
}

func (p *plan) path(id uint32) string { return p.files[id].GetReg().GetName() }
