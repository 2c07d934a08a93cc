package dump

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// ErrLazyAborted: a lazy dump's memory transfer ended before the destination confirmed that every page
// is in place. The dumped tree was released and runs on; nothing was lost.
var ErrLazyAborted = errors.New("lazy memory transfer aborted")

// serveLazy hands the frozen tree's memory to opts.ServeLazy and returns once the destination is done
// with it (nil: the tree may be killed) or the transfer failed (the caller releases the tree).
// Preconditions: called from Tracer.Do; the tree is frozen and its images are written.
func serveLazy(ctx context.Context, procs []*proc, opts Options, log *zap.Logger) error {
	src := opts.lazy
	defer src.Close()
	// The tree stays frozen while its memory is served, parked (lazy_park.go) and with its own signal
	// masks back: if lazyr dies meanwhile (SIGKILL, no chance to release anything) the kernel detaches
	// the tasks, and they must then run on exactly as they were. A signal arriving meanwhile stays
	// pending: a task in a ptrace stop does not act on it until it is resumed.
	for _, p := range procs {
		for _, t := range p.threads {
			if err := park(t); err != nil {
				return err
			}
			if err := t.SetSigMask(t.OrigSigMask()); err != nil {
				return fmt.Errorf("thread %d: restore signal mask: %w", t.Pid, err)
			}
		}
	}
	log.Debug("serving the frozen tree's memory", zap.Int("processes", len(src.Pids())))
	start := time.Now()
	err := opts.ServeLazy(ctx, src)
	if err == nil {
		// The destination may have said Done just as ctx ended: its word counts, the pages are there.
		log.Debug("memory transfer finished", zap.Duration("elapsed", time.Since(start)))
		return nil
	}
	if errors.Is(err, ErrLazyAborted) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrLazyAborted, err)
}
