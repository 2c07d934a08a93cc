package pagesrv

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const base = 0x7f0000000000

func pg(n int) uint64 { return uint64(n * pageSize) }

// testExtents: pid 100 has holes, touching and overlapping extents given out
// of order, and one extent larger than a request; pid 200 one page.
func testExtents() map[int][]Extent {
	return map[int][]Extent{
		100: {
			{Addr: base + pg(1000), NrPages: 2048},
			{Addr: base + pg(24), NrPages: 3},
			{Addr: base, NrPages: 10},
			{Addr: base + pg(20), NrPages: 5},
			{Addr: base + pg(5), NrPages: 0},
		},
		200: {{Addr: 0x10000, NrPages: 1}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		t.Run(map[bool]string{false: "tcp", true: "tls"}[tlsOn], func(t *testing.T) {
			src := newFakeSource(testExtents())
			opts := ServerOptions{Source: src}
			var copts ClientOptions
			if tlsOn {
				pki := newPKI(t)
				opts.TLS, copts.TLS = pki.serverConfig(t), pki.clientConfig(t, pki.clientCert, pki.clientKey)
			}
			ts := startServer(t, opts)
			c := dialT(t, ts.port, copts)
			testRoundTrip(t, c, src)
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if errs := ts.errs.all(); len(errs) != 1 || !errors.Is(errs[0], unix.ESRCH) {
				// exactly the one failed request of the unknown pid
				t.Errorf("server errors: %v", errs)
			}
		})
	}
}

func testRoundTrip(t *testing.T, c *Client, src *fakeSource) {
	// Whole present range.
	dst := make([]byte, pg(10))
	if err := c.ReadPages(100, base, dst); err != nil {
		t.Fatal(err)
	}
	checkPages(t, src, 100, base, dst)

	// Partly present: pages 8..29 cross the hole 10..19 and 27..29.
	dst = make([]byte, pg(22))
	for i := range dst {
		dst[i] = 0xee // must be overwritten with zeros where absent
	}
	err := c.ReadPages(100, base+pg(8), dst)
	var nie *NotInImageError
	if !errors.As(err, &nie) || !errors.Is(err, ErrNotInImage) {
		t.Fatalf("partial read: %v", err)
	}
	wantAbsent := []Extent{{Addr: base + pg(10), NrPages: 10}, {Addr: base + pg(27), NrPages: 3}}
	if !slices.Equal(nie.Absent, wantAbsent) || nie.Pid != 100 {
		t.Fatalf("absent %+v, want %+v", nie.Absent, wantAbsent)
	}
	checkPages(t, src, 100, base+pg(8), dst)

	// Nothing present.
	dst = make([]byte, pg(3))
	err = c.ReadPages(100, base+pg(11), dst)
	if !errors.As(err, &nie) || !slices.Equal(nie.Absent, []Extent{{Addr: base + pg(11), NrPages: 3}}) {
		t.Fatalf("absent read: %v", err)
	}

	// Larger than one request: split and pipelined, with a hole at the end.
	dst = make([]byte, pg(2100))
	err = c.ReadPages(100, base+pg(1000), dst)
	if !errors.As(err, &nie) || !slices.Equal(nie.Absent, []Extent{{Addr: base + pg(3048), NrPages: 52}}) {
		t.Fatalf("big read: %v", err)
	}
	checkPages(t, src, 100, base+pg(1000), dst)

	// Extents come back normalized.
	ext, err := c.Extents(100)
	if err != nil {
		t.Fatal(err)
	}
	want := []Extent{{Addr: base, NrPages: 10}, {Addr: base + pg(20), NrPages: 7}, {Addr: base + pg(1000), NrPages: 2048}}
	if !slices.Equal(ext, want) {
		t.Fatalf("extents %+v, want %+v", ext, want)
	}

	// Unknown pid: the errno travels.
	err = c.ReadPages(300, base, make([]byte, pg(1)))
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != CodeNotFound || !errors.Is(err, unix.ESRCH) {
		t.Fatalf("unknown pid: %v", err)
	}

	// Bad arguments are refused before sending.
	if err := c.ReadPages(100, base+1, make([]byte, pg(1))); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("unaligned: %v", err)
	}
	if err := c.ReadPages(100, base, make([]byte, 100)); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("partial page: %v", err)
	}

	// The session survived all of the above.
	dst = make([]byte, pg(1))
	if err := c.ReadPages(200, 0x10000, dst); err != nil {
		t.Fatal(err)
	}
	checkPages(t, src, 200, 0x10000, dst)
	st := c.Stats()
	if st.Pages != 10+9+2048+1 || st.AbsentPages != 13+3+52 {
		t.Fatalf("client stats %+v", st)
	}
}

func TestSourceError(t *testing.T) {
	src := newFakeSource(testExtents())
	src.failAt[base+pg(3)] = unix.EIO
	ts := startServer(t, ServerOptions{Source: src})
	c := dialT(t, ts.port, ClientOptions{})
	err := c.ReadPages(100, base, make([]byte, pg(4)))
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != CodeSource || !errors.Is(err, unix.EIO) {
		t.Fatalf("got %v", err)
	}
	ts.errs.waitFor(t, unix.EIO)
	if err := c.ReadPages(100, base+pg(4), make([]byte, pg(4))); err != nil {
		t.Fatalf("session broken after a failed request: %v", err)
	}
}

// TestServerRejectsBadRequest: invalid arguments get an Error reply tied to
// the request, and the connection stays usable.
func TestServerRejectsBadRequest(t *testing.T) {
	src := newFakeSource(testExtents())
	ts := startServer(t, ServerOptions{Source: src})
	r := dialRaw(t, ts.port)
	r.hello(t)
	for i, m := range []MsgGetPages{
		{Pid: 100, NrPages: 1, Addr: base + 1},
		{Pid: 100, NrPages: 0, Addr: base},
		{Pid: 100, NrPages: uint32(MaxRequestBytes/pageSize) + 1, Addr: base},
		{Pid: 0, NrPages: 1, Addr: base},
		{Pid: 100, NrPages: 2, Addr: ^uint64(0) - uint64(pageSize) + 1},
	} {
		id := uint32(10 + i)
		r.send(t, id, m)
		h, reply, err := r.recv(t)
		if err != nil {
			t.Fatal(err)
		}
		e, ok := reply.(MsgError)
		if !ok || h.ID != id || e.Code != CodeBadRequest {
			t.Fatalf("%+v answered by %v %+v (id %d)", m, h.Type, reply, h.ID)
		}
	}
	r.send(t, 99, MsgGetPages{Pid: 200, NrPages: 1, Addr: 0x10000})
	h, reply, err := r.recv(t)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := reply.(MsgPages)
	if !ok || h.ID != 99 || p.Status != StatusOK || len(p.Data) != pageSize {
		t.Fatalf("after bad requests: %v %+v", h.Type, reply)
	}
	checkPages(t, src, 200, 0x10000, p.Data)
}

func TestConcurrentClients(t *testing.T) {
	src := newFakeSource(testExtents())
	ts := startServer(t, ServerOptions{Source: src})
	const clients, calls = 16, 40
	var wg sync.WaitGroup
	errc := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := Dial(context.Background(), "127.0.0.1", ts.port, nil)
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			done := make(chan *Call, calls)
			for range calls {
				n := 1 + rng.IntN(300)
				start := rng.IntN(3100)
				c.Go(100, base+pg(start), make([]byte, pg(n)), done)
			}
			for range calls {
				call := <-done
				if call.Err != nil && call.Absent == nil {
					errc <- call.Err
					return
				}
				var absent uint64
				for _, a := range call.Absent {
					absent += a.NrPages
				}
				for off := 0; off < len(call.Dst); off += pageSize {
					a := call.Addr + uint64(off)
					want := make([]byte, pageSize)
					if src.present(100, a) {
						fillPage(want, 100, a)
					}
					if string(call.Dst[off:off+pageSize]) != string(want) {
						errc <- fmt.Errorf("client %d: page %#x wrong", i, a)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	st := ts.Stats()
	if st.ClientsTotal != clients || st.Requests < clients*(calls+1) || st.Pages == 0 {
		t.Errorf("server stats %+v", st)
	}
	if errs := ts.errs.all(); len(errs) != 0 {
		t.Errorf("server errors: %v", errs)
	}
}

// streamer keeps a good client busy while others misbehave.
func streamer(t *testing.T, port int, src *fakeSource, stop <-chan struct{}) <-chan error {
	out := make(chan error, 1)
	c := dialT(t, port, ClientOptions{})
	go func() {
		dst := make([]byte, pg(1000))
		for n := 0; ; n++ {
			select {
			case <-stop:
				if n == 0 {
					out <- errors.New("no round completed")
					return
				}
				out <- nil
				return
			default:
			}
			if err := c.ReadPages(100, base+pg(1000), dst); err != nil {
				out <- err
				return
			}
			for _, off := range []int{0, 500, 999} {
				a := base + pg(1000+off)
				want := make([]byte, pageSize)
				fillPage(want, 100, a)
				if string(dst[pg(off):pg(off+1)]) != string(want) {
					out <- fmt.Errorf("page %#x wrong", a)
					return
				}
			}
		}
	}()
	return out
}

func TestMisbehavingClients(t *testing.T) {
	src := newFakeSource(testExtents())
	ts := startServer(t, ServerOptions{Source: src, Timeout: 300 * time.Millisecond})
	stop := make(chan struct{})
	good := streamer(t, ts.port, src, stop)

	t.Run("garbage", func(t *testing.T) {
		r := dialRaw(t, ts.port)
		r.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		ts.errs.waitFor(t, ErrBadMagic)
		r.expectEOF(t)
	})
	t.Run("truncated", func(t *testing.T) {
		r := dialRaw(t, ts.port)
		r.hello(t)
		msg := AppendMessage(nil, 5, 0, MsgGetPages{Pid: 100, NrPages: 1, Addr: base})
		r.Write(msg[:HeaderSize+5])
		r.Conn.(*net.TCPConn).CloseWrite()
		err := ts.errs.waitFor(t, ErrTruncated)
		var ce *ConnError
		if !errors.As(err, &ce) || ce.Remote.String() != r.LocalAddr().String() {
			t.Fatalf("error does not name the client %v: %v", r.LocalAddr(), err)
		}
		r.expectEOF(t)
	})
	t.Run("stalled", func(t *testing.T) {
		r := dialRaw(t, ts.port)
		r.hello(t)
		msg := AppendMessage(nil, 5, 0, MsgGetPages{Pid: 100, NrPages: 1, Addr: base})
		r.Write(msg[:10])
		ts.errs.waitFor(t, ErrTimeout)
		r.expectEOF(t)
	})
	t.Run("no-hello", func(t *testing.T) {
		r := dialRaw(t, ts.port)
		r.send(t, 1, MsgGetPages{Pid: 100, NrPages: 1, Addr: base})
		h, m, err := r.recv(t)
		if err != nil || h.Type != TypeError || m.(MsgError).Code != CodeProtocol {
			t.Fatalf("got %v %+v %v", h.Type, m, err)
		}
		r.expectEOF(t)
	})
	t.Run("reply-type", func(t *testing.T) {
		// A server-side type with a huge length is refused on its header,
		// without waiting for (or buffering) the 4 MiB it announces.
		r := dialRaw(t, ts.port)
		r.hello(t)
		hdr := make([]byte, HeaderSize)
		putHeader(hdr, Header{Version: Version, Type: TypePages, Length: pagesFixed + uint32(MaxRequestBytes), ID: 3})
		r.Write(hdr)
		h, m, err := r.recv(t)
		if err != nil || h.Type != TypeError || m.(MsgError).Code != CodeProtocol {
			t.Fatalf("got %v %+v %v", h.Type, m, err)
		}
		r.expectEOF(t)
	})
	t.Run("version", func(t *testing.T) {
		r := dialRaw(t, ts.port)
		msg := AppendMessage(nil, 1, 0, MsgHello{PageSize: uint32(pageSize)})
		msg[4] = Version + 1
		r.Write(msg)
		h, m, err := r.recv(t)
		if err != nil || h.Type != TypeError || m.(MsgError).Code != CodeVersion {
			t.Fatalf("got %v %+v %v", h.Type, m, err)
		}
		ts.errs.waitFor(t, ErrVersion)
	})
	t.Run("bad-name", func(t *testing.T) {
		r := dialRaw(t, ts.port)
		r.hello(t)
		r.send(t, 7, MsgGetFile{Name: "../../etc/passwd"})
		h, m, err := r.recv(t)
		if err != nil || h.Type != TypeError || m.(MsgError).Code != CodeProtocol {
			t.Fatalf("got %v %+v %v", h.Type, m, err)
		}
		ts.errs.waitFor(t, ErrBadName)
	})
	t.Run("page-size", func(t *testing.T) {
		r := dialRaw(t, ts.port)
		r.send(t, 1, MsgHello{PageSize: uint32(pageSize * 2)})
		h, m, err := r.recv(t)
		if err != nil || h.Type != TypeError || m.(MsgError).Code != CodePageSize {
			t.Fatalf("got %v %+v %v", h.Type, m, err)
		}
		r.expectEOF(t)
	})
	close(stop)
	if err := <-good; err != nil {
		t.Fatalf("good client disturbed: %v", err)
	}
	if st := ts.Stats(); st.Clients != 1 {
		t.Errorf("%d clients still connected, want only the good one", st.Clients)
	}
}

// TestUnreadReplies: a client that pipelines but never reads is throttled
// (bounded server memory) and dropped after the timeout.
func TestUnreadReplies(t *testing.T) {
	src := newFakeSource(testExtents())
	ts := startServer(t, ServerOptions{Source: src, Timeout: 300 * time.Millisecond})
	r := dialRaw(t, ts.port)
	r.hello(t)
	var batch []byte
	for i := range 200 {
		batch = AppendMessage(batch, uint32(i+2), 0, MsgGetPages{Pid: 100, NrPages: 1024, Addr: base + pg(1000)})
	}
	go r.Write(batch) // may block: the server stops reading
	ts.errs.waitFor(t, ErrTimeout)
	// What may be produced: the queue bound, one reply over it, and what
	// the two socket buffers hold; far from the 800 MiB asked for.
	if st := ts.Stats(); st.Pages*uint64(pageSize) > 64<<20 {
		t.Fatalf("server produced %d pages for a client that reads nothing", st.Pages)
	}
}

func TestServerClosedMidTransfer(t *testing.T) {
	ext := testExtents()
	ext[300] = []Extent{{Addr: base, NrPages: 1 << 16}}
	src := newFakeSource(ext)
	release := make(chan struct{})
	first := make(chan struct{})
	var once sync.Once
	src.onRead = func(int, uint64, int) {
		once.Do(func() {
			close(first)
			<-release
		})
	}
	ts := startServer(t, ServerOptions{Source: src})
	c := dialT(t, ts.port, ClientOptions{Timeout: 5 * time.Second})
	res := make(chan error, 1)
	// 64 MiB: far more than the server queues and the sockets hold, so the
	// server cannot have sent it all when it stops.
	go func() { res <- c.ReadPages(300, base, make([]byte, 64<<20)) }()
	<-first
	ts.cancel() // the server stops while a request is being read
	close(release)
	select {
	case err := <-res:
		if !errors.Is(err, ErrConnLost) {
			t.Fatalf("got %v, want ErrConnLost", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("client hangs after the server went away")
	}
	if err := c.ReadPages(100, base, make([]byte, pg(1))); !errors.Is(err, ErrConnLost) {
		t.Fatalf("later request: %v", err)
	}
}

// fakeServer accepts one connection, answers Hello, then runs script.
func fakeServer(t *testing.T, script func(c net.Conn, id uint32)) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := &rawConn{Conn: c}
		h, _, err := r.recv(t)
		if err != nil {
			return
		}
		c.Write(AppendMessage(nil, h.ID, 0, MsgHelloAck{PageSize: uint32(pageSize), MaxPages: 1024}))
		h, _, err = r.recv(t)
		if err != nil {
			return
		}
		script(c, h.ID)
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestServerDiesMidReply(t *testing.T) {
	port := fakeServer(t, func(c net.Conn, id uint32) {
		msg := AppendMessage(nil, id, 0, MsgPages{Pid: 100, NrPages: 4, Addr: base, Data: make([]byte, pg(4))})
		c.Write(msg[:len(msg)-pageSize-100]) // then the "server" dies
	})
	c := dialT(t, port, ClientOptions{Timeout: 5 * time.Second})
	start := time.Now()
	err := c.ReadPages(100, base, make([]byte, pg(4)))
	if !errors.Is(err, ErrConnLost) || !errors.Is(err, ErrTruncated) {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestServerSilent(t *testing.T) {
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	port := fakeServer(t, func(net.Conn, uint32) { <-hold })
	c := dialT(t, port, ClientOptions{Timeout: 300 * time.Millisecond})
	start := time.Now()
	err := c.ReadPages(100, base, make([]byte, pg(4)))
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, ErrConnLost) {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Fatalf("timed out after %v, want about 300ms", d)
	}
}

// TestIdleClientNotTimedOut: silence without pending requests is fine.
func TestIdleClientNotTimedOut(t *testing.T) {
	src := newFakeSource(testExtents())
	ts := startServer(t, ServerOptions{Source: src, Timeout: 200 * time.Millisecond})
	c := dialT(t, ts.port, ClientOptions{Timeout: 200 * time.Millisecond})
	time.Sleep(700 * time.Millisecond)
	if err := c.ReadPages(200, 0x10000, make([]byte, pg(1))); err != nil {
		t.Fatal(err)
	}
	if errs := ts.errs.all(); len(errs) != 0 {
		t.Fatalf("server errors: %v", errs)
	}
}

func TestDone(t *testing.T) {
	src := newFakeSource(testExtents())
	var mu sync.Mutex
	var done []int
	el := newErrLog()
	srv, err := NewServer(ServerOptions{Address: "127.0.0.1", Source: src, ExitWhenDone: true, OnError: el.add,
		OnDone: func(pid int) { mu.Lock(); done = append(done, pid); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	c, err := Dial(context.Background(), "127.0.0.1", srv.Addr().(*net.TCPAddr).Port, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ReadPages(200, 0x10000, make([]byte, pg(1))); err != nil {
		t.Fatal(err)
	}
	if err := c.DonePid(200); err != nil {
		t.Fatal(err)
	}
	select {
	case <-served:
		t.Fatal("server exited before Done for all")
	case <-time.After(100 * time.Millisecond):
	}
	if err := c.Done(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server did not exit after Done")
	}
	c.Close()
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(done, []int{200, 0}) {
		t.Fatalf("OnDone calls %v", done)
	}
	if st := srv.Stats(); st.Done != 2 || st.Clients != 0 {
		t.Fatalf("stats %+v", st)
	}
	if errs := el.all(); len(errs) != 0 {
		t.Fatalf("server errors: %v", errs)
	}
	srv.Close() // after Serve returned: must not hang
}

func TestCloseWithoutServe(t *testing.T) {
	srv, err := NewServer(ServerOptions{Address: "127.0.0.1", Source: newFakeSource(nil)})
	if err != nil {
		t.Fatal(err)
	}
	port := srv.Addr().(*net.TCPAddr).Port
	srv.Close()
	srv.Close()
	if err := srv.Serve(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve after Close: %v", err)
	}
	if _, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
		t.Fatal("listener still open after Close")
	}
}

func TestServerClose(t *testing.T) {
	src := newFakeSource(testExtents())
	srv, err := NewServer(ServerOptions{Address: "127.0.0.1", Source: src})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	c, err := Dial(context.Background(), "127.0.0.1", srv.Addr().(*net.TCPAddr).Port, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.ReadPages(200, 0x10000, make([]byte, pg(1))); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if err := c.ReadPages(200, 0x10000, make([]byte, pg(1))); !errors.Is(err, ErrConnLost) {
		t.Fatalf("after server Close: %v", err)
	}
}

func TestClientClose(t *testing.T) {
	src := newFakeSource(testExtents())
	ts := startServer(t, ServerOptions{Source: src})
	c := dialT(t, ts.port, ClientOptions{})
	c.Close()
	if err := c.ReadPages(200, 0x10000, make([]byte, pg(1))); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for ts.Stats().Clients != 0 {
		if time.Now().After(deadline) {
			t.Fatal("server keeps the closed client")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if errs := ts.errs.all(); len(errs) != 0 {
		t.Fatalf("a clean Close reported as error: %v", errs)
	}
}

func TestGoUnbufferedPanics(t *testing.T) {
	src := newFakeSource(testExtents())
	ts := startServer(t, ServerOptions{Source: src})
	c := dialT(t, ts.port, ClientOptions{})
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	c.Go(200, 0x10000, make([]byte, pg(1)), make(chan *Call))
}
