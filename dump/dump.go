package dump

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/compel"
	"github.com/lazyr/lazyr/internal/procfs"
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
	st := &Stats{}
	var res *result
	start := time.Now()
	err := tr.Do(func() error {
		t, err := tr.Seize(pid)
		if err != nil {
			if errors.Is(err, unix.EPERM) {
				return fmt.Errorf("cannot trace process %d (needs root or CAP_SYS_PTRACE over it): %w: %w", pid, ErrPermission, err)
			}
			if errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("process %d: %w", pid, ErrNoProcess)
			}
			return err
		}
		st.FreezingTime = time.Since(start)
		frozen := time.Now()
		log.Debug("task frozen", zap.Int("pid", pid), zap.Duration("freezing", st.FreezingTime))
		res, err = collect(ctx, t, opts, st, log)
		if err != nil {
			// Leave the original exactly as it was.
			if rerr := t.Release(); rerr != nil {
				log.Error("releasing the task after a failed dump", zap.Error(rerr))
			}
			return err
		}
		if err := res.write(st, frozen); err != nil {
			if rerr := t.Release(); rerr != nil {
				log.Error("releasing the task after a failed dump", zap.Error(rerr))
			}
			return err
		}
		st.FrozenTime = time.Since(frozen)
		if opts.LeaveRunning {
			return t.Release()
		}
		return t.Kill()
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

// collect gathers everything while the task is stopped, cheapest refusals first.
// Preconditions: called from Tracer.Do.
func collect(ctx context.Context, t *compel.Task, opts Options, st *Stats, log *zap.Logger) (*result, error) {
	pid := t.Pid
	tids, err := procfs.Tasks(pid)
	if err != nil {
		return nil, err
	}
	if len(tids) > 1 {
		other := tids[0]
		if other == pid {
			other = tids[1]
		}
		return nil, fmt.Errorf("process %d has %d threads (thread %d): multi-threaded processes: %w", pid, len(tids), other, ErrUnsupported)
	}
	files := newFileTable(pid, &opts)
	if err := files.collectFds(); err != nil {
		return nil, err
	}
	if err := t.FindGadget(); err != nil {
		return nil, err
	}
	info, err := readProc(t)
	if err != nil {
		return nil, err
	}
	inj, err := query(t)
	if err != nil {
		return nil, err
	}
	if err := t.RestoreRegs(); err != nil {
		return nil, err
	}
	maps, err := procfs.Smaps(pid)
	if err != nil {
		return nil, err
	}
	areas, err := classify(maps, files, inj.scratchMapped)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	runs, err := scanPages(pid, areas, st)
	if err != nil {
		return nil, err
	}
	dir, err := createDir(opts.ImagesDir)
	if err != nil {
		return nil, err
	}
	if err := writePages(dir, pid, areas, runs, st, opts.Progress); err != nil {
		return nil, err
	}
	log.Debug("memory written", zap.Uint64("pages", st.PagesWritten), zap.Duration("read", st.MemdumpTime), zap.Duration("write", st.MemwriteTime))
	return &result{pid: pid, dir: dir, info: info, inj: inj, areas: areas, files: files, sigmask: t.OrigSigMask()}, nil
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
