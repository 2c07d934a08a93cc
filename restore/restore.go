package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/compel"
	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/regs"
)

// Run restores the image set in opts.ImagesDir and leaves the process running. tr is the tracer whose
// thread does all ptrace work; the restored process's parent is that thread (see package compel).
func Run(ctx context.Context, tr *compel.Tracer, opts Options) (*Result, error) {
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	start := time.Now()
	p, err := load(opts.ImagesDir)
	if err != nil {
		return nil, err
	}
	log.Debug("images read", zap.Duration("elapsed", time.Since(start)))
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.pid)); err == nil {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.pid))
		return nil, fmt.Errorf("pid %d is in use (by %q): %w", p.pid, string(trimNL(comm)), ErrPidInUse)
	}
	var lazy *lazyHandoff
	if opts.LazyPages {
		// Before anything is created: a restore whose daemon is not there must fail cleanly.
		if lazy, err = dialLazy(opts.WorkDir); err != nil {
			return nil, err
		}
		defer lazy.close()
	}
	res := &Result{Pid: p.pid}
	err = tr.Do(func() error {
		stub, err := tr.StartStub()
		if err != nil {
			return err
		}
		defer stub.Kill()
		t, err := stub.CloneWithPid(p.pid, unix.CLONE_PARENT)
		if err != nil {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("pid %d is in use: %w", p.pid, ErrPidInUse)
			}
			return fmt.Errorf("create task with pid %d: %w", p.pid, err)
		}
		res.Stats.ForkingTime = time.Since(start)
		if err := stub.Kill(); err != nil {
			log.Debug("killing the stub", zap.Error(err))
		}
		if err := build(ctx, t, p, opts, lazy, &res.Stats, log); err != nil {
			_ = t.Kill()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.Stats.RestoreTime = time.Since(start)
	return res, nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == 0) {
		b = b[:len(b)-1]
	}
	return b
}

// build turns the fresh task into the dumped one and lets it run.
// Preconditions: called from Tracer.Do.
func build(ctx context.Context, t *compel.Task, p *plan, opts Options, lazy *lazyHandoff, st *Stats, log *zap.Logger) error {
	as := &addressSpace{t: t, p: p}
	if err := as.setupRestorer(); err != nil {
		return err
	}
	if err := as.clearStub(); err != nil {
		return err
	}
	if err := as.moveVDSO(); err != nil {
		return err
	}
	// Which pages the daemon fills: private anonymous memory outside the stack.
	isLazyVMA := func(v *vma.VmaEntry) bool {
		return lazy != nil && v.GetStatus()&images.VMAAnonPrivate != 0 && v.GetStatus()&images.VMAAreaStack == 0
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
		return lazy != nil && e.Flags&images.PELazy != 0 && v != nil && isLazyVMA(v)
	}
	log.Debug("mappings created", zap.Duration("memory_start", time.Since(memStart)))
	if lazy != nil {
		n, err := lazy.register(t, p, isLazyVMA)
		if err != nil {
			return err
		}
		st.PagesLazy = n
		log.Debug("lazy memory handed to the daemon", zap.Duration("elapsed", time.Since(memStart)))
	}
	n, err := fillEager(t, p, skip, opts.Progress)
	if err != nil {
		return err
	}
	st.PagesRestored = n
	st.MemoryTime = time.Since(memStart)
	log.Debug("memory filled", zap.Duration("elapsed", st.MemoryTime))
	if err := as.closeFiles(); err != nil {
		return err
	}
	if err := as.protectAll(); err != nil {
		return err
	}
	if err := as.setMM(); err != nil {
		return err
	}
	if err := restoreFiles(t, p, &opts); err != nil {
		return err
	}
	if err := restoreFS(t, p); err != nil {
		return err
	}
	if err := restoreIdentity(t, p, log); err != nil {
		return err
	}
	if err := restoreSignals(t, p); err != nil {
		return err
	}
	if err := restoreLimits(t, p, log); err != nil {
		return err
	}
	if err := restoreThreadState(t, p, opts); err != nil {
		return err
	}
	if err := restoreCreds(t, p); err != nil {
		return err
	}
	if err := restoreTimers(t, p); err != nil {
		return err
	}
	if lazy != nil {
		if err := lazy.done(); err != nil {
			return err
		}
	}
	log.Debug("task state restored", zap.Duration("elapsed", time.Since(memStart)))
	return finish(t, p, as.restorer)
}

// finish removes the restorer area and resumes the task with its dumped CPU state.
func finish(t *compel.Task, p *plan, restorer uint64) error {
	base, err := t.XState()
	if err != nil {
		return err
	}
	x, err := regs.FPUFromImage(p.core.GetThreadInfo().GetFpregs(), base)
	if err != nil {
		return err
	}
	if err := t.SetXState(x); err != nil {
		return err
	}
	if err := t.SetSigMask(p.core.GetTc().GetBlkSigset()); err != nil {
		return err
	}
	// The last injected syscall unmaps the area its own instruction lives in; the single-step trap stops
	// the task right after it, before anything is fetched from the unmapped page.
	if _, err := t.Syscall(unix.SYS_MUNMAP, restorer, restorerSize); err != nil {
		return fmt.Errorf("unmap restorer: %w", err)
	}
	if err := t.SetRegs(regs.PrepareResume(regs.FromImage(p.core.GetThreadInfo().GetGpregs()))); err != nil {
		return err
	}
	return t.Detach()
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
