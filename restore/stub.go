package restore

import (
	"go.uber.org/zap"

	"github.com/lazyr/lazyr/compel"
)

// earlyStub is the stub process (see compel.StartStub), started on the tracer thread while Run reads the
// images: fork and exec take about a millisecond of mostly waiting, and the first decoding of the images'
// protobuf types a couple more, so the two overlap. The same request pins the tracer thread (see
// compel.Tracer.Pin); whoever takes the stub unpins it, on the tracer thread and before returning: a
// request to the thread afterwards could wait long for its CPU, which the restored tasks use by then.
type earlyStub struct {
	tr    *compel.Tracer
	errc  <-chan error
	t     *compel.Task
	err   error
	taken bool
}

// startStub queues the stub's start on the tracer thread; whatever Run asks of the thread afterwards runs
// after it.
func startStub(tr *compel.Tracer, log *zap.Logger) *earlyStub {
	s := &earlyStub{tr: tr}
	s.errc = tr.Start(func() error {
		if err := tr.Pin(); err != nil {
			log.Debug("running unpinned", zap.Error(err))
		}
		var err error
		s.t, err = tr.StartStub()
		return err
	})
	return s
}

// wait waits for the start (on the tracer thread, or on the one that queued it).
func (s *earlyStub) wait() {
	if s.errc != nil {
		s.err = <-s.errc
		s.errc = nil
	}
}

// take waits for the stub and hands it over: the caller kills it, and unpins the tracer thread.
// Preconditions: called from Tracer.Do.
func (s *earlyStub) take() (*compel.Task, error) {
	s.wait()
	t, err := s.t, s.err
	s.t, s.taken = nil, true
	return t, err
}

// discard, when the stub was never taken, kills it and unpins the tracer thread.
func (s *earlyStub) discard() {
	s.wait()
	if s.taken {
		return
	}
	_ = s.tr.Do(func() error {
		if s.t != nil {
			_ = s.t.Kill()
			s.t = nil
		}
		return s.tr.Unpin()
	})
}
