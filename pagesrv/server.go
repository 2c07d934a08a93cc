package pagesrv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultTimeout is the stall timeout used when an option leaves it zero.
const DefaultTimeout = 30 * time.Second

// ServerOptions configure a page server.
type ServerOptions struct {
	// Address and Port to listen on; "" listens on every IPv4 address,
	// port 0 picks a free port (see Server.Addr).
	Address string
	Port    int
	// TLS, if set, makes every connection TLS. To require and verify client
	// certificates set ClientAuth/ClientCAs (TLSConfig does so when given a
	// CA file).
	TLS *tls.Config
	// Source provides the pages. Required.
	Source Source
	// Files is a directory whose regular files clients may list and fetch
	// (the non-memory images); "" serves none. SkipFile, if set, hides names.
	Files    string
	SkipFile func(name string) bool
	// OnDone is called when a client reports that every page of pid is in
	// place (pid 0: of every process it worked on); it runs on the loop
	// goroutine. OnError is called for every dropped connection and failed
	// request; calls never overlap, but may come from a TLS handshake
	// goroutine. Neither may block: the loop waits for them.
	OnDone  func(pid int)
	OnError func(error)
	// OnClose is called on the loop goroutine when a connection that got
	// past its handshake ends while the server serves (not for the ones
	// Serve closes when it returns). It may not block. A lazy migration
	// source uses it to notice a destination that left without Done.
	OnClose func(ClientSummary)
	// ExitWhenDone makes Serve return once a client has sent Done for all
	// its work and every connected client that asked for pages or extents
	// has done so (and its DoneAck is flushed).
	ExitWhenDone bool
	// Timeout drops a connection that does not finish its handshake or a
	// message, or does not read its replies, for this long. Idle clients
	// between requests are never dropped. 0 means DefaultTimeout, < 0 never
	// (TLS handshakes still get DefaultTimeout).
	Timeout time.Duration
	// MaxHandshakes bounds concurrent TLS handshakes (0: 8).
	MaxHandshakes int
}

// ClientSummary describes a connection that ended (ServerOptions.OnClose).
type ClientSummary struct {
	Remote net.Addr
	// Pages: the client asked for pages or extents (it was restoring from us).
	Pages bool
	// Done: the client said Done for all its work (Done with pid 0).
	Done bool
	// Err is why the server dropped the connection; nil if the client
	// closed it (with Close or by ending the stream between messages).
	Err error
}

// ServerStats are counters since NewServer.
type ServerStats struct {
	Clients      int    // connected now (past the TLS handshake)
	ClientsTotal uint64 // connections accepted
	Requests     uint64 // messages handled
	Pages        uint64 // pages sent
	AbsentPages  uint64 // pages answered as not in image
	BytesOut     uint64 // bytes written to sockets (TLS included)
	BytesIn      uint64 // bytes read from sockets (TLS included)
	Files        uint64 // files sent completely
	Done         uint64 // Done messages received
	Errors       uint64 // dropped connections and failed requests
}

type serverCounters struct {
	clients                                                                     atomic.Int64
	clientsTotal, requests, pages, absent, bytesOut, bytesIn, files, done, errs atomic.Uint64
}

const (
	stateIdle = iota
	stateServing
	stateClosed
)

// Server is a page server. Create it with NewServer, run it with Serve.
type Server struct {
	opts      ServerOptions
	addr      net.Addr
	pageSize  int
	timeout   time.Duration
	hsTimeout time.Duration

	lfd, epfd, wakefd, stopfd, filesFD int

	mu       sync.Mutex
	state    int
	served   bool
	quitting bool
	handed   []*conn // connections past their handshake, for the loop to adopt
	stopping atomic.Bool
	doneCh   chan struct{}
	quit     chan struct{}
	hsSem    chan struct{}
	hsWG     sync.WaitGroup
	errMu    sync.Mutex
	stats    serverCounters

	// Owned by the loop goroutine.
	conns       map[int]*conn
	ready       []*conn
	spare       []*conn
	pool        bufPool
	extents     map[int][]Extent
	runs        []Run
	lent        [][]byte // scratch of serveMapped
	doneSeen    bool
	shut        bool // Serve is closing every connection: no more OnClose
	acceptPause time.Time
	lastSweep   time.Time
}

// NewServer validates opts and starts listening.
func NewServer(opts ServerOptions) (*Server, error) {
	if opts.Source == nil {
		return nil, errors.New("pagesrv: ServerOptions.Source is nil")
	}
	s := &Server{
		opts: opts, pageSize: os.Getpagesize(), timeout: opts.Timeout, hsTimeout: opts.Timeout,
		lfd: -1, epfd: -1, wakefd: -1, stopfd: -1, filesFD: -1,
		doneCh: make(chan struct{}), quit: make(chan struct{}),
		conns: make(map[int]*conn), extents: make(map[int][]Extent),
	}
	if s.timeout == 0 {
		s.timeout = DefaultTimeout
	}
	if s.hsTimeout <= 0 {
		s.hsTimeout = DefaultTimeout
	}
	n := opts.MaxHandshakes
	if n <= 0 {
		n = 8
	}
	s.hsSem = make(chan struct{}, n)
	if err := s.open(); err != nil {
		s.closeFDs()
		return nil, err
	}
	return s, nil
}

func (s *Server) open() error {
	var err error
	if s.opts.Files != "" {
		// Served files are opened relative to this fd, so a rename of the
		// directory path cannot redirect the server elsewhere.
		s.filesFD, err = unix.Open(s.opts.Files, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("pagesrv: open files dir %s: %w", s.opts.Files, err)
		}
	}
	if s.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return fmt.Errorf("pagesrv: epoll_create1: %w", err)
	}
	if s.wakefd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		return fmt.Errorf("pagesrv: eventfd: %w", err)
	}
	if s.stopfd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		return fmt.Errorf("pagesrv: eventfd: %w", err)
	}
	if s.lfd, s.addr, err = listen(s.opts.Address, s.opts.Port); err != nil {
		return err
	}
	for _, fd := range []int{s.lfd, s.wakefd} {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			return fmt.Errorf("pagesrv: epoll_ctl add: %w", err)
		}
	}
	return nil
}

func (s *Server) closeFDs() {
	for _, fd := range []*int{&s.lfd, &s.epfd, &s.wakefd, &s.stopfd, &s.filesFD} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.addr }

// Stats returns a snapshot of the counters. Safe to call at any time.
func (s *Server) Stats() ServerStats {
	c := &s.stats
	return ServerStats{
		Clients: int(c.clients.Load()), ClientsTotal: c.clientsTotal.Load(), Requests: c.requests.Load(),
		Pages: c.pages.Load(), AbsentPages: c.absent.Load(), BytesOut: c.bytesOut.Load(),
		BytesIn: c.bytesIn.Load(), Files: c.files.Load(), Done: c.done.Load(), Errors: c.errs.Load(),
	}
}

// Serve runs the server until ctx is cancelled, Close is called, or (with
// ExitWhenDone) every client has reported Done; then it closes every
// connection and the listener and returns nil. It can run once.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	if s.state != stateIdle {
		s.mu.Unlock()
		return fmt.Errorf("pagesrv: Serve: %w", ErrClosed)
	}
	s.state, s.served = stateServing, true
	s.mu.Unlock()
	defer close(s.doneCh)

	watchDone := make(chan struct{})
	defer close(watchDone)
	go func() {
		select {
		case <-ctx.Done():
			s.requestStop()
		case <-watchDone:
		}
	}()
	err := s.loop()
	s.shutdown()
	return err
}

// Close stops a serving server and waits for Serve to return, or releases
// the listener of a server that never served.
func (s *Server) Close() error {
	s.mu.Lock()
	prev, served := s.state, s.served
	s.state = stateClosed
	if prev == stateIdle {
		s.closeFDs()
	}
	s.mu.Unlock()
	if served {
		s.requestStop()
		<-s.doneCh
	}
	return nil
}

func (s *Server) requestStop() {
	s.stopping.Store(true)
	s.wake()
}

// wake makes the loop's epoll_wait return.
func (s *Server) wake() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wakefd < 0 {
		return // already shut down
	}
	var one = [8]byte{1}
	// EAGAIN means the counter is already non-zero: the loop will wake.
	unix.Write(s.wakefd, one[:])
}

func (s *Server) reportErr(err error) {
	s.stats.errs.Add(1)
	if s.opts.OnError == nil {
		return
	}
	s.errMu.Lock()
	defer s.errMu.Unlock()
	s.opts.OnError(err)
}

// shutdown closes everything once the loop has returned.
func (s *Server) shutdown() {
	s.mu.Lock()
	s.quitting = true
	s.mu.Unlock()
	close(s.quit)
	var one = [8]byte{1}
	unix.Write(s.stopfd, one[:]) // wakes handshakes blocked in poll
	s.shut = true
	for _, c := range s.conns {
		s.closeConn(c)
	}
	s.hsWG.Wait()
	s.mu.Lock()
	handed := s.handed
	s.handed = nil
	s.mu.Unlock()
	for _, c := range handed {
		unix.Close(c.fd)
	}
	s.mu.Lock()
	s.closeFDs()
	s.mu.Unlock()
}
