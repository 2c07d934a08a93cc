package pagesrv

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ClientOptions configure Dial.
type ClientOptions struct {
	Address string
	Port    int
	// TLS, if set, makes the connection TLS; ServerName defaults to Address.
	TLS *tls.Config
	// Timeout: while requests are pending, a server silent for this long
	// fails them all with ErrTimeout (also bounds each request write).
	// 0 means DefaultTimeout, < 0 never.
	Timeout time.Duration
}

// ClientStats are the client's counters.
type ClientStats struct {
	Requests    uint64 // requests sent
	Pages       uint64 // pages received
	AbsentPages uint64 // pages answered as not in image
	Bytes       uint64 // payload bytes received (pages and files)
}

// Client is a connection to a page server. Its methods are safe for
// concurrent use.
type Client struct {
	conn     net.Conn
	br       *bufio.Reader
	pageSize int
	maxPages int
	timeout  time.Duration
	remote   string

	wmu  sync.Mutex
	wbuf []byte

	mu       sync.Mutex
	pending  map[uint32]*pending
	nextID   uint32
	err      error // why the client stopped working, once it has
	closing  bool
	npending atomic.Int64
	lastAct  atomic.Int64 // unix nanos of the last sign of life while requests are pending

	readerDone chan struct{}
	closeOnce  sync.Once

	requests, pages, absent, bytes atomic.Uint64

	// Owned by the reader goroutine.
	meta    [pagesFixed]byte
	runsRaw []byte
	runs    []Run
	body    []byte
}

// pending is a request waiting for its reply.
type pending struct {
	want  Type // reply type expected
	call  *Call
	pid   uint32
	ext   []Extent
	files []FileInfo
	sink  *fileSink
	done  chan error // synchronous requests
}

func (p *pending) finish(err error) {
	if p.call != nil {
		if err != nil {
			p.call.Err = err
		}
		p.call.complete()
		return
	}
	p.done <- err
}

// Dial connects to a page server at address:port (TLS if tlsConf is set)
// and opens a session with DefaultTimeout.
func Dial(ctx context.Context, address string, port int, tlsConf *tls.Config) (*Client, error) {
	return DialOptions(ctx, ClientOptions{Address: address, Port: port, TLS: tlsConf})
}

// DialOptions connects to a page server and exchanges Hello/HelloAck.
func DialOptions(ctx context.Context, opts ClientOptions) (*Client, error) {
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	addr := net.JoinHostPort(opts.Address, strconv.Itoa(opts.Port))
	d := net.Dialer{KeepAlive: 15 * time.Second}
	if timeout > 0 {
		d.Timeout = timeout
	}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pagesrv: dial %s: %w", addr, err)
	}
	var conn net.Conn = raw
	if opts.TLS != nil {
		cfg := opts.TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = opts.Address
		}
		tc := tls.Client(raw, cfg)
		hctx := ctx
		if timeout > 0 {
			var cancel context.CancelFunc
			hctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		if err := tc.HandshakeContext(hctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("pagesrv: TLS handshake with %s: %w", addr, err)
		}
		conn = tc
	}
	c := &Client{
		conn: conn, pageSize: os.Getpagesize(), timeout: timeout, remote: addr,
		pending: make(map[uint32]*pending), readerDone: make(chan struct{}),
	}
	// Small on purpose: page data past a header is copied out of this buffer,
	// larger reads bypass it and land in the caller's buffer directly.
	c.br = bufio.NewReaderSize(timedReader{c}, 4<<10)
	if err := c.hello(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("pagesrv: session with %s: %w", addr, err)
	}
	go c.readLoop()
	return c, nil
}

// hello runs the Hello/HelloAck exchange before the reader starts.
func (c *Client) hello(ctx context.Context) error {
	deadline, ok := ctx.Deadline()
	if c.timeout > 0 && (!ok || time.Until(deadline) > c.timeout) {
		deadline, ok = time.Now().Add(c.timeout), true
	}
	if ok {
		c.conn.SetDeadline(deadline)
		defer c.conn.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	msg := AppendMessage(nil, 1, 0, MsgHello{PageSize: uint32(c.pageSize), MaxPages: uint32(MaxRequestBytes / c.pageSize)})
	if _, err := c.conn.Write(msg); err != nil {
		return fmt.Errorf("send Hello: %w", err)
	}
	var hdr [HeaderSize]byte
	if _, err := readFull(c.conn, hdr[:]); err != nil {
		return fmt.Errorf("read HelloAck: %w", err)
	}
	h, err := ParseHeader(hdr[:], c.pageSize)
	if err != nil {
		return err
	}
	if h.Type != TypeHelloAck && h.Type != TypeError {
		return fmt.Errorf("%w: %v instead of HelloAck", ErrProtocol, h.Type)
	}
	body := make([]byte, h.Length) // bounded by ParseHeader: 16 or 8+MaxErrorText
	if _, err := readFull(c.conn, body); err != nil {
		return fmt.Errorf("read HelloAck: %w", err)
	}
	m, err := decodeBody(h, body, c.pageSize)
	if err != nil {
		return err
	}
	switch m := m.(type) {
	case MsgError:
		return remoteError(m)
	case MsgHelloAck:
		if int(m.PageSize) != c.pageSize {
			return fmt.Errorf("%w: server page size %d, ours %d", ErrProtocol, m.PageSize, c.pageSize)
		}
		c.maxPages = min(int(m.MaxPages), MaxRequestBytes/c.pageSize)
		if c.maxPages < 1 {
			return fmt.Errorf("%w: server accepts %d pages per request", ErrProtocol, m.MaxPages)
		}
	}
	return ctx.Err()
}

// Lost returns a channel that is closed once the client has stopped
// working: the connection broke, the server sent something malformed, or
// Close was called. Err then says why. A caller that must not go on
// without its server (a lazy-pages daemon) watches it.
func (c *Client) Lost() <-chan struct{} { return c.readerDone }

// Err returns why the client stopped working (ErrClosed after Close), or
// nil while it works.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// MaxRequestPages is the largest page count of one Go call.
func (c *Client) MaxRequestPages() int { return c.maxPages }

// Stats returns the client's counters.
func (c *Client) Stats() ClientStats {
	return ClientStats{Requests: c.requests.Load(), Pages: c.pages.Load(), AbsentPages: c.absent.Load(), Bytes: c.bytes.Load()}
}

// Close ends the session (a Close message, best effort) and the connection.
// Pending requests fail with ErrClosed.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		alive := c.err == nil
		c.closing = true
		c.mu.Unlock()
		if alive {
			c.wmu.Lock()
			c.conn.SetWriteDeadline(time.Now().Add(time.Second))
			c.conn.Write(AppendMessage(nil, 0, 0, MsgClose{}))
			c.wmu.Unlock()
		}
		c.fail(ErrClosed)
		<-c.readerDone
	})
	return nil
}

// register assigns an id to p and records it as pending.
func (c *Client) register(p *pending) (uint32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	for {
		c.nextID++
		if _, busy := c.pending[c.nextID]; c.nextID != 0 && !busy {
			break
		}
	}
	if len(c.pending) == 0 {
		// The silence clock starts when there is something to wait for.
		c.lastAct.Store(time.Now().UnixNano())
	}
	c.pending[c.nextID] = p
	c.npending.Add(1)
	return c.nextID, nil
}

// take removes and returns the pending request id if it expects want.
func (c *Client) take(id uint32, want Type) (*pending, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pending[id]
	if p == nil || p.want != want {
		return nil, fmt.Errorf("%w: reply %v for unknown request %d", ErrProtocol, want, id)
	}
	delete(c.pending, id)
	c.npending.Add(-1)
	return p, nil
}

// peek returns the pending request id (multi-message replies).
func (c *Client) peek(id uint32, want Type) (*pending, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pending[id]
	if p == nil || p.want != want {
		return nil, fmt.Errorf("%w: %v for unknown request %d", ErrProtocol, want, id)
	}
	return p, nil
}

// send writes one request.
func (c *Client) send(id uint32, m Message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = AppendMessage(c.wbuf[:0], id, 0, m)
	if c.timeout > 0 {
		c.conn.SetWriteDeadline(time.Now().Add(c.timeout))
	}
	if _, err := c.conn.Write(c.wbuf); err != nil {
		err = c.lost(fmt.Errorf("send %v: %w", m.Type(), err))
		c.fail(err)
		return err
	}
	c.requests.Add(1)
	return nil
}

// roundTrip sends a request whose reply is waited for synchronously.
func (c *Client) roundTrip(p *pending, m Message) error {
	p.done = make(chan error, 1)
	id, err := c.register(p)
	if err != nil {
		return err
	}
	if err := c.send(id, m); err != nil {
		return err // fail() has finished p
	}
	return <-p.done
}

// lost wraps a transport failure.
func (c *Client) lost(err error) error {
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if closing {
		return ErrClosed
	}
	return fmt.Errorf("%w: %s: %w", ErrConnLost, c.remote, err)
}

// fail stops the client: the connection is closed and every pending
// request fails with err (or the first error recorded).
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	err = c.err
	pend := c.pending
	c.pending = make(map[uint32]*pending)
	c.npending.Store(0)
	c.mu.Unlock()
	c.conn.Close()
	for _, p := range pend {
		p.finish(err)
	}
}

// Done tells the server that every page of every process this client
// worked on is in place, and waits for the acknowledgement.
func (c *Client) Done() error { return c.DonePid(0) }

// DonePid tells the server that every page of pid is in place.
func (c *Client) DonePid(pid int) error {
	if pid < 0 || pid > 1<<31-1 {
		return fmt.Errorf("%w: pid %d", ErrBadRequest, pid)
	}
	return c.roundTrip(&pending{want: TypeDoneAck, pid: uint32(pid)},
		MsgDone{Pid: uint32(pid), Pages: c.pages.Load(), Bytes: c.bytes.Load()})
}

func remoteError(m MsgError) *RemoteError {
	return &RemoteError{Code: m.Code, Errno: errnoFrom(m.Errno), Text: m.Text}
}

// timedReader is the reader under the client's bufio.Reader: it keeps a read
// deadline so that a server that goes silent while requests are pending is
// noticed, while an idle connection may stay silent forever.
type timedReader struct{ c *Client }

func (t timedReader) Read(p []byte) (int, error) {
	c := t.c
	for {
		if c.timeout > 0 {
			dl := time.Now().Add(c.timeout)
			if c.npending.Load() > 0 {
				dl = time.Unix(0, c.lastAct.Load()).Add(c.timeout)
			}
			c.conn.SetReadDeadline(dl)
		}
		n, err := c.conn.Read(p)
		if n > 0 {
			c.lastAct.Store(time.Now().UnixNano())
			return n, err
		}
		if err != nil && c.timeout > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			silent := time.Since(time.Unix(0, c.lastAct.Load()))
			if c.npending.Load() > 0 && silent >= c.timeout {
				return 0, fmt.Errorf("%w: no reply for %v with %d requests pending: %w",
					ErrTimeout, silent.Round(time.Millisecond), c.npending.Load(), err)
			}
			continue
		}
		return n, err
	}
}
