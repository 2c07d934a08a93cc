package pagesrv

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var pageSize = os.Getpagesize()

// TestMain fails the run if the tests leak file descriptors: the server
// juggles raw fds, so a leak is a bug.
func TestMain(m *testing.M) {
	// The runtime's network poller opens its epoll fd and eventfd on first
	// use and keeps them: start it before counting.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
	before := countFDs()
	code := m.Run()
	if code == 0 {
		var after int
		for range 50 { // let goroutines of the last test finish closing
			if after = countFDs(); after <= before {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if after > before {
			fmt.Fprintf(os.Stderr, "leaked file descriptors: %d before, %d after\n", before, after)
			code = 1
		}
	}
	os.Exit(code)
}

func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(ents)
}

// fakeSource serves a pattern for configured extents of some pids.
type fakeSource struct {
	mu      sync.Mutex
	extents map[int][]Extent // raw, as given (may be unsorted, overlapping)
	norm    map[int][]Extent
	failAt  map[uint64]error // ReadPages covering this address fails
	onRead  func(pid int, addr uint64, n int)
	reads   int
}

func newFakeSource(ext map[int][]Extent) *fakeSource {
	s := &fakeSource{extents: ext, norm: map[int][]Extent{}, failAt: map[uint64]error{}}
	for pid, e := range ext {
		n, err := normalizeExtents(e, uint64(pageSize))
		if err != nil {
			panic(err)
		}
		s.norm[pid] = n
	}
	return s
}

// fillPage writes the expected contents of page addr of pid into p.
func fillPage(p []byte, pid int, addr uint64) {
	binary.LittleEndian.PutUint64(p, uint64(pid))
	binary.LittleEndian.PutUint64(p[8:], addr)
	seed := byte(pid*31) ^ byte(addr>>12)
	for i := 16; i < len(p); i++ {
		p[i] = seed + byte(i*7)
	}
}

func (s *fakeSource) present(pid int, addr uint64) bool {
	for _, e := range s.norm[pid] {
		if addr >= e.Addr && addr < e.Addr+e.NrPages*uint64(pageSize) {
			return true
		}
	}
	return false
}

func (s *fakeSource) ReadPages(pid int, addr uint64, dst []byte) error {
	s.mu.Lock()
	s.reads++
	onRead := s.onRead
	s.mu.Unlock()
	if onRead != nil {
		onRead(pid, addr, len(dst)/pageSize)
	}
	if _, ok := s.norm[pid]; !ok {
		return fmt.Errorf("pid %d: %w", pid, unix.ESRCH)
	}
	for off := 0; off < len(dst); off += pageSize {
		a := addr + uint64(off)
		if err := s.failAt[a]; err != nil {
			return fmt.Errorf("read %#x: %w", a, err)
		}
		if !s.present(pid, a) {
			return ErrNotInImage
		}
		fillPage(dst[off:off+pageSize], pid, a)
	}
	return nil
}

func (s *fakeSource) Extents(pid int) ([]Extent, error) {
	e, ok := s.extents[pid]
	if !ok {
		return nil, fmt.Errorf("pid %d: %w", pid, unix.ESRCH)
	}
	return e, nil
}

// checkPages verifies dst against the pattern, expecting zeros where the
// source has no pages.
func checkPages(t testing.TB, src *fakeSource, pid int, addr uint64, dst []byte) {
	t.Helper()
	want := make([]byte, pageSize)
	for off := 0; off < len(dst); off += pageSize {
		a := addr + uint64(off)
		if src.present(pid, a) {
			fillPage(want, pid, a)
		} else {
			clear(want)
		}
		if !bytes.Equal(dst[off:off+pageSize], want) {
			t.Fatalf("pid %d page %#x: wrong contents (present %v)", pid, a, src.present(pid, a))
		}
	}
}

// errLog collects OnError reports.
type errLog struct {
	mu   sync.Mutex
	errs []error
	ch   chan error
}

func newErrLog() *errLog { return &errLog{ch: make(chan error, 100)} }

func (l *errLog) add(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err)
	l.mu.Unlock()
	select {
	case l.ch <- err:
	default:
	}
}

func (l *errLog) all() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs...)
}

// waitFor waits for a reported error matching target.
func (l *errLog) waitFor(t *testing.T, target error) error {
	t.Helper()
	return l.waitMatch(t, target.Error(), func(err error) bool { return errors.Is(err, target) })
}

// waitMatch waits for a reported error for which match is true.
func (l *errLog) waitMatch(t *testing.T, what string, match func(error) bool) error {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case err := <-l.ch:
			if match(err) {
				return err
			}
		case <-deadline:
			t.Fatalf("no error matching %q reported; got %v", what, l.all())
			return nil
		}
	}
}

type testServer struct {
	*Server
	port   int
	cancel context.CancelFunc
	served chan error
	errs   *errLog
}

// startServer runs a server on loopback until the test ends.
func startServer(t *testing.T, opts ServerOptions) *testServer {
	t.Helper()
	el := newErrLog()
	if opts.OnError == nil {
		opts.OnError = el.add
	}
	opts.Address = "127.0.0.1"
	srv, err := NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: srv, port: srv.Addr().(*net.TCPAddr).Port, cancel: cancel, served: make(chan error, 1), errs: el}
	go func() { ts.served <- srv.Serve(ctx) }()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

func (ts *testServer) stop(t *testing.T) {
	ts.cancel()
	select {
	case err := <-ts.served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		ts.served <- nil // later calls return at once
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

func dialT(t *testing.T, port int, opts ClientOptions) *Client {
	t.Helper()
	opts.Address, opts.Port = "127.0.0.1", port
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialOptions(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawConn is a hand-driven protocol peer for misbehaviour tests.
type rawConn struct {
	net.Conn
	buf []byte
}

func dialRaw(t *testing.T, port int) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{Conn: c}
}

func (r *rawConn) send(t *testing.T, id uint32, m Message) {
	t.Helper()
	if _, err := r.Write(AppendMessage(nil, id, 0, m)); err != nil {
		t.Fatal(err)
	}
}

// recv reads one whole message (any size up to the bounds).
func (r *rawConn) recv(t *testing.T) (Header, Message, error) {
	t.Helper()
	r.SetReadDeadline(time.Now().Add(5 * time.Second))
	chunk := make([]byte, 64<<10)
	for {
		h, m, n, err := Decode(r.buf, pageSize)
		if err == nil {
			r.buf = r.buf[n:]
			return h, m, nil
		}
		if !errors.Is(err, ErrShort) {
			return h, nil, err
		}
		k, err := r.Read(chunk)
		r.buf = append(r.buf, chunk[:k]...)
		if err != nil {
			return Header{}, nil, err
		}
	}
}

func (r *rawConn) hello(t *testing.T) {
	t.Helper()
	r.send(t, 1, MsgHello{PageSize: uint32(pageSize)})
	h, m, err := r.recv(t)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.(MsgHelloAck); !ok || h.ID != 1 {
		t.Fatalf("hello answered by %v id %d", h.Type, h.ID)
	}
}

// expectEOF waits for the server to close the connection.
func (r *rawConn) expectEOF(t *testing.T) {
	t.Helper()
	r.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, r)
	if err != nil && !errors.Is(err, unix.ECONNRESET) {
		t.Fatalf("waiting for the server to close: %v", err)
	}
}
