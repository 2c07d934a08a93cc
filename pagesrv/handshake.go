package pagesrv

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// wouldBlock is what loopConn.Read returns when the loop has no ciphertext
// for crypto/tls. It is a temporary net.Error: crypto/tls passes those up
// without poisoning the connection (conn.go readRecordOrCCS), so the next
// Read resumes with the bytes it had already buffered.
type wouldBlock struct{}

func (wouldBlock) Error() string   { return "pagesrv: would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

var errWouldBlock net.Error = wouldBlock{}

// loopConn is the net.Conn under a server-side tls.Conn. During the
// handshake (on its own goroutine) it reads and writes the socket directly,
// waiting in poll(2) with a deadline; once the connection joins the loop it
// only moves bytes between crypto/tls and the loop's buffers.
type loopConn struct {
	fd       int
	stopfd   int
	deadline time.Time
	local    net.Addr
	remote   net.Addr

	// Loop mode (set by toLoop, then used by the loop goroutine only).
	srv  *Server
	c    *conn
	in   []byte // ciphertext read from the socket, in[r:w] unread
	r, w int
	eof  bool
}

var errHandshakeTimeout = fmt.Errorf("%w: TLS handshake", os.ErrDeadlineExceeded)

func (l *loopConn) toLoop(s *Server, c *conn) {
	l.srv, l.c = s, c
	l.in = make([]byte, inBufSize+1024)
}

func (l *loopConn) Read(p []byte) (int, error) {
	if l.c != nil {
		if l.r == l.w {
			if l.eof {
				return 0, io.EOF
			}
			return 0, errWouldBlock
		}
		n := copy(p, l.in[l.r:l.w])
		l.r += n
		return n, nil
	}
	for {
		n, err := unix.Read(l.fd, p)
		switch err {
		case nil:
			if n == 0 {
				return 0, io.EOF
			}
			return n, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			if err := l.wait(unix.POLLIN); err != nil {
				return 0, err
			}
			continue
		}
		return 0, fmt.Errorf("read: %w", err)
	}
}

func (l *loopConn) Write(p []byte) (int, error) {
	if l.c != nil {
		l.c.out.appendCopy(&l.srv.pool, p)
		return len(p), nil
	}
	done := 0
	for done < len(p) {
		n, err := unix.Write(l.fd, p[done:])
		switch err {
		case nil:
			done += n
		case unix.EINTR:
		case unix.EAGAIN:
			if err := l.wait(unix.POLLOUT); err != nil {
				return done, err
			}
		default:
			return done, fmt.Errorf("write: %w", err)
		}
	}
	return done, nil
}

// fill reads ciphertext from the socket (loop mode).
func (l *loopConn) fill() (int, error) {
	if l.r == l.w {
		l.r, l.w = 0, 0
	} else if l.r > 0 {
		l.w = copy(l.in, l.in[l.r:l.w])
		l.r = 0
	}
	for {
		n, err := unix.Read(l.fd, l.in[l.w:])
		switch err {
		case nil:
			if n == 0 {
				l.eof = true
				return 0, io.EOF
			}
			l.w += n
			return n, nil
		case unix.EINTR:
			continue
		}
		return 0, err
	}
}

// wait blocks until fd is ready for events, the deadline passes or the
// server stops.
func (l *loopConn) wait(events int16) error {
	for {
		left := time.Until(l.deadline)
		if left <= 0 {
			return errHandshakeTimeout
		}
		fds := []unix.PollFd{{Fd: int32(l.fd), Events: events}, {Fd: int32(l.stopfd), Events: unix.POLLIN}}
		_, err := unix.Poll(fds, int(left/time.Millisecond)+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		if fds[1].Revents != 0 {
			return ErrClosed
		}
		if fds[0].Revents != 0 {
			return nil
		}
	}
}

func (l *loopConn) Close() error                       { return nil } // the server owns the fd
func (l *loopConn) LocalAddr() net.Addr                { return l.local }
func (l *loopConn) RemoteAddr() net.Addr               { return l.remote }
func (l *loopConn) SetDeadline(t time.Time) error      { l.deadline = t; return nil }
func (l *loopConn) SetReadDeadline(t time.Time) error  { l.deadline = t; return nil }
func (l *loopConn) SetWriteDeadline(t time.Time) error { l.deadline = t; return nil }

// startHandshake runs c's TLS handshake on its own goroutine and hands the
// connection to the loop when it succeeds.
func (s *Server) startHandshake(c *conn) {
	local := s.addr
	if sa, err := unix.Getsockname(c.fd); err == nil {
		local = sockaddrToTCP(sa)
	}
	c.lc = &loopConn{fd: c.fd, stopfd: s.stopfd, deadline: time.Now().Add(s.hsTimeout), local: local, remote: c.remote}
	c.tls = tls.Server(c.lc, s.opts.TLS)
	s.hsWG.Add(1)
	go func() {
		defer s.hsWG.Done()
		var err error
		// Waiting for a handshake slot counts against the deadline too, so
		// a flood of connections cannot queue up goroutines forever.
		wait := time.NewTimer(time.Until(c.lc.deadline))
		select {
		case s.hsSem <- struct{}{}:
			wait.Stop()
			err = c.tls.Handshake()
			<-s.hsSem
		case <-wait.C:
			err = errHandshakeTimeout
		case <-s.quit:
			wait.Stop()
			err = ErrClosed
		}
		if err != nil {
			unix.Close(c.fd)
			if !errors.Is(err, ErrClosed) { // not worth a report: we are stopping
				s.reportErr(&ConnError{Remote: c.remote, Err: fmt.Errorf("TLS handshake: %w", err)})
			}
			return
		}
		s.mu.Lock()
		if s.quitting {
			s.mu.Unlock()
			unix.Close(c.fd)
			return
		}
		s.handed = append(s.handed, c)
		s.mu.Unlock()
		s.wake()
	}()
}
