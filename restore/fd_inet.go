package restore

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/soccr"
)

// inetOpener restores TCP and UDP sockets (CRIU's inet_sk_entry): listeners, bound and connected UDP
// sockets, unconnected TCP sockets, and established or half-closed TCP connections (soccr, with
// Options.TCPEstablished).
//
// How the socket gets into the task: the task creates it (an injected socket()), and lazyr takes a copy
// of that descriptor with pidfd_getfd and does everything else on the copy, which is the same socket:
// bind, listen, connect, options, TCP repair. This needs no access from the task to lazyr (unlike the
// task pulling a socket out of lazyr with pidfd_getfd), no SCM_RIGHTS plumbing through injected
// recvmsg(), only the ptrace access lazyr has over its tracee anyway; and the socket belongs to the
// task's network namespace by construction. A connection stays in repair mode (copy kept open) until
// netRestore.unlock, right before the task runs.
type inetOpener struct{}

func init() { registerFdOpener(fdinfo.FdTypes_INETSK, inetOpener{}) }

func (inetOpener) open(rf *fileRestore, f *fdinfo.FileEntry) (uint64, error) {
	n := rf.opts.net
	if n == nil {
		return 0, errors.New("inet socket outside of restore.Run (no network state)")
	}
	s := n.socks[f.GetId()]
	if s == nil {
		var err error
		if s, err = parseInet(f.GetIsk()); err != nil {
			return 0, err
		}
	}
	tfd, err := rf.t.Syscall(unix.SYS_SOCKET, uint64(s.family), uint64(s.typ|unix.SOCK_CLOEXEC), uint64(s.proto))
	if err != nil {
		return 0, fmt.Errorf("%v: socket: %w", s, err)
	}
	c, err := n.getfd(rf.t.Pid, tfd)
	if err != nil {
		return 0, fmt.Errorf("%v: %w", s, err)
	}
	kept := false
	defer func() {
		if !kept {
			unix.Close(c)
		}
	}()
	if err := s.preBind(c); err != nil {
		return 0, fmt.Errorf("%v: %w", s, err)
	}
	if st := n.streams[f.GetId()]; st != nil {
		if err := soccr.RestoreInto(c, st); err != nil {
			return 0, fmt.Errorf("%v: %w", s, err)
		}
		n.keep(c, st, s.String())
		kept = true
	} else if err := s.rebuild(c); err != nil {
		return 0, fmt.Errorf("%v: %w", s, err)
	}
	if err := s.postBind(c, kept); err != nil {
		return 0, fmt.Errorf("%v: %w", s, err)
	}
	// The copy shares the task's open file description: its status flags are the task's.
	if fl := s.flags & (unix.O_NONBLOCK | unix.O_ASYNC); fl != 0 {
		if _, err := unix.FcntlInt(uintptr(c), unix.F_SETFL, int(fl)); err != nil {
			return 0, fmt.Errorf("%v: fcntl(F_SETFL): %w", s, err)
		}
	}
	return tfd, nil
}

// rebuild binds, listens or connects a socket that is not a TCP connection.
func (s *inetSock) rebuild(fd int) error {
	bound := s.local.Port() != 0
	if bound {
		// A listener shares its port with the connections it accepted, which may be rebuilt before it:
		// those are bound in repair mode (which forces reuse on their side), and SO_REUSEADDR lets the
		// listener bind next to them. postBind then puts the application's own value back.
		if s.typ == unix.SOCK_STREAM {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
				return fmt.Errorf("set SO_REUSEADDR: %w", err)
			}
		}
		sa, err := sockaddr(s.family, s.local)
		if err != nil {
			return err
		}
		if err := s.retryTimeWait(func() error { return unix.Bind(fd, sa) }); err != nil {
			return fmt.Errorf("bind %v: %w", s.local, err)
		}
	}
	switch {
	case s.typ == unix.SOCK_STREAM && s.state == soccr.StateListen:
		if err := s.retryTimeWait(func() error { return unix.Listen(fd, s.backlog) }); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	case s.typ == unix.SOCK_DGRAM && s.remote.IsValid():
		sa, err := sockaddr(s.family, s.remote)
		if err != nil {
			return err
		}
		// connect() on UDP only records the peer; nothing goes on the wire.
		if err := unix.Connect(fd, sa); err != nil {
			return fmt.Errorf("connect %v: %w", s.remote, err)
		}
	}
	return nil
}

func sockaddr(family int, ap netip.AddrPort) (unix.Sockaddr, error) {
	a := ap.Addr()
	if family == unix.AF_INET {
		if !a.Unmap().Is4() {
			return nil, fmt.Errorf("%w: address %v on an AF_INET socket", ErrBadImages, ap)
		}
		return &unix.SockaddrInet4{Addr: a.Unmap().As4(), Port: int(ap.Port())}, nil
	}
	sa := &unix.SockaddrInet6{Addr: a.As16(), Port: int(ap.Port())}
	if z := a.Zone(); z != "" {
		idx, err := zoneIndex(z)
		if err != nil {
			return nil, err
		}
		sa.ZoneId = idx
	}
	return sa, nil
}

// retryTimeWait runs a bind or listen of a TCP socket again after destroying the TIME_WAIT sockets on
// its address, if they made it fail (see fd_inet_timewait.go).
func (s *inetSock) retryTimeWait(call func() error) error {
	err := call()
	if !errors.Is(err, unix.EADDRINUSE) || s.typ != unix.SOCK_STREAM {
		return err
	}
	n, derr := destroyTimeWait(s.local)
	if derr != nil {
		return fmt.Errorf("%w (and clearing TIME_WAIT sockets failed: %v)", err, derr)
	}
	if n == 0 {
		return err // something else holds the address
	}
	return call()
}
