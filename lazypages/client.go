package lazypages

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// SocketName is the daemon's socket in the work dir (never the images
// dir, which may be read-only or shared).
const SocketName = "lazy-pages.sock"

// SocketPath returns the daemon socket's path for workDir.
func SocketPath(workDir string) string { return filepath.Join(workDir, SocketName) }

// DefaultTimeout bounds how long a Client waits for an answer, so a wedged
// daemon fails a restore instead of hanging it.
const DefaultTimeout = 60 * time.Second

// Client is restore's end of the hand-off socket. Not safe for concurrent
// use.
type Client struct {
	fd  int
	buf []byte
	oob []byte
	// Timeout bounds each wait for the daemon's ack (DefaultTimeout).
	Timeout time.Duration
}

// Dial connects to the daemon serving workDir and checks that it speaks
// this protocol version. When no daemon listens the error wraps
// ErrNoDaemon.
func Dial(workDir string) (*Client, error) { return DialImages(workDir, nil) }

// DialImages is Dial for a restore of the dump imagesID identifies
// (images.DumpID; nil: unknown): a daemon that serves another dump's memory
// refuses the connection (ErrRefused), before any process is handed over.
func DialImages(workDir string, imagesID []byte) (*Client, error) {
	path := SocketPath(workDir)
	if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
		return nil, fmt.Errorf("lazy-pages socket path %q is too long for a unix socket: %w", path, unix.ENAMETOOLONG)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lazy-pages socket: %w", err)
	}
	for {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) {
			return nil, fmt.Errorf("%w at %s: %w", ErrNoDaemon, path, err)
		}
		return nil, fmt.Errorf("connect to lazy-pages daemon at %s: %w", path, err)
	}
	c := &Client{fd: fd, buf: make([]byte, maxMsgSize), oob: oobSpace(), Timeout: DefaultTimeout}
	if err := c.request(&message{Type: msgHello, ImagesID: imagesID}); err != nil {
		c.Close()
		return nil, fmt.Errorf("lazy-pages daemon at %s: %w", path, err)
	}
	return c, nil
}

// Register hands process pid to the daemon: uffd is a userfaultfd on which
// the caller has done the API handshake and registered ranges (each a
// whole lazy VMA) in missing mode; pidfd is a pidfd of pid, or -1 to let
// the daemon open one. The fds are sent over the socket and stay open in
// the caller, who should close them after Register returns. Register
// returns once the daemon holds the fds and is ready to serve faults: only
// then may the process run.
func (c *Client) Register(pid int, uffd int, pidfd int, ranges []Range) error {
	rs := slices.Clone(ranges)
	slices.SortFunc(rs, func(a, b Range) int {
		switch {
		case a.Start < b.Start:
			return -1
		case a.Start > b.Start:
			return 1
		}
		return 0
	})
	if err := checkRanges(rs); err != nil {
		return fmt.Errorf("register pid %d: %w", pid, err)
	}
	if pid <= 0 || uint64(len(rs)) > 1<<32-1 {
		return fmt.Errorf("register pid %d with %d ranges: %w", pid, len(rs), unix.EINVAL)
	}
	m := &message{Type: msgRegister, Pid: int32(pid), Total: uint32(len(rs))}
	fds := []int{uffd}
	if pidfd >= 0 {
		m.Flags |= flagHasPidfd
		fds = append(fds, pidfd)
	}
	first := min(len(rs), maxRangesPerMsg)
	m.Ranges = rs[:first]
	if err := sendMsg(c.fd, m, fds...); err != nil {
		return fmt.Errorf("register pid %d: %w", pid, err)
	}
	for rest := rs[first:]; len(rest) > 0; {
		n := min(len(rest), maxRangesPerMsg)
		if err := sendMsg(c.fd, &message{Type: msgRanges, Ranges: rest[:n]}); err != nil {
			return fmt.Errorf("register pid %d: %w", pid, err)
		}
		rest = rest[n:]
	}
	if err := c.waitAck(); err != nil {
		return fmt.Errorf("register pid %d: %w", pid, err)
	}
	return nil
}

// Done tells the daemon that no more processes will come in this restore:
// it exits once all registered processes have their memory or are gone.
func (c *Client) Done() error {
	if err := c.request(&message{Type: msgDone}); err != nil {
		return fmt.Errorf("lazy-pages done: %w", err)
	}
	return nil
}

// Close closes the connection. Closing before Done tells the daemon the
// restore failed: it kills the processes registered through this client.
func (c *Client) Close() error {
	if c.fd < 0 {
		return nil
	}
	err := unix.Close(c.fd)
	c.fd = -1
	if err != nil {
		return fmt.Errorf("close lazy-pages connection: %w", err)
	}
	return nil
}

func (c *Client) request(m *message) error {
	if err := sendMsg(c.fd, m); err != nil {
		return err
	}
	return c.waitAck()
}

func (c *Client) waitAck() error {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("no answer from the lazy-pages daemon within %v: %w", timeout, unix.ETIMEDOUT)
		}
		pfd := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
		if err == unix.EINTR || (err == nil && n == 0) {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait for lazy-pages daemon: %w", err)
		}
		break
	}
	m, fds, err := recvMsg(c.fd, c.buf, c.oob)
	if err != nil {
		if errors.Is(err, errPeerClosed) {
			return fmt.Errorf("lazy-pages daemon closed the connection: %w", err)
		}
		return err
	}
	closeAll(fds) // an ack carries none; recvMsg checked
	if m.Type != msgAck {
		return fmt.Errorf("%w: got %v, want ack", errProto, m.Type)
	}
	if m.Status != ackOK {
		return fmt.Errorf("%w: %s", ErrRefused, m.Text)
	}
	return nil
}
