package lazypages

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/uffd"
	"golang.org/x/sys/unix"
)

// Options configure Serve.
type Options struct {
	ImagesDir string // where pagemap-PID.img and pages-ID.img are (for the default source)
	WorkDir   string // where the socket lives
	// Source supplies the pages; nil means the local images in ImagesDir
	// (NewImageSource), which Serve then also closes. A given Source is
	// left open.
	Source PageSource
	// Prefetch copies the remaining pages in the background, next to
	// serving faults.
	Prefetch bool
	// PrefetchWorkers is how many goroutines copy prefetched pages from a
	// synchronous source; 0 means one per two processors, at most four
	// (see defaultWorkers). Serve raises GOMAXPROCS, while it runs, to one
	// more than the workers, so the loop finds a P while they sit in
	// UFFDIO_COPY. Unused with an AsyncSource, whose reads the fault loop
	// drives itself.
	PrefetchWorkers int
	// QuietPeriod is how long faults must be quiet before prefetch copies
	// anything (0: prefetch runs alongside faults).
	QuietPeriod time.Duration
	// Ready is called once the socket listens (the CLI then writes
	// --status-fd / --pidfile).
	Ready func()
	// GuardExe is the executable run as the guard with GuardArg as its
	// first argument; "" means /proc/self/exe. Its main must call
	// GuardMain when it sees GuardArg.
	GuardExe string
}

// Tuning, from the costs measured on this machine (DESIGN.md): one 4 KiB
// UFFDIO_COPY takes ~3 µs, copies of 128 KiB and more run at the bulk
// rate (~2.4 GB/s: ~100 µs for a prefetch piece, ~800 µs for the loop's
// look-ahead, which stops early when anything else waits). Look-aheads of
// 1, 2 and 4 MiB took a 2 GiB sequential reader 720-770, 460-670 and
// 560-650 ms.
const (
	faultWindowPages  = 16        // 64 KiB around a fault, aligned, same area
	prefetchPiece     = 256 << 10 // one worker copy; bounds how long a uffd read waits for workers
	aheadPiece        = 2 << 20   // what the loop copies ahead of a process that caught up with prefetch
	asyncPiece        = 256 << 10 // one prefetch read from an AsyncSource
	asyncDepth        = 8         // prefetch reads in flight
	maxDefaultWorkers = 4         // copies beyond that compete for memory bandwidth
	probeInterval     = 250 * time.Millisecond
	matchMaxBackoff   = 100 * time.Millisecond
	eagainGiveUp      = 10 * time.Second
	guardStartTimeout = 10 * time.Second
	guardExitTimeout  = 5 * time.Second
	maxMsgsPerRead    = 64
)

// requiredFeatures must be enabled on every registered uffd: without them
// a fork, mremap or madvise in the restored process would silently leave
// it with zero or stale memory (the kernel drops the registration of a
// forked child or a moved VMA when the event is not enabled).
const requiredFeatures = uffd.FeatureEventFork | uffd.FeatureEventRemap | uffd.FeatureEventRemove | uffd.FeatureEventUnmap

// RequiredFeatures is what restore must pass to uffd.FD.API before
// registering lazy ranges and handing the fd over.
const RequiredFeatures = requiredFeatures

type daemon struct {
	opts      Options
	src       PageSource
	async     AsyncSource // src, when it is one
	ownSrc    bool
	ep        int
	watches   map[uint64]*watch // by epoll token
	tokens    map[int]uint64    // fd -> token
	nextToken uint64
	listenFd  int
	sockPath  string
	cancelFd  int
	stopCtx   chan struct{}
	ctxDone   chan struct{}
	guard     *guardLink

	conns     map[int]*conn
	procs     map[uint64]*process
	order     []*process // registration order
	rr        int
	unmatched []*process // forked children whose pid is not known yet
	nextID    uint64
	done      bool   // a client sent Done
	restoring bool   // a client registered processes and has not sent Done
	imagesID  []byte // images.DumpID of ImagesDir; nil when unknown
	fatal     error
	stopping  atomic.Bool // fatal, or finishing: workers stop

	// Workers (prefetch.go) and asynchronous reads (async.go) report
	// to the loop through notifyFd, an eventfd it watches.
	pf        *prefetcher
	nmu       sync.Mutex // guards notifyFd against close
	notifyFd  int
	amu       sync.Mutex
	completed []*asyncRead // reads done, for the loop
	spare     []*asyncRead
	bufs      [][]byte // free read buffers
	// asyncPrefetching counts prefetch reads in flight.
	asyncPrefetching int

	lf       *filler // the loop's
	parts    []run   // scratch for pendingParts
	hoods    []hood  // runs around served pages, still to copy (from hoodHead on)
	hoodHead int
	peek     [8]unix.EpollEvent
	rbuf     []byte
	oob      []byte
	msgs     []uffd.Msg

	oldProcs  int          // GOMAXPROCS to restore, or 0
	lastFault atomic.Int64 // unix nanoseconds; read by workers
	matchAt   time.Time
	matchWait time.Duration
	probeAt   time.Time
	firstReg  time.Time
	allInAt   time.Time

	stats    Stats
	lat      latencyHist
	readWait latencyHist
}

// Serve runs the lazy-pages daemon until a client said Done and every
// registered process has all its pages or is gone. On an unrecoverable
// error (page source failure, the guard dying, the restore aborting,
// ctx cancelled) it kills every process still depending on it and returns
// the error. Stats are returned in both cases.
func Serve(ctx context.Context, opts Options) (*Stats, error) {
	d, err := newDaemon(opts)
	if err != nil {
		return &Stats{}, err
	}
	// The loop gets a thread of its own (see loopThread).
	errc := make(chan error, 1)
	go func() {
		loopThread()
		errc <- d.run(ctx)
	}()
	err = <-errc
	d.close()
	st := d.stats
	c := d.lf.c
	if d.pf != nil {
		st.PagesByPrefetch += d.pf.c.copied
		c.copied += d.pf.c.copied
		c.existing += d.pf.c.existing
		c.zero += d.pf.c.zero
	}
	st.BytesCopied = c.copied * pageSize
	st.PagesExisting = c.existing
	st.ZeroPages += c.zero
	st.FaultLatencyP50 = d.lat.quantile(0.50)
	st.FaultLatencyP99 = d.lat.quantile(0.99)
	st.FaultLatencyMax = time.Duration(d.lat.max)
	st.ReadWaitP99 = d.readWait.quantile(0.99)
	st.ReadWaitMax = time.Duration(d.readWait.max)
	if !d.allInAt.IsZero() {
		st.AllPagesIn = d.allInAt.Sub(d.firstReg)
	}
	return &st, err
}

func newDaemon(opts Options) (*daemon, error) {
	if opts.WorkDir == "" {
		return nil, fmt.Errorf("lazy-pages: no work dir: %w", unix.EINVAL)
	}
	d := &daemon{
		opts: opts, ep: -1, listenFd: -1, cancelFd: -1, notifyFd: -1,
		watches: map[uint64]*watch{}, tokens: map[int]uint64{}, conns: map[int]*conn{}, procs: map[uint64]*process{},
		rbuf: make([]byte, maxMsgSize), oob: oobSpace(), msgs: make([]uffd.Msg, maxMsgsPerRead),
	}
	ok := false
	defer func() {
		if !ok {
			d.close()
		}
	}()
	var err error
	// The dump this daemon serves, when its images are at hand (those of a remote source are fetched
	// into ImagesDir first): a restore of another dump is refused at its hello.
	if opts.ImagesDir != "" {
		d.imagesID, _ = images.DumpID(opts.ImagesDir)
	}
	d.src = opts.Source
	if d.src == nil {
		if d.src, err = NewImageSource(opts.ImagesDir); err != nil {
			return nil, err
		}
		d.ownSrc = true
	}
	d.async, _ = d.src.(AsyncSource)
	// The loop's buffer holds a fault window (synchronous sources that are
	// not mapped) or a handed-back prefetch piece.
	d.lf = newFiller(d.src, prefetchPiece)
	if d.ep, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("epoll_create: %w", err)
	}
	if d.cancelFd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err = d.watchFd(d.cancelFd, unix.EPOLLIN, &watch{kind: watchCancel}); err != nil {
		return nil, err
	}
	if d.notifyFd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err = d.watchFd(d.notifyFd, unix.EPOLLIN, &watch{kind: watchNotify}); err != nil {
		return nil, err
	}
	// The guard comes first: no process may be accepted before something
	// outlives the daemon to kill it.
	if d.guard, err = startGuard(opts.GuardExe); err != nil {
		return nil, err
	}
	if err = d.watchFd(d.guard.fd, unix.EPOLLIN|unix.EPOLLRDHUP, &watch{kind: watchGuard}); err != nil {
		return nil, err
	}
	if err = d.listen(); err != nil {
		return nil, err
	}
	if opts.Prefetch && d.async == nil {
		n := opts.PrefetchWorkers
		if n <= 0 {
			n = defaultWorkers()
		}
		// A worker spends its time in UFFDIO_COPY, and a goroutine in a
		// system call keeps its P until sysmon takes it away (20 µs to
		// 10 ms later). With no P to spare, the loop would wait for that
		// after every epoll_wait: keep one for it.
		if want := n + 1; runtime.GOMAXPROCS(0) < want {
			d.oldProcs = runtime.GOMAXPROCS(want)
		}
		d.pf = newPrefetcher(d, n)
	}
	ok = true
	return d, nil
}

// notify wakes the loop (from a worker or a read's completion).
func (d *daemon) notify() {
	d.nmu.Lock()
	defer d.nmu.Unlock()
	if d.notifyFd >= 0 {
		var one [8]byte
		one[0] = 1
		unix.Write(d.notifyFd, one[:])
	}
}

// notified handles what workers and reads reported.
func (d *daemon) notified() {
	var b [8]byte
	unix.Read(d.notifyFd, b[:])
	if d.pf != nil {
		if err := d.pf.takeErr(); err != nil {
			d.fail(err)
			return
		}
	}
	d.finishReads()
	for _, p := range slices.Clone(d.order) {
		if p.done || d.fatal != nil {
			continue
		}
		p.mu.Lock()
		gone, hb := p.workerGone, p.handback
		p.handback = nil
		p.mu.Unlock()
		if gone {
			d.gone(p)
			continue
		}
		for _, r := range hb {
			d.loopFill(p, r, false)
		}
		d.checkComplete(p)
	}
}

// setRestoring holds prefetch back while a restore is still running (a
// connection registered processes and has not sent Done): the restore
// needs the processors to finish, and the processes it registered cannot
// run, and so cannot fault, before it has.
func (d *daemon) setRestoring() {
	restoring := false
	for _, c := range d.conns {
		if c.registered > 0 && !c.sentDone {
			restoring = true
		}
	}
	d.restoring = restoring
	if d.pf == nil {
		return
	}
	if restoring {
		d.pf.setActive(0)
	} else {
		d.pf.setActive(d.pf.workers)
	}
}

// kickWorkers tells idle workers there may be work.
func (d *daemon) kickWorkers() {
	if d.pf != nil {
		d.pf.kick()
	}
}

func (d *daemon) run(ctx context.Context) error {
	d.stopCtx, d.ctxDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(d.ctxDone)
		select {
		case <-ctx.Done():
			var one [8]byte
			one[0] = 1
			unix.Write(d.cancelFd, one[:])
		case <-d.stopCtx:
		}
	}()
	if d.opts.Ready != nil {
		d.opts.Ready()
	}
	events := make([]unix.EpollEvent, 64)
	for {
		if d.fatal == nil && ctx.Err() != nil {
			d.fail(fmt.Errorf("lazy-pages: %w", ctx.Err()))
		}
		if d.fatal != nil {
			return d.abort()
		}
		if d.finished() {
			return d.finish()
		}
		n, err := unix.EpollWait(d.ep, events, d.timeoutMs())
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			d.fail(fmt.Errorf("epoll_wait: %w", err))
			continue
		}
		// Faults first: every uffd with something to read is served
		// before connections, exits and prefetch.
		busy := false
		for i := 0; i < n; i++ {
			if w := d.watchOf(&events[i]); w != nil && w.kind == watchUffd && !w.proc.done {
				d.serveUffd(w.proc)
				busy = true
			}
		}
		for i := 0; i < n && d.fatal == nil; i++ {
			w := d.watchOf(&events[i])
			if w == nil {
				continue
			}
			switch w.kind {
			case watchListen:
				d.accept()
			case watchConn:
				d.connReady(w.conn)
			case watchPidfd:
				d.pidfdReady(w.proc)
			case watchGuard:
				d.fail(fmt.Errorf("%w: its socket closed (guard exited: %v)", ErrGuard, d.guard.exitStatus()))
			case watchCancel:
				d.fail(fmt.Errorf("lazy-pages: %w", context.Cause(ctx)))
			case watchNotify:
				d.notified()
			}
		}
		// Faults read while looking for events (EAGAIN) are waiting in
		// queues without their uffd being readable again.
		for _, p := range slices.Clone(d.order) {
			if p.queued() > 0 && !p.done {
				d.serveQueue(p)
				d.checkComplete(p)
			}
		}
		d.timers()
		if !busy {
			d.topUpReads()
		}
	}
}

// timeoutMs is how long epoll may sleep: until the next prefetch step,
// child match attempt or liveness probe.
func (d *daemon) timeoutMs() int {
	t := -1
	at := func(deadline time.Time) {
		left := time.Until(deadline)
		ms := int((left + time.Millisecond - 1) / time.Millisecond)
		ms = max(ms, 0)
		if t < 0 || ms < t {
			t = ms
		}
	}
	if d.async != nil && d.opts.Prefetch && d.asyncPrefetching < asyncDepth && d.quietLeft() > 0 && d.anyPending() {
		at(time.Now().Add(d.quietLeft()))
	}
	if len(d.unmatched) > 0 {
		at(d.matchAt)
	}
	if len(d.procs) > 0 {
		at(d.probeAt)
	}
	return t
}

func (d *daemon) anyPending() bool {
	for _, p := range d.order {
		if !p.done && p.pending() > 0 {
			return true
		}
	}
	return false
}

func (d *daemon) timers() {
	now := time.Now()
	if len(d.unmatched) > 0 && !now.Before(d.matchAt) {
		d.matchChildren()
	}
	if len(d.procs) > 0 && !now.Before(d.probeAt) {
		d.probeAt = now.Add(probeInterval)
		for _, p := range slices.Clone(d.order) {
			if !p.done {
				d.probe(p)
			}
		}
	}
}

// finished: Done was received, no registration is half-way, and nothing is
// left to serve.
func (d *daemon) finished() bool {
	if !d.done || len(d.procs) > 0 {
		return false
	}
	for _, c := range d.conns {
		if c.reg != nil {
			return false
		}
	}
	return true
}
