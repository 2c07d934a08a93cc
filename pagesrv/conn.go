package pagesrv

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// conn is one client connection, owned by the loop goroutine.
type conn struct {
	fd     int
	remote net.Addr
	tls    *tls.Conn // nil for plain TCP
	lc     *loopConn // TLS transport under tls

	in   []byte // plaintext requests: in[r:w] not yet handled
	r, w int
	out  outq

	readable, writable bool // edge-triggered readiness not yet used up
	eof                bool
	hello              bool
	closing            bool // flush out, then close
	doneAll            bool
	worked             bool  // asked for pages or extents
	err                error // why the server dropped it, for OnClose
	queued, dead       bool
	stream             *fileStream
	lastIn, lastOut    time.Time
}

// send queues a whole encoded message (from the pool).
func (s *Server) send(c *conn, b []byte) {
	if c.out.bytes == 0 {
		c.lastOut = time.Now()
	}
	if c.tls == nil {
		c.out.push(b)
		return
	}
	// loopConn.Write only appends to c.out, so this cannot fail for I/O
	// reasons; crypto/tls copies b into records, so b goes back at once.
	if _, err := c.tls.Write(b); err != nil {
		s.fail(c, fmt.Errorf("tls write: %w", err))
	}
	s.pool.put(b)
}

// sendLent queues bytes the server does not own (a MappedSource's), to be written from where they are.
// Plain TCP only: see serveMapped.
func (s *Server) sendLent(c *conn, b []byte) {
	if c.out.bytes == 0 {
		c.lastOut = time.Now()
	}
	c.out.pushLent(b)
}

// sendMsg encodes m with id and flags and queues it.
func (s *Server) sendMsg(c *conn, id uint32, flags uint16, m Message) {
	s.send(c, AppendMessage(s.pool.get(4096)[:0], id, flags, m))
}

// replyError answers request id with an Error message.
func (s *Server) replyError(c *conn, id uint32, code ErrorCode, err error) {
	s.reportErr(&ConnError{Remote: c.remote, Err: err})
	s.sendMsg(c, id, 0, MsgError{Code: code, Errno: errnoOf(err), Text: err.Error()})
}

// protocolError tells the client what it did wrong and drops it once the
// reply is flushed.
func (s *Server) protocolError(c *conn, err error) {
	code := CodeProtocol
	if errors.Is(err, ErrVersion) {
		code = CodeVersion
	}
	s.replyError(c, 0, code, err)
	c.closing = true
	c.err = err
	c.r, c.w = 0, 0
}

// fail drops c at once after an I/O error.
func (s *Server) fail(c *conn, err error) {
	if err != nil {
		s.reportErr(&ConnError{Remote: c.remote, Err: err})
		c.err = err
	}
	s.closeConn(c)
}

// service advances c as far as its sockets and budget allow.
func (s *Server) service(c *conn) {
	written := 0
	for !c.dead {
		progress := false
		if c.out.bytes > 0 && c.writable {
			n, err := c.out.flush(c.fd, &s.pool)
			if n > 0 {
				progress = true
				written += n
				c.lastOut = time.Now()
				s.stats.bytesOut.Add(uint64(n))
			}
			switch err {
			case nil:
			case unix.EAGAIN:
				c.writable = false
			default:
				s.fail(c, fmt.Errorf("write: %w", err))
				return
			}
		}
		if c.closing {
			if c.out.bytes == 0 {
				s.closeConn(c)
				return
			}
			if !progress {
				return
			}
			continue
		}
		if written >= turnBytes {
			s.schedule(c) // let the others have a turn
			return
		}
		if c.out.bytes < highWater {
			if c.stream != nil {
				s.streamChunk(c)
				progress = true
				continue
			}
			short, p := s.handleInput(c)
			progress = progress || p
			if c.dead || c.closing {
				continue
			}
			if short && c.out.bytes < highWater {
				n, err := s.readInput(c)
				if n > 0 {
					progress = true
					c.lastIn = time.Now()
				}
				if err != nil {
					if errors.Is(err, io.EOF) {
						c.eof = true
					} else {
						s.fail(c, fmt.Errorf("read: %w", err))
						return
					}
				}
				if c.eof && n == 0 {
					if c.r < c.w {
						s.fail(c, fmt.Errorf("%w (%d bytes of an unfinished message)", ErrTruncated, c.w-c.r))
						return
					}
					c.closing = true // the client left; flush what it may still read
					continue
				}
			}
		}
		if !progress {
			return
		}
	}
}

// readInput reads more request bytes into c.in.
func (s *Server) readInput(c *conn) (int, error) {
	if c.r == c.w {
		c.r, c.w = 0, 0
	} else if c.r > 0 {
		c.w = copy(c.in, c.in[c.r:c.w])
		c.r = 0
	}
	if c.w == len(c.in) {
		// Cannot happen: every request is far smaller than the buffer and
		// complete ones are consumed first.
		return 0, fmt.Errorf("%w: input buffer full", ErrProtocol)
	}
	if c.tls != nil {
		return s.readTLS(c)
	}
	if !c.readable {
		return 0, nil
	}
	for {
		n, err := unix.Read(c.fd, c.in[c.w:])
		switch err {
		case nil:
			if n == 0 {
				return 0, io.EOF
			}
			c.w += n
			s.stats.bytesIn.Add(uint64(n))
			return n, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			c.readable = false
			return 0, nil
		}
		return 0, err
	}
}

// readTLS decrypts what it can into c.in, pulling ciphertext from the
// socket as crypto/tls asks for it.
func (s *Server) readTLS(c *conn) (int, error) {
	total := 0
	for c.w < len(c.in) {
		n, err := c.tls.Read(c.in[c.w:])
		c.w += n
		total += n
		if err == nil {
			if n == 0 {
				break
			}
			continue
		}
		if err != errWouldBlock {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("%w: inside a TLS record", ErrTruncated)
			}
			return total, err
		}
		if !c.readable {
			return total, nil
		}
		got, rerr := c.lc.fill()
		s.stats.bytesIn.Add(uint64(got))
		switch {
		case rerr == unix.EAGAIN:
			c.readable = false
			return total, nil
		case rerr != nil && !errors.Is(rerr, io.EOF):
			return total, rerr
		}
		// On EOF the next tls.Read reports it (io.EOF after close_notify or
		// a clean cut, io.ErrUnexpectedEOF inside a record).
	}
	return total, nil
}

// handleInput handles the complete requests in c.in. short reports that it
// stopped for want of input (not for backpressure).
func (s *Server) handleInput(c *conn) (short, progress bool) {
	for c.out.bytes < highWater && c.stream == nil && !c.closing && !c.dead {
		b := c.in[c.r:c.w]
		if len(b) < HeaderSize {
			return true, progress
		}
		h, err := ParseHeader(b, s.pageSize)
		if err == nil && !h.Type.fromClient() {
			err = fmt.Errorf("%w: %v is not a request", ErrProtocol, h.Type)
		}
		if err != nil {
			s.protocolError(c, err)
			return false, true
		}
		n := HeaderSize + int(h.Length)
		if len(b) < n {
			return true, progress
		}
		m, err := decodeBody(h, b[HeaderSize:n], s.pageSize)
		if err != nil {
			s.protocolError(c, fmt.Errorf("%v message: %w", h.Type, err))
			return false, true
		}
		c.r += n
		progress = true
		s.stats.requests.Add(1)
		s.handle(c, h, m)
	}
	return false, progress
}

func (s *Server) handle(c *conn, h Header, m Message) {
	if !c.hello {
		hello, ok := m.(MsgHello)
		if !ok {
			s.protocolError(c, fmt.Errorf("%w: %v before Hello", ErrProtocol, h.Type))
			return
		}
		if int(hello.PageSize) != s.pageSize {
			c.err = fmt.Errorf("client page size %d, server %d", hello.PageSize, s.pageSize)
			s.replyError(c, h.ID, CodePageSize, c.err)
			c.closing = true
			return
		}
		c.hello = true
		s.sendMsg(c, h.ID, 0, MsgHelloAck{PageSize: uint32(s.pageSize), MaxPages: uint32(MaxRequestBytes / s.pageSize)})
		return
	}
	switch m := m.(type) {
	case MsgGetPages:
		c.worked = true
		s.servePages(c, h.ID, m)
	case MsgGetExtents:
		c.worked = true
		s.serveExtents(c, h.ID, m)
	case MsgListFiles:
		s.serveFileList(c, h.ID)
	case MsgGetFile:
		s.startFile(c, h.ID, m.Name)
	case MsgDone:
		s.stats.done.Add(1)
		if m.Pid == 0 {
			c.doneAll = true
			s.doneSeen = true
		}
		if s.opts.OnDone != nil {
			s.opts.OnDone(int(m.Pid))
		}
		s.sendMsg(c, h.ID, 0, MsgDoneAck{Pid: m.Pid})
	case MsgClose:
		c.closing = true
	default:
		s.protocolError(c, fmt.Errorf("%w: unexpected %v", ErrProtocol, h.Type))
	}
}

// servePages answers one GetPages: the page bytes are read by the Source
// straight into the reply buffer, after the header.
func (s *Server) servePages(c *conn, id uint32, m MsgGetPages) {
	ps := uint64(s.pageSize)
	if m.Pid == 0 || m.Pid > math.MaxInt32 || m.NrPages == 0 || m.NrPages > uint32(MaxRequestBytes/s.pageSize) ||
		m.Addr%ps != 0 || uint64(m.NrPages)*ps-1 > math.MaxUint64-m.Addr {
		s.replyError(c, id, CodeBadRequest, fmt.Errorf("%w: pid %d, %d pages at %#x", ErrBadRequest, m.Pid, m.NrPages, m.Addr))
		return
	}
	pid, nr := int(m.Pid), int(m.NrPages)
	if ms, ok := s.opts.Source.(MappedSource); ok && s.serveMapped(c, id, m, ms) {
		return
	}
	const meta = HeaderSize + pagesFixed
	buf := s.pool.get(meta + runSize*nr + nr*s.pageSize)
	status, runs, present := StatusOK, s.runs[:0], nr
	err := s.opts.Source.ReadPages(pid, m.Addr, buf[meta:meta+nr*s.pageSize])
	if errors.Is(err, ErrNotInImage) {
		status, runs, present, err = s.readPresent(pid, m, buf, meta)
	}
	if err != nil {
		s.pool.put(buf)
		code := CodeSource
		if errors.Is(err, unix.ESRCH) {
			code = CodeNotFound
		}
		s.replyError(c, id, code, fmt.Errorf("read %d pages of pid %d at %#x: %w", nr, pid, m.Addr, err))
		return
	}
	if status != StatusPartial {
		runs = runs[:0]
	}
	b := appendPagesMeta(buf[HeaderSize:HeaderSize], m.Pid, m.NrPages, m.Addr, status, runs)
	n := HeaderSize + len(b) + present*s.pageSize
	putHeader(buf, Header{Version: Version, Type: TypePages, Length: uint32(n - HeaderSize), ID: id})
	s.runs = runs
	s.stats.pages.Add(uint64(present))
	s.stats.absent.Add(uint64(nr - present))
	s.send(c, buf[:n])
}

// serveMapped answers a GetPages whose pages are all in a MappedSource with the mapped bytes
// themselves. It reports false, having sent nothing, when some page is not there (or the source
// fails), or on a TLS connection: servePages then answers the usual way, with runs or the error.
//
// Mapped bytes go out only on plain TCP, where the kernel reads them (writev): a pages file truncated
// behind the server's back then fails the write. crypto/tls would read them in user space to encrypt
// them, and a page beyond the end of the file would kill the server with SIGBUS; TLS replies are read
// into a buffer first (pread reports a short file as an error), at the cost of one more copy next to
// the encryption's.
func (s *Server) serveMapped(c *conn, id uint32, m MsgGetPages, ms MappedSource) bool {
	if c.tls != nil {
		return false
	}
	want := uint64(m.NrPages) * uint64(s.pageSize)
	parts := s.lent[:0]
	for got := uint64(0); got < want; {
		b, err := ms.MappedPages(int(m.Pid), m.Addr+got, want-got)
		if err != nil || len(b) == 0 || uint64(len(b)) > want-got {
			s.lent = parts[:0]
			return false
		}
		parts = append(parts, b)
		got += uint64(len(b))
	}
	buf := s.pool.get(HeaderSize + pagesFixed)
	b := appendPagesMeta(buf[HeaderSize:HeaderSize], m.Pid, m.NrPages, m.Addr, StatusOK, nil)
	putHeader(buf, Header{Version: Version, Type: TypePages, Length: uint32(len(b)) + uint32(want), ID: id})
	s.send(c, buf[:HeaderSize+len(b)])
	for _, p := range parts {
		s.sendLent(c, p)
	}
	clear(parts)
	s.lent = parts[:0]
	s.stats.pages.Add(uint64(m.NrPages))
	return true
}

// readPresent reads the present runs of a range that is partly not in the
// image, placing their bytes after the run list in buf.
func (s *Server) readPresent(pid int, m MsgGetPages, buf []byte, meta int) (uint16, []Run, int, error) {
	ext, err := s.extentsOf(pid)
	if err != nil {
		return 0, nil, 0, err
	}
	ps := uint64(s.pageSize)
	runs, present := runsFor(s.runs[:0], ext, m.Addr, m.NrPages, ps)
	if present == 0 {
		return StatusNotInImage, runs, 0, nil
	}
	off := meta + runSize*len(runs)
	addr := m.Addr
	for _, r := range runs {
		n := int(r.NrPages) * s.pageSize
		if r.Present {
			if err := s.opts.Source.ReadPages(pid, addr, buf[off:off+n]); err != nil {
				// Extents said these pages exist: the source contradicts itself.
				return 0, nil, 0, fmt.Errorf("pages listed by Extents: %w", err)
			}
			off += n
		}
		addr += uint64(n)
	}
	if len(runs) == 1 {
		// Extents list the whole range and this second read worked, though
		// the first said "not in image": answer OK, which has no run list,
		// so move the data up into its place.
		copy(buf[meta:], buf[meta+runSize:off])
		return StatusOK, runs, present, nil
	}
	return StatusPartial, runs, present, nil
}

// extentsOf returns the normalized extents of pid, cached.
func (s *Server) extentsOf(pid int) ([]Extent, error) {
	if e, ok := s.extents[pid]; ok {
		return e, nil
	}
	raw, err := s.opts.Source.Extents(pid)
	if err != nil {
		return nil, fmt.Errorf("extents of pid %d: %w", pid, err)
	}
	e, err := normalizeExtents(raw, uint64(s.pageSize))
	if err != nil {
		return nil, fmt.Errorf("extents of pid %d: %w", pid, err)
	}
	s.extents[pid] = e
	return e, nil
}

// serveExtents answers GetExtents in chunks of MaxExtentsPerMsg.
func (s *Server) serveExtents(c *conn, id uint32, m MsgGetExtents) {
	if m.Pid == 0 || m.Pid > math.MaxInt32 {
		s.replyError(c, id, CodeBadRequest, fmt.Errorf("%w: pid %d", ErrBadRequest, m.Pid))
		return
	}
	ext, err := s.extentsOf(int(m.Pid))
	if err != nil {
		code := CodeSource
		if errors.Is(err, unix.ESRCH) {
			code = CodeNotFound
		}
		s.replyError(c, id, code, err)
		return
	}
	for {
		k := min(len(ext), MaxExtentsPerMsg)
		var flags uint16
		if k < len(ext) {
			flags = FlagMore
		}
		b := s.pool.get(HeaderSize + 8 + extentSize*k)[:0]
		s.send(c, AppendMessage(b, id, flags, MsgExtents{Pid: m.Pid, Extents: ext[:k]}))
		ext = ext[k:]
		if flags == 0 {
			return
		}
	}
}
