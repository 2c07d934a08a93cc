package images

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
)

// Summary is a short description of a dump directory (lazyr show --summary).
type Summary struct {
	Dir       string           `json:"dir"`
	Processes []ProcessSummary `json:"processes"`
}

// ProcessSummary describes one dumped process. Parts whose images are
// missing (a zombie has no mm, for instance) are left empty.
type ProcessSummary struct {
	PID     uint32 `json:"pid"`
	PPID    uint32 `json:"ppid"`
	PGID    uint32 `json:"pgid"`
	SID     uint32 `json:"sid"`
	Threads int    `json:"threads"`
	Comm    string `json:"comm,omitempty"`
	State   string `json:"state,omitempty"`

	VMAs        int    `json:"vmas"`
	VMABytes    uint64 `json:"vma_bytes"`
	DumpedPages uint64 `json:"dumped_pages"`
	DumpedBytes uint64 `json:"dumped_bytes"`
	LazyPages   uint64 `json:"lazy_pages,omitempty"` // pages flagged PELazy, stored or not

	Fds  []FdSummary `json:"fds,omitempty"`
	Cwd  string      `json:"cwd,omitempty"`
	Root string      `json:"root,omitempty"`
}

// FdSummary is one open file descriptor.
type FdSummary struct {
	Fd   uint32 `json:"fd"`
	Type string `json:"type"`
	Path string `json:"path"`
}

// taskStates names core.tc.task_state (CRIU's compel task-state.h).
var taskStates = map[uint32]string{1: "alive", 2: "dead", 3: "stopped", 6: "zombie"}

// Summarize reads pstree.img and, per process, its core, mm, pagemap,
// ids, fdinfo and fs images plus files.img. Missing per-process images are
// skipped; corrupt ones are errors.
func Summarize(d *Dir) (*Summary, error) {
	tree, err := Read[pstree.PstreeEntry](d, PstreeName)
	if err != nil {
		return nil, err
	}
	files, err := optional(Read[fdinfo.FileEntry](d, FilesName))
	if err != nil {
		return nil, err
	}
	byID := make(map[uint32]*fdinfo.FileEntry, len(files))
	for _, f := range files {
		byID[f.GetId()] = f
	}
	s := &Summary{Dir: d.Path()}
	for _, t := range tree {
		p, err := summarizeProcess(d, t, byID)
		if err != nil {
			return nil, err
		}
		s.Processes = append(s.Processes, p)
	}
	return s, nil
}

// optional maps a missing image to an empty result.
func optional[T any](v T, err error) (T, error) {
	if errors.Is(err, ErrNotFound) {
		var zero T
		return zero, nil
	}
	return v, err
}

func summarizeProcess(d *Dir, t *pstree.PstreeEntry, files map[uint32]*fdinfo.FileEntry) (ProcessSummary, error) {
	pid := int(t.GetPid())
	p := ProcessSummary{PID: t.GetPid(), PPID: t.GetPpid(), PGID: t.GetPgid(), SID: t.GetSid(), Threads: len(t.GetThreads())}

	core, err := optional(ReadOne[criu_core.CoreEntry](d, CoreName(pid)))
	if err != nil {
		return p, err
	}
	if core != nil {
		p.Comm = core.GetTc().GetComm()
		if st, ok := taskStates[core.GetTc().GetTaskState()]; ok {
			p.State = st
		}
	}

	m, err := optional(ReadOne[mm.MmEntry](d, MmName(pid)))
	if err != nil {
		return p, err
	}
	for _, v := range m.GetVmas() {
		p.VMAs++
		if v.GetEnd() > v.GetStart() {
			p.VMABytes += v.GetEnd() - v.GetStart()
		}
	}

	if d.Exists(PagemapName(pid)) {
		pm, err := d.ReadPagemap(pid)
		if err != nil {
			return p, err
		}
		p.DumpedPages = pm.TotalPages()
		p.DumpedBytes = p.DumpedPages * PageSize
		for _, e := range pm.Extents {
			if e.Flags&PELazy != 0 {
				p.LazyPages += e.NrPages
			}
		}
	}

	ids, err := optional(ReadOne[criu_core.TaskKobjIdsEntry](d, IDsName(pid)))
	if err != nil {
		return p, err
	}
	if ids != nil {
		fds, err := optional(Read[fdinfo.FdinfoEntry](d, FdinfoName(ids.GetFilesId())))
		if err != nil {
			return p, err
		}
		for _, fd := range fds {
			p.Fds = append(p.Fds, FdSummary{Fd: fd.GetFd(), Type: fd.GetType().String(), Path: filePath(files, fd.GetId(), fd.GetType())})
		}
	}

	fsEntry, err := optional(ReadOne[fs.FsEntry](d, FsName(pid)))
	if err != nil {
		return p, err
	}
	if fsEntry != nil {
		p.Cwd = filePath(files, fsEntry.GetCwdId(), fdinfo.FdTypes_REG)
		p.Root = filePath(files, fsEntry.GetRootId(), fdinfo.FdTypes_REG)
	}
	return p, nil
}

// filePath describes file id the way /proc/PID/fd links read, as far as
// files.img tells.
func filePath(files map[uint32]*fdinfo.FileEntry, id uint32, typ fdinfo.FdTypes) string {
	f := files[id]
	if f == nil {
		return fmt.Sprintf("%s.%d", typ, id)
	}
	switch {
	case f.GetReg() != nil:
		return f.GetReg().GetName()
	case f.GetPipe() != nil:
		return fmt.Sprintf("pipe:[%d]", f.GetPipe().GetPipeId())
	case f.GetFifo() != nil:
		if r := files[f.GetFifo().GetId()]; r != nil && r.GetReg() != nil {
			return r.GetReg().GetName()
		}
		return fmt.Sprintf("fifo:[%d]", f.GetFifo().GetPipeId())
	case f.GetUsk() != nil:
		if name := f.GetUsk().GetName(); len(name) > 0 {
			// Abstract names start with a NUL byte; ss(8) shows it as '@'.
			if name[0] == 0 {
				return "@" + string(name[1:])
			}
			return string(name)
		}
		return fmt.Sprintf("socket:[%d]", f.GetUsk().GetIno())
	case f.GetIsk() != nil:
		return fmt.Sprintf("socket:[%d]", f.GetIsk().GetIno())
	case f.GetPsk() != nil:
		return fmt.Sprintf("packet:[%d]", f.GetPsk().GetId())
	case f.GetNlsk() != nil:
		return fmt.Sprintf("socket:[%d]", f.GetNlsk().GetIno())
	case f.GetTty() != nil:
		if r := files[f.GetTty().GetRegfId()]; r != nil && r.GetReg() != nil {
			return r.GetReg().GetName()
		}
	case f.GetEfd() != nil:
		return "anon_inode:[eventfd]"
	case f.GetEpfd() != nil:
		return "anon_inode:[eventpoll]"
	case f.GetSgfd() != nil:
		return "anon_inode:[signalfd]"
	case f.GetTfd() != nil:
		return "anon_inode:[timerfd]"
	case f.GetIfy() != nil:
		return "anon_inode:inotify"
	case f.GetFfy() != nil:
		return "anon_inode:[fanotify]"
	case f.GetMemfd() != nil:
		return fmt.Sprintf("memfd:[inode %d]", f.GetMemfd().GetInodeId())
	case f.GetPidfd() != nil:
		return "anon_inode:[pidfd]"
	}
	return fmt.Sprintf("%s.%d", f.GetType(), id)
}

// WriteText prints the summary as a few aligned tables.
func (s *Summary) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "images: %s\n\n", s.Dir)
	fmt.Fprintln(tw, "PID\tPPID\tPGID\tSID\tTHREADS\tSTATE\tCOMM\tVMAS\tVMA SIZE\tDUMPED PAGES\tDUMPED SIZE\tLAZY PAGES")
	for _, p := range s.Processes {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%s\t%s\t%d\t%s\t%d\t%s\t%d\n",
			p.PID, p.PPID, p.PGID, p.SID, p.Threads, dash(p.State), dash(printable(p.Comm)),
			p.VMAs, countBytes(p.VMABytes), p.DumpedPages, countBytes(p.DumpedBytes), p.LazyPages)
	}
	for _, p := range s.Processes {
		if len(p.Fds) == 0 && p.Cwd == "" && p.Root == "" {
			continue
		}
		fmt.Fprintf(tw, "\nfiles of %d (%s):\n", p.PID, dash(printable(p.Comm)))
		fmt.Fprintln(tw, "FD\tTYPE\tPATH")
		for _, f := range p.Fds {
			fmt.Fprintf(tw, "%d\t%s\t%s\n", f.Fd, f.Type, printable(f.Path))
		}
		if p.Cwd != "" {
			fmt.Fprintf(tw, "cwd\t\t%s\n", printable(p.Cwd))
		}
		if p.Root != "" {
			fmt.Fprintf(tw, "root\t\t%s\n", printable(p.Root))
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printable quotes paths with control characters (they come from the
// dumped process and could otherwise mangle a terminal).
func printable(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		return fmt.Sprintf("%q", s)
	}
	return s
}
