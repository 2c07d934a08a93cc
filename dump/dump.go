package dump

import (
	"context"

	"errors"
	"fmt"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"io/fs"
	"os"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/compel"
	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/procfs"
	"github.com/lazyr/lazyr/internal/sys"
)

// Run dumps the process opts.Pid into opts.ImagesDir. tr is the tracer whose thread does all ptrace work.
func Run(ctx context.Context, tr *compel.Tracer, opts Options) (*Stats, error) {
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	if opts.ReapWait == 0 {
		opts.ReapWait = 5 * time.Second
	}
	pid := opts.Pid
	if err := precheck(pid); err != nil {
		return nil, err
	}
	// Network hook (fd_inet_lock.go): connections locked before the freeze; given back with the task
	// (giveBack before every Release), or left locked for the restore (commit before Kill).
	network, err := lockNetwork(&opts, log)
	if err != nil {
		return nil, err
	}
	defer network.close()
	st := &Stats{}
	if opts.ServeLazy != nil {
		opts.lazy = newDeferredLazySource() // lazy dump hook (lazy_source.go, lazy_scan.go)
	}
	// Mappings' VmFlags are read while the tree still runs (smaps.go).
	opts.early = readSmapsEarly(pid)
	start := time.Now()
	var procs []*proc
	err = tr.Do(func() error {
		var err error
		procs, err = seizeTree(tr, pid)
		if err != nil {
			if errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("process %d: %w", pid, ErrNoProcess)
			}
			return err
		}
		st.FreezingTime = time.Since(start)
		frozen := time.Now()
		log.Debug("tree frozen", zap.Int("pid", pid), zap.Int("processes", len(procs)), zap.Duration("freezing", st.FreezingTime))
		if err := dumpTree(ctx, procs, opts, st, log, frozen); err != nil {
			// Leave the originals exactly as they were.
			giveBackNetwork(network, log)
			if rerr := releaseTree(procs); rerr != nil {
				log.Error("releasing the tree after a failed dump", zap.Error(rerr))
			}
			return err
		}
		// Lazy dump hook (lazy_serve.go): the frozen tree's memory is served until the destination has every
		// page; an aborted transfer releases the tree unharmed.
		if opts.ServeLazy != nil {
			if err := serveLazy(ctx, procs, opts, log); err != nil {
				giveBackNetwork(network, log)
				if rerr := releaseTree(procs); rerr != nil {
					log.Error("releasing the tree after an aborted lazy dump", zap.Error(rerr))
				}
				return err
			}
		}
		st.FrozenTime = time.Since(frozen)
		if opts.LeaveRunning {
			if err := network.giveBack(); err != nil {
				_ = releaseTree(procs)
				return err
			}
			return releaseTree(procs)
		}
		// The lock stays (pinned) until the restore; the originals die only now that the images are synced.
		if err := network.commit(); err != nil {
			giveBackNetwork(network, log)
			_ = releaseTree(procs)
			return err
		}
		return killTree(procs)
	})
	if err != nil {
		return nil, err
	}
	if !opts.LeaveRunning {
		if err := waitGone(pid, opts.ReapWait); err != nil {
			log.Warn("dumped process is still a zombie; its parent has not reaped it", zap.Int("pid", pid), zap.Error(err))
		}
	}
	return st, nil
}

// precheck turns the common mistakes into clear errors before touching the task.
func precheck(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("invalid pid %d: %w", pid, ErrNoProcess)
	}
	if pid == os.Getpid() {
		return fmt.Errorf("process %d is lazyr itself: %w", pid, ErrUnsupported)
	}
	s, err := procfs.ReadStat(pid)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("process %d: %w", pid, ErrNoProcess)
	}
	if err != nil {
		return fmt.Errorf("process %d: %w", pid, err)
	}
	if s.State == 'Z' || s.State == 'X' {
		return fmt.Errorf("process %d: %w", pid, ErrZombie)
	}
	if s.Pid != pid {
		return fmt.Errorf("%d is a thread of process %d, dump the process: %w", pid, s.Pid, ErrUnsupported)
	}
	if st, err := procfs.ReadStatus(pid); err == nil && st.Tgid != pid {
		return fmt.Errorf("%d is a thread of process %d, dump the process: %w", pid, st.Tgid, ErrUnsupported)
	}
	return nil
}

// dumpTree collects every process of the frozen tree and writes the image set.
// Preconditions: called from Tracer.Do.
func dumpTree(ctx context.Context, procs []*proc, opts Options, st *Stats, log *zap.Logger, frozen time.Time) error {
	ft := newFileTable(procs[0].pid, &opts)
	// Cheap refusals first: the IPC namespace (ipc_ns.go), every fd of every process, before any memory
	// is touched.
	if err := prepareIPC(procs, ft); err != nil {
		return err
	}
	if _, err := requireRootNamespace(procs, "uts", "UTS"); err != nil {
		return err
	}
	fds := map[int][]*fdinfo.FdinfoEntry{}
	for _, p := range procs {
		if p.zombie {
			continue
		}
		ft.pid = p.pid
		ft.fds = nil
		if err := ft.collectFds(); err != nil {
			return fmt.Errorf("process %d: %w", p.pid, err)
		}
		fds[p.pid] = ft.fds
	}
	if err := ft.finishKinds(); err != nil {
		return err
	}
	durable := opts.ServeLazy == nil // a migration source needs no fsync (writeImages)
	dir, err := createDir(opts.ImagesDir, durable)
	if err != nil {
		return err
	}
	var results []*result
	for i, p := range procs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if p.zombie {
			results = append(results, &result{proc: p})
			continue
		}
		r, err := collect(ctx, p, dir, ft, uint32(i+1), opts, st, log)
		if err != nil {
			return fmt.Errorf("process %d: %w", p.pid, err)
		}
		r.fds = fds[p.pid]
		results = append(results, r)
	}
	log.Debug("memory written", zap.Uint64("pages", st.PagesWritten), zap.Duration("read", st.MemdumpTime), zap.Duration("write", st.MemwriteTime))
	// A lazy dump finds the exact pages of its lazy areas from here on, next to writing the images and
	// serving them (lazy_scan.go).
	opts.lazy.startScan(log)
	return writeImages(dir, results, ft, st, frozen, durable)
}

// collect gathers one live process's state: threads, kernel state, mappings and memory.
// Preconditions: called from Tracer.Do; p is frozen.
func collect(ctx context.Context, p *proc, dir *images.Dir, ft *fileTable, id uint32, opts Options, st *Stats, log *zap.Logger) (*result, error) {
	leader := p.threads[0]
	if err := leader.FindGadget(); err != nil {
		return nil, err
	}
	info, err := readProc(leader)
	if err != nil {
		return nil, err
	}
	r := &result{proc: p, id: id, info: info}
	err = withScratch(leader, func(addr uint64) error {
		var err error
		if r.inj, err = query(leader); err != nil {
			return err
		}
		if r.timers, err = posixTimers(leader, p.pid); err != nil {
			return err
		}
		if r.signals, err = pendingSignals(leader.Pid, true); err != nil {
			return err
		}
		// The root (id 1) carries the tree's UTS namespace, if it has one of its own (dumpTree: every
		// process of the tree is in it).
		if id == 1 {
			same, err := sys.SameNamespace(p.pid, "uts")
			if err != nil {
				return err
			}
			if !same {
				if r.uts, err = dumpUTS(leader); err != nil {
					return err
				}
			}
		}
		for _, t := range p.threads {
			t.SetGadget(leader.Gadget())
			t.SetScratch(addr, scratchSize)
			th, err := readThread(p.pid, t)
			if err != nil {
				return fmt.Errorf("thread %d: %w", t.Pid, err)
			}
			r.threads = append(r.threads, th)
			for _, pt := range r.timers {
				if pt.NotifyThreadId != nil && int(pt.GetNotifyThreadId()) == t.Pid {
					pt.NotifyThreadId = proto.Int32(int32(th.vtid)) // as the tree's namespace sees it
				}
			}
			if err := t.RestoreRegs(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	mapsStart := time.Now()
	maps, reused, err := opts.early.mappings(p.pid)
	if err != nil {
		return nil, err
	}
	log.Debug("mappings read", zap.Int("pid", p.pid), zap.Int("mappings", len(maps)), zap.Bool("early_vmflags", reused), zap.Duration("elapsed", time.Since(mapsStart)))
	if r.areas, err = classify(p.pid, maps, ft, r.inj.scratchMapped); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	runs, err := scanPages(p.pid, r.areas, st, opts.lazy.defersScan())
	if err != nil {
		return nil, err
	}
	if err := writePages(dir, p.pid, p.vpid, id, r.areas, runs, st, opts.Progress, opts.lazy.proc(p.pid, p.vpid)); err != nil {
		return nil, err
	}
	return r, nil
}

// waitGone waits until /proc/PID disappears (the parent reaped it).
func waitGone(pid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		s, err := procfs.ReadStat(pid)
		if err != nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d still exists in state %c after %v", pid, s.State, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
