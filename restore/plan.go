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
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"

	"github.com/lazyr/lazyr/images"
)

// plan is a fully read and checked image set for one process.
type plan struct {
	dir     *images.Dir
	pid     int
	tree    *pstree.PstreeEntry
	core    *criu_core.CoreEntry
	mm      *mm.MmEntry
	vmas    []*vma.VmaEntry // sorted by start
	pagemap *images.Pagemap
	files   map[uint32]*fdinfo.FileEntry
	fds     []*fdinfo.FdinfoEntry
	fs      *fsimg.FsEntry
	pipes   map[uint32][]byte
}

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadImages, fmt.Sprintf(format, args...))
}

// load reads every image needed and checks that they fit together, before anything is created.
func load(path string) (*plan, error) {
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
	wrap := func(name string, err error) error {
		return fmt.Errorf("%w: %s: %w", ErrBadImages, name, err)
	}
	if !d.Exists(images.InventoryName) {
		return nil, bad("%s has no %s: not a complete image set (did the dump fail?)", path, images.InventoryName)
	}
	inv, err := images.ReadOne[inventory.InventoryEntry](d, images.InventoryName)
	if err != nil {
		return nil, wrap(images.InventoryName, err)
	}
	if inv.GetImgVersion() != 2 {
		return nil, bad("inventory: image version %d, lazyr reads version 2", inv.GetImgVersion())
	}
	trees, err := images.Read[pstree.PstreeEntry](d, images.PstreeName)
	if err != nil {
		return nil, wrap(images.PstreeName, err)
	}
	if len(trees) != 1 {
		return nil, fmt.Errorf("image set holds %d processes: process trees: %w", len(trees), ErrUnsupported)
	}
	p := &plan{dir: d, tree: trees[0], pid: int(trees[0].GetPid())}
	if len(p.tree.GetThreads()) != 1 {
		return nil, fmt.Errorf("process %d has %d threads: multi-threaded processes: %w", p.pid, len(p.tree.GetThreads()), ErrUnsupported)
	}
	if p.core, err = images.ReadOne[criu_core.CoreEntry](d, images.CoreName(p.pid)); err != nil {
		return nil, wrap(images.CoreName(p.pid), err)
	}
	if p.core.GetMtype() != criu_core.CoreEntry_X86_64 || p.core.GetThreadInfo() == nil || p.core.GetTc() == nil ||
		p.core.GetThreadInfo().GetGpregs() == nil || p.core.GetThreadInfo().GetFpregs() == nil {
		return nil, bad("%s: not an x86-64 task core with registers", images.CoreName(p.pid))
	}
	if p.mm, err = images.ReadOne[mm.MmEntry](d, images.MmName(p.pid)); err != nil {
		return nil, wrap(images.MmName(p.pid), err)
	}
	p.vmas = append(p.vmas, p.mm.GetVmas()...)
	sort.Slice(p.vmas, func(i, j int) bool { return p.vmas[i].GetStart() < p.vmas[j].GetStart() })
	for i, v := range p.vmas {
		if v.GetStart() >= v.GetEnd() || v.GetStart()%images.PageSize != 0 || v.GetEnd()%images.PageSize != 0 {
			return nil, bad("%s: bad mapping %#x-%#x", images.MmName(p.pid), v.GetStart(), v.GetEnd())
		}
		if i > 0 && p.vmas[i-1].GetEnd() > v.GetStart() {
			return nil, bad("%s: overlapping mappings at %#x", images.MmName(p.pid), v.GetStart())
		}
	}
	if p.pagemap, err = d.ReadPagemap(p.pid); err != nil {
		return nil, wrap(images.PagemapName(p.pid), err)
	}
	for _, e := range p.pagemap.Extents {
		// An extent may run over several adjacent mappings; every page must be in one.
		for addr := e.Vaddr; addr < e.End(); {
			v := p.vmaAt(addr)
			if v == nil {
				return nil, bad("%s: pages at %#x lie outside every mapping", images.PagemapName(p.pid), addr)
			}
			addr = v.GetEnd()
		}
	}
	files, err := images.Read[fdinfo.FileEntry](d, images.FilesName)
	if err != nil {
		return nil, wrap(images.FilesName, err)
	}
	p.files = map[uint32]*fdinfo.FileEntry{}
	for _, f := range files {
		p.files[f.GetId()] = f
	}
	ids := p.core.GetIds()
	filesID := uint32(1)
	if ids != nil {
		filesID = ids.GetFilesId()
	}
	if d.Exists(images.FdinfoName(filesID)) {
		if p.fds, err = images.Read[fdinfo.FdinfoEntry](d, images.FdinfoName(filesID)); err != nil {
			return nil, wrap(images.FdinfoName(filesID), err)
		}
	}
	for _, fd := range p.fds {
		if p.files[fd.GetId()] == nil {
			return nil, bad("fd %d refers to file id %d missing from %s", fd.GetFd(), fd.GetId(), images.FilesName)
		}
	}
	if p.fs, err = images.ReadOne[fsimg.FsEntry](d, images.FsName(p.pid)); err != nil {
		return nil, wrap(images.FsName(p.pid), err)
	}
	for _, id := range []uint32{p.fs.GetCwdId(), p.fs.GetRootId(), p.mm.GetExeFileId()} {
		if p.files[id].GetReg() == nil {
			return nil, bad("file id %d (cwd, root or executable) missing from %s", id, images.FilesName)
		}
	}
	for _, v := range p.vmas {
		if v.GetStatus()&(images.VMAFilePrivate|images.VMAFileShared) != 0 && p.files[uint32(v.GetShmid())].GetReg() == nil {
			return nil, bad("mapping %#x refers to file id %d missing from %s", v.GetStart(), v.GetShmid(), images.FilesName)
		}
	}
	pipes, err := d.ReadPipeData()
	if err != nil {
		return nil, wrap(images.PipesDataName, err)
	}
	p.pipes = map[uint32][]byte{}
	for _, pd := range pipes {
		p.pipes[pd.PipeID] = pd.Data
	}
	return p, nil
}

func (p *plan) vmaAt(addr uint64) *vma.VmaEntry {
	i := sort.Search(len(p.vmas), func(i int) bool { return p.vmas[i].GetEnd() > addr })
	if i < len(p.vmas) && p.vmas[i].GetStart() <= addr {
		return p.vmas[i]
	}
	return nil
}

func (p *plan) path(id uint32) string { return p.files[id].GetReg().GetName() }
