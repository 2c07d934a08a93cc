package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/compel"
	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/regs"
)

// threadFlags make a new thread of the calling task's process.
const threadFlags = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD | unix.CLONE_SYSVSEM

// Run restores the image set in opts.ImagesDir and leaves the processes running. tr is the tracer whose
// thread does all ptrace work; the root process's parent is that thread (see package compel).
func Run(ctx context.Context, tr *compel.Tracer, opts Options) (*Result, error) {
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	start := time.Now()
	early := startStub(tr, log)
	defer early.discard()
	tp, err := load(opts.ImagesDir)
	if err != nil {
		return nil, err
	}
	log.Debug("images read", zap.Duration("elapsed", time.Since(start)), zap.Int("processes", len(tp.procs)))
	if !opts.LazyPages && tp.remoteMemory() {
		// An eager restore would leave those pages zero: a process running on wrong memory.
		return nil, fmt.Errorf("%w: the images come from a post-copy migration source (dump --lazy-pages) and hold "+
			"no copy of its memory; restore with --lazy-pages and a 'lazyr lazy-pages --page-server' daemon", ErrUnsupported)
	}
	for _, p := range tp.procs {
		if tp.newPidNS {
			break // the pids live in a fresh namespace
		}
		ids := append([]int{p.pid}, p.tids()...)
		for _, id := range ids {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", id)); err == nil {
				comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", id))
				return nil, fmt.Errorf("pid %d is in use (by %q): %w", id, string(trimNL(comm)), ErrPidInUse)
			}
		}
	}
	root := tp.procs[0]
	var lazy *lazyHandoff
	if opts.LazyPages {
		// Before anything is created: a restore whose daemon is not there must fail cleanly.
		if lazy, err = dialLazy(opts.WorkDir, opts.ImagesDir); err != nil {
			return nil, err
		}
		defer lazy.close()
	}
	// Network hook (fd_inet_lock.go): sockets checked and the dump's lock taken over before anything is
	// created (after the cheap checks, so that a restore refused by them leaves the lock for a retry);
	// unlocked right before the tasks run, released on failure.
	network, err := prepareNetwork(root.dir, root.files, &opts, log)
	if err != nil {
		return nil, err
	}
	defer network.close()
	res := &Result{Pid: root.pid}
	err = tr.Do(func() error {
		// Unpinned here, not by a request of its own later: see earlyStub.
		defer tr.Unpin()
		defer func() {
			// The pid lazyr (outside a new PID namespace) sees the root as.
			if t := res.task; t != nil {
				res.Pid = t.Pid
			}
		}()
		r := &treeRestore{tr: tr, tp: tp, opts: opts, lazy: lazy, log: log, tasks: map[int]*compel.Task{}}
		err := r.create(early)
		res.task = r.tasks[root.pid]
		if err != nil {
			r.killAll()
			return err
		}
		res.Stats.ForkingTime = time.Since(start)
		if err := r.build(ctx, &res.Stats); err != nil {
			r.killAll()
			r.tp.ipc.undo()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.Stats.RestoreTime = time.Since(start)
	// The processes run already: a statistics image that cannot be written (a read-only image
	// directory, say) is worth a warning, not a failed restore.
	if err := writeStats(opts.ImagesDir, &res.Stats); err != nil {
		log.Warn("restore statistics not written", zap.String("image", images.StatsRestoreName), zap.Error(err))
	}
	return res, nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == 0) {
		b = b[:len(b)-1]
	}
	return b
}

// tids lists the process's non-leader thread ids.
func (p *plan) tids() []int {
	var out []int
	for _, t := range p.threads {
		out = append(out, t.tid)
	}
	return out
}

// treeRestore is one restore in progress.
// Preconditions for all its methods: called from Tracer.Do.
type treeRestore struct {
	tr       *compel.Tracer
	tp       *treePlan
	opts     Options
	lazy     *lazyHandoff
	log      *zap.Logger
	tasks    map[int]*compel.Task   // leader of every created process, by pid
	threads  map[int][]*compel.Task // other threads, by process
	spaces   map[int]*addressSpace
	shared   *sharedFiles
	shm      map[string]string // shared memory objects created so far (see addressSpace.shm)
	restorer uint64
}

// create makes every process of the tree, each by its own parent so that parent links, sessions and
// groups come out right: the stub clone3()s the root (CLONE_PARENT: lazyr is the parent), the root gets the
// restorer area, and every other process is forked from its parent and inherits it.
func (r *treeRestore) create(early *earlyStub) error {
	tr := r.tp.procs[0]
	stub, err := early.take()
	if err != nil {
		return err
	}
	defer stub.Kill()
	flags := uint64(unix.CLONE_PARENT)
	if r.tp.newPidNS {
		flags |= unix.CLONE_NEWPID
	}
	if r.tp.uts != nil {
		flags |= unix.CLONE_NEWUTS
	}
	if r.tp.ipc.newNamespace() {
		flags |= unix.CLONE_NEWIPC
	}
	t, err := stub.CloneWithPid(tr.pid, flags)
	if err != nil {
		return pidError(tr.pid, err)
	}
	r.tasks[tr.pid] = t
	// Signals stay blocked while lazyr works in the tasks (a zombie's SIGCHLD, say, must not interrupt an
	// injected syscall); children inherit the mask, and setCPU puts the dumped one back.
	if err := t.SetSigMask(^uint64(0)); err != nil {
		return err
	}
	if err := stub.Kill(); err != nil {
		r.log.Debug("killing the stub", zap.Error(err))
	}
	as := &addressSpace{t: t, p: tr}
	if err := as.setupRestorer(r.allVMAs()); err != nil {
		return err
	}
	if err := as.clearStub(); err != nil {
		return err
	}
	r.restorer = as.restorer
	if err := restoreSession(t, tr, r.opts.ShellJob, r.log); err != nil {
		return err
	}
	if r.tp.uts != nil {
		if err := restoreUTS(t, r.tp.uts); err != nil {
			return err
		}
	}
	for _, p := range r.tp.procs[1:] {
		parent := r.tasks[p.parent.pid]
		if parent == nil {
			return fmt.Errorf("%w: process %d has a zombie parent %d", ErrUnsupported, p.pid, p.parent.pid)
		}
		c, err := parent.CloneWithPid(p.pid, 0)
		if err != nil {
			return pidError(p.pid, err)
		}
		r.tasks[p.pid] = c
		if err := restoreSession(c, p, r.opts.ShellJob, r.log); err != nil {
			return fmt.Errorf("process %d: %w", p.pid, err)
		}
	}
	return nil
}

func pidError(pid int, err error) error {
	if errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("pid %d is in use: %w", pid, ErrPidInUse)
	}
	return fmt.Errorf("create task with pid %d: %w", pid, err)
}

// allVMAs lists every mapping of every process, for placing the restorer where none of them lies.
func (r *treeRestore) allVMAs() []span {
	var out []span
	for _, p := range r.tp.procs {
		for _, v := range p.vmas {
			out = append(out, span{v.GetStart(), v.GetEnd()})
		}
	}
	return out
}

// build turns every created task into the dumped one and lets them all run.
func (r *treeRestore) build(ctx context.Context, st *Stats) error {
	r.threads = map[int][]*compel.Task{}
	r.spaces = map[int]*addressSpace{}
	r.shared = newSharedFiles()
	r.shm = map[string]string{}
	// IPC hook (ipc_ns.go): the namespace's sysctls and System V objects are there before any task is
	// built; the segments are marked IPC_RMID again once every task has attached them.
	if err := r.tp.ipc.prepare(r.tasks[r.tp.procs[0].pid].Pid, r.tp.procs[0].dir); err != nil {
		return err
	}
	// Zombies first: they only have to die with their exit code. Children before parents would not
	// matter: a zombie's parent is stopped and does not reap it.
	for _, p := range r.tp.procs {
		if p.zombie {
			if err := makeZombie(r.tasks[p.pid], p); err != nil {
				return fmt.Errorf("zombie %d: %w", p.pid, err)
			}
			delete(r.tasks, p.pid)
		}
	}
	for i, p := range r.tp.procs {
		if p.zombie {
			continue
		}
		if err := r.buildProc(ctx, p, i == 0, st); err != nil {
			return fmt.Errorf("process %d: %w", p.pid, err)
		}
	}
	if err := r.shared.closeStrays(); err != nil {
		return err
	}
	if err := r.tp.ipc.finish(); err != nil {
		return err
	}
	if r.lazy != nil {
		if err := r.lazy.done(); err != nil {
			return err
		}
	}
	// Network hook (fd_inet_lock.go): lock opened and connections out of repair mode before the tasks run.
	if err := r.opts.net.unlock(); err != nil {
		return err
	}
	// Children first: a parent that runs first could wait for a child that is not running yet; harmless,
	// but children-first also makes the root, which lazyr waits for, the last one to go.
	for i := len(r.tp.procs) - 1; i >= 0; i-- {
		p := r.tp.procs[i]
		if p.zombie {
			continue
		}
		if err := r.finish(p); err != nil {
			return fmt.Errorf("process %d: %w", p.pid, err)
		}
	}
	return nil
}

// buildProc rebuilds one process: address space, memory, files, kernel state, threads.
func (r *treeRestore) buildProc(ctx context.Context, p *plan, isRoot bool, st *Stats) error {
	t := r.tasks[p.pid]
	opts, log := r.opts, r.log
	as := &addressSpace{t: t, p: p, restorer: r.restorer, shm: r.shm, sysv: r.tp.ipc}
	r.spaces[p.pid] = as
	if !isRoot {
		if err := as.clearStub(); err != nil { // the parent's mappings and fds at fork time
			return err
		}
	}
	if err := as.moveVDSO(); err != nil {
		return err
	}
	// Which pages the daemon fills: private anonymous memory outside the stack.
	isLazyVMA := func(v *vma.VmaEntry) bool {
		return r.lazy != nil && v.GetStatus()&images.VMAAnonPrivate != 0 && v.GetStatus()&images.VMAAreaStack == 0
	}
	hasPages := func(v *vma.VmaEntry) bool {
		if isLazyVMA(v) {
			return false
		}
		for _, e := range p.pagemap.Extents {
			if e.Vaddr < v.GetEnd() && e.End() > v.GetStart() {
				return true
			}
		}
		return false // no page of it in the image: nothing to write into it
	}
	if err := as.mapAll(hasPages); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	memStart := time.Now()
	// The dump marks exactly the pages of lazy-able mappings PE_LAZY, and never merges them with others.
	skip := func(e images.Extent) bool {
		v := p.vmaAt(e.Vaddr)
		return r.lazy != nil && e.Flags&images.PELazy != 0 && v != nil && isLazyVMA(v)
	}
	if r.lazy != nil {
		n, err := r.lazy.register(t, p, isLazyVMA)
		if err != nil {
			return err
		}
		st.PagesLazy += n
		log.Debug("lazy memory handed to the daemon", zap.Int("pid", p.pid), zap.Duration("elapsed", time.Since(memStart)))
	}
	n, err := fillEager(t, p, skip, opts.Progress)
	if err != nil {
		return err
	}
	st.PagesRestored += n
	st.MemoryTime += time.Since(memStart)
	log.Debug("memory filled", zap.Int("pid", p.pid), zap.Duration("elapsed", time.Since(memStart)))
	if err := as.closeFiles(); err != nil {
		return err
	}
	if err := as.protectAll(); err != nil {
		return err
	}
	if err := as.setMM(); err != nil {
		return err
	}
	if err := restoreFiles(t, p, &opts, r.shared); err != nil {
		return err
	}
	if err := restoreFS(t, p); err != nil {
		return err
	}
	if err := restoreSignals(t, p); err != nil {
		return err
	}
	if err := restoreLimits(t, p, log); err != nil {
		return err
	}
	if err := restoreProcessState(t, p); err != nil {
		return err
	}
	// Threads: cloned by the leader into the rebuilt address space, with their dumped ids.
	for _, th := range p.threads {
		c, err := t.CloneWithPid(th.tid, threadFlags)
		if err != nil {
			return fmt.Errorf("thread %d: %w", th.tid, pidError(th.tid, err))
		}
		r.threads[p.pid] = append(r.threads[p.pid], c)
	}
	if err := restoreThreadState(t, p.core, isRoot, opts); err != nil {
		return err
	}
	for i, th := range p.threads {
		if err := r.threads[p.pid][i].SetSigMask(^uint64(0)); err != nil {
			return err
		}
		if err := restoreThreadState(r.threads[p.pid][i], th.core, isRoot, opts); err != nil {
			return fmt.Errorf("thread %d: %w", th.tid, err)
		}
	}
	// Credentials last: everything above may need root's privileges in the task.
	if err := restoreCreds(t, p, p.core); err != nil {
		return err
	}
	for i, th := range p.threads {
		if err := restoreCreds(r.threads[p.pid][i], p, th.core); err != nil {
			return fmt.Errorf("thread %d: %w", th.tid, err)
		}
	}
	// Pending signals (signals are blocked until the tasks resume), then the timers, which start ticking.
	if err := queueSignals(t, p.pid, p.pid, p.core.GetTc().GetSignalsS(), true); err != nil {
		return err
	}
	if err := queueSignals(t, p.pid, p.pid, p.core.GetThreadCore().GetSignalsP(), false); err != nil {
		return err
	}
	for i, th := range p.threads {
		if err := queueSignals(r.threads[p.pid][i], p.pid, th.tid, th.core.GetThreadCore().GetSignalsP(), false); err != nil {
			return fmt.Errorf("thread %d: %w", th.tid, err)
		}
	}
	if err := restoreTimers(t, p); err != nil {
		return err
	}
	if err := restorePosixTimers(t, p); err != nil {
		return err
	}
	log.Debug("task state restored", zap.Int("pid", p.pid), zap.Duration("elapsed", time.Since(memStart)))
	return nil
}

// finish removes the restorer area and resumes every thread of p with its dumped CPU state.
func (r *treeRestore) finish(p *plan) error {
	leader := r.tasks[p.pid]
	threads := r.threads[p.pid]
	cores := []*threadPlan{{tid: p.pid, core: p.core}}
	for i := range p.threads {
		cores = append(cores, &p.threads[i])
	}
	all := append([]*compel.Task{leader}, threads...)
	// The last injected syscall unmaps the area its own instruction lives in; the single-step trap stops
	// the task right after it, before anything is fetched from the unmapped page. It runs while every
	// signal is still blocked: a restored timer may already be firing.
	if _, err := leader.Syscall(unix.SYS_MUNMAP, r.restorer, restorerSize); err != nil {
		return fmt.Errorf("unmap restorer: %w", err)
	}
	for i, t := range all {
		if err := setCPU(t, cores[i].core); err != nil {
			return fmt.Errorf("thread %d: %w", cores[i].tid, err)
		}
	}
	for i, t := range all {
		gp := cores[i].core.GetThreadInfo().GetGpregs()
		if err := t.SetRegs(regs.PrepareResume(regs.FromImage(gp))); err != nil {
			return err
		}
	}
	// Other threads first, so nothing runs while a sibling is still being set up.
	for i := len(all) - 1; i >= 0; i-- {
		if err := all[i].Detach(); err != nil {
			return err
		}
	}
	return nil
}

// setCPU loads a thread's FPU state and signal mask (the leader's mask is in the task core).
func setCPU(t *compel.Task, core *criu_core.CoreEntry) error {
	base, err := t.XState()
	if err != nil {
		return err
	}
	x, err := regs.FPUFromImage(core.GetThreadInfo().GetFpregs(), base)
	if err != nil {
		return err
	}
	if err := t.SetXState(x); err != nil {
		return err
	}
	mask := core.GetThreadCore().GetBlkSigset()
	if tc := core.GetTc(); tc != nil {
		mask = tc.GetBlkSigset()
	}
	return t.SetSigMask(mask)
}

// makeZombie makes a created task die the way the dumped zombie did, leaving it for its parent to reap.
func makeZombie(t *compel.Task, p *plan) error {
	status := p.core.GetTc().GetExitCode() // a wait status, as /proc/PID/stat shows it
	if err := restoreName(t, p.core.GetTc().GetComm()); err != nil {
		return err
	}
	var err error
	if sig := status & 0x7f; sig != 0 {
		// Killed by a signal: send it to itself with the default action.
		addr, werr := t.WriteScratch(0, le64(0, 0, 0, 0))
		if werr != nil {
			return werr
		}
		if _, err = t.Syscall(unix.SYS_RT_SIGACTION, uint64(sig), addr, 0, 8); err != nil {
			return err
		}
		_, err = t.SyscallRaw(unix.SYS_KILL, nil, uint64(p.pid), uint64(sig))
		if err == nil {
			// The signal is delivered on the way back to user space; let it go.
			_ = t.ContinueWithSignal(unix.Signal(sig))
			err = t.Reap()
		}
	} else {
		_, err = t.SyscallRaw(unix.SYS_EXIT_GROUP, nil, uint64(status>>8))
	}
	if err != nil && !errors.Is(err, compel.ErrExited) {
		return err
	}
	return nil
}

// killAll kills every task created so far (PTRACE_O_EXITKILL would do it when lazyr exits, too).
func (r *treeRestore) killAll() {
	var all []*compel.Task
	for _, t := range r.tasks {
		all = append(all, t)
	}
	for _, ts := range r.threads {
		all = append(all, ts...)
	}
	for _, t := range all {
		_ = unix.Kill(t.Pid, unix.SIGKILL)
	}
	compel.ReapAll(all)
}

// Wait waits for a restored process (lazyr's child) to exit and returns its exit code, 128+signal for a
// process killed by a signal, like a shell.
func Wait(pid int) (int, error) {
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, fmt.Errorf("wait for %d: %w", pid, err)
		}
		switch {
		case ws.Exited():
			return ws.ExitStatus(), nil
		case ws.Signaled():
			return 128 + int(ws.Signal()), nil
		}
	}
}
