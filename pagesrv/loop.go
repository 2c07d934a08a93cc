package pagesrv

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// highWater: a connection whose queued replies reach this stops having
	// its requests read until the socket drains (the client is throttled by
	// TCP instead of by our memory).
	highWater = 1 << 20
	// turnBytes: bytes one connection may write per loop turn before the
	// others get theirs.
	turnBytes = 8 << 20
	inBufSize = 16 << 10
	// sweepEvery bounds how late a stalled connection is noticed.
	sweepEvery = 250 * time.Millisecond
)

// loop is the server's only goroutine for established connections.
func (s *Server) loop() error {
	events := make([]unix.EpollEvent, 128)
	for {
		if s.stopping.Load() {
			return nil
		}
		timeout := -1
		switch {
		case len(s.ready) > 0:
			timeout = 0
		case !s.acceptPause.IsZero():
			timeout = 100
		case s.timeout > 0 && len(s.conns) > 0:
			timeout = int(sweepEvery / time.Millisecond)
		}
		n, err := unix.EpollWait(s.epfd, events, timeout)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("pagesrv: epoll_wait: %w", err)
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			switch fd {
			case s.lfd:
				s.acceptAll()
			case s.wakefd:
				var b [8]byte
				unix.Read(s.wakefd, b[:])
				s.adoptHanded()
			default:
				c := s.conns[fd]
				if c == nil {
					continue
				}
				if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
					c.readable = true
				}
				if ev.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
					c.writable = true
				}
				s.schedule(c)
			}
		}
		ready := s.ready
		s.ready = s.spare[:0]
		for _, c := range ready {
			c.queued = false
			if !c.dead {
				s.service(c)
			}
		}
		clear(ready)
		s.spare = ready[:0]

		now := time.Now()
		if !s.acceptPause.IsZero() && now.After(s.acceptPause) {
			s.acceptPause = time.Time{}
			s.acceptAll()
		}
		if s.timeout > 0 && now.Sub(s.lastSweep) >= sweepEvery {
			s.lastSweep = now
			s.sweep(now)
		}
		if s.opts.ExitWhenDone && s.allDone() {
			return nil
		}
	}
}

func (s *Server) schedule(c *conn) {
	if !c.queued && !c.dead {
		c.queued = true
		s.ready = append(s.ready, c)
	}
}

// acceptAll accepts every pending connection.
func (s *Server) acceptAll() {
	if !s.acceptPause.IsZero() {
		return
	}
	for {
		fd, sa, err := unix.Accept4(s.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch err {
		case nil:
		case unix.EINTR, unix.ECONNABORTED:
			continue
		case unix.EAGAIN:
			return
		case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
			// The listener stays readable (level-triggered); pause
			// accepting instead of spinning until resources free up.
			s.reportErr(fmt.Errorf("pagesrv: accept: %w", err))
			s.acceptPause = time.Now().Add(100 * time.Millisecond)
			return
		default:
			s.reportErr(fmt.Errorf("pagesrv: accept: %w", err))
			return
		}
		s.stats.clientsTotal.Add(1)
		// Replies are written whole; small ones (HelloAck, DoneAck) must not
		// wait for Nagle behind the peer's delayed ACK.
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		c := &conn{fd: fd, remote: sockaddrToTCP(sa)}
		if s.opts.TLS != nil {
			s.startHandshake(c)
			continue
		}
		s.adopt(c)
	}
}

// adopt makes c part of the loop.
func (s *Server) adopt(c *conn) {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(c.fd)}
	if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		unix.Close(c.fd)
		s.reportErr(&ConnError{Remote: c.remote, Err: fmt.Errorf("epoll_ctl add: %w", err)})
		return
	}
	now := time.Now()
	c.in = make([]byte, inBufSize)
	c.lastIn, c.lastOut = now, now
	// Edge-triggered: the socket may already hold data (and a TLS
	// connection may hold a decrypted record), so look at it once now.
	c.readable, c.writable = true, true
	if c.lc != nil {
		c.lc.toLoop(s, c)
	}
	s.conns[c.fd] = c
	s.stats.clients.Add(1)
	s.schedule(c)
}

// adoptHanded adopts the connections whose TLS handshake finished.
func (s *Server) adoptHanded() {
	s.mu.Lock()
	handed := s.handed
	s.handed = nil
	s.mu.Unlock()
	for _, c := range handed {
		s.adopt(c)
	}
}

// closeConn closes c and forgets it. Closing the fd removes it from epoll.
func (s *Server) closeConn(c *conn) {
	if c.dead {
		return
	}
	c.dead = true
	if c.stream != nil {
		c.stream.close()
		c.stream = nil
	}
	c.out.release(&s.pool)
	unix.Close(c.fd)
	delete(s.conns, c.fd)
	s.stats.clients.Add(-1)
	if s.opts.OnClose != nil && !s.shut {
		s.opts.OnClose(ClientSummary{Remote: c.remote, Pages: c.worked, Done: c.doneAll, Err: c.err})
	}
}

// sweep drops connections that stalled mid-message, before Hello, or with
// replies they do not read.
func (s *Server) sweep(now time.Time) {
	for _, c := range s.conns {
		var why string
		switch {
		case c.out.bytes > 0 && now.Sub(c.lastOut) > s.timeout:
			why = "does not read its replies"
		case c.closing:
			continue
		case !c.hello && now.Sub(c.lastIn) > s.timeout:
			why = "sent no Hello"
		case c.r < c.w && now.Sub(c.lastIn) > s.timeout:
			why = "stalled in the middle of a message"
		default:
			continue
		}
		c.err = fmt.Errorf("%w: %s for %v", ErrTimeout, why, s.timeout)
		s.reportErr(&ConnError{Remote: c.remote, Err: c.err})
		s.closeConn(c)
	}
}

// allDone reports whether some client said Done for all its work and every
// connected client that asked for pages has. Clients that never asked for
// pages or extents (idle, or only fetching files) do not hold the server:
// otherwise one idle connection would keep a migration source frozen.
func (s *Server) allDone() bool {
	if !s.doneSeen {
		return false
	}
	for _, c := range s.conns {
		if (c.worked || c.doneAll) && (!c.doneAll || c.out.bytes > 0) {
			return false
		}
	}
	return true
}
