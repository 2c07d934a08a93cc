package lazypages

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/lazyr/lazyr/internal/procfs"
	"github.com/lazyr/lazyr/uffd"
	"golang.org/x/sys/unix"
)

// conn is the daemon's side of one hand-off connection.
type conn struct {
	fd         int
	hello      bool
	reg        *pendingReg // a registration waiting for more ranges
	registered int         // processes registered through this connection
	sentDone   bool
}

type pendingReg struct {
	pid    int
	uffd   int
	pidfd  int
	total  int
	ranges []Range
}

func (r *pendingReg) closeFds() {
	if r.uffd >= 0 {
		unix.Close(r.uffd)
	}
	if r.pidfd >= 0 {
		unix.Close(r.pidfd)
	}
}

// listen binds WORKDIR/lazy-pages.sock. A leftover socket file from a dead
// daemon is replaced; a live daemon on it is an error.
func (d *daemon) listen() error {
	path := SocketPath(d.opts.WorkDir)
	if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
		return fmt.Errorf("lazy-pages socket path %q is too long for a unix socket: %w", path, unix.ENAMETOOLONG)
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := Dial(d.opts.WorkDir); err == nil {
			c.Close()
			return fmt.Errorf("lazy-pages: a daemon already listens on %s: %w", path, unix.EADDRINUSE)
		} else if !errors.Is(err, ErrNoDaemon) {
			return fmt.Errorf("lazy-pages: %s exists and answers oddly: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("lazy-pages: remove stale socket: %w", err)
		}
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("lazy-pages socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("lazy-pages: bind %s: %w", path, err)
	}
	d.listenFd, d.sockPath = fd, path
	// The socket takes file descriptors that drive other processes'
	// memory: only this user may connect (peers are checked as well).
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("lazy-pages: chmod %s: %w", path, err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		return fmt.Errorf("lazy-pages: listen on %s: %w", path, err)
	}
	return d.watchFd(fd, unix.EPOLLIN, &watch{kind: watchListen})
}

func (d *daemon) accept() {
	for {
		fd, _, err := unix.Accept4(d.listenFd, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if err == unix.EINTR || err == unix.ECONNABORTED {
			continue
		}
		if err != nil {
			// EAGAIN: nothing left. EMFILE and friends: the client sees
			// its connection refused or hang up; the daemon carries on.
			return
		}
		if cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED); err != nil ||
			(cred.Uid != 0 && int(cred.Uid) != os.Geteuid()) {
			unix.Close(fd)
			continue
		}
		c := &conn{fd: fd}
		if err := d.watchFd(fd, unix.EPOLLIN, &watch{kind: watchConn, conn: c}); err != nil {
			unix.Close(fd)
			continue
		}
		d.conns[fd] = c
	}
}

func (d *daemon) connReady(c *conn) {
	for d.fatal == nil {
		m, fds, err := recvMsg(c.fd, d.rbuf, d.oob)
		if err == unix.EAGAIN {
			return
		}
		if err != nil {
			if !errors.Is(err, errPeerClosed) {
				d.ack(c, err)
			}
			d.closeConn(c)
			return
		}
		if err := d.handle(c, m, fds); err != nil {
			d.ack(c, err)
			d.closeConn(c)
			return
		}
	}
}

// handle processes one client message. A returned error is sent back and
// ends the connection; a refused registration is answered but keeps it.
func (d *daemon) handle(c *conn, m *message, fds []int) error {
	if m.Type != msgHello && !c.hello {
		closeAll(fds)
		return fmt.Errorf("%w: %v before hello", errProto, m.Type)
	}
	switch m.Type {
	case msgHello:
		if c.hello {
			return fmt.Errorf("%w: second hello", errProto)
		}
		if len(m.ImagesID) > 0 && d.imagesID != nil && !bytes.Equal(m.ImagesID, d.imagesID) {
			// The processes would run on another dump's memory.
			return fmt.Errorf("this daemon serves the memory of another dump (%s): restore the images "+
				"it was started with, or start a daemon for these", d.opts.ImagesDir)
		}
		c.hello = true
		d.ack(c, nil)
	case msgRegister:
		if c.reg != nil || c.sentDone {
			closeAll(fds)
			return fmt.Errorf("%w: register while another registration is open or after done", errProto)
		}
		r := &pendingReg{pid: int(m.Pid), uffd: fds[0], pidfd: -1, total: int(m.Total), ranges: m.Ranges}
		if len(fds) == 2 {
			r.pidfd = fds[1]
		}
		c.reg = r
		d.maybeRegister(c)
	case msgRanges:
		if c.reg == nil {
			return fmt.Errorf("%w: ranges without register", errProto)
		}
		if len(c.reg.ranges)+len(m.Ranges) > c.reg.total {
			return fmt.Errorf("%w: more ranges than announced (%d)", errProto, c.reg.total)
		}
		c.reg.ranges = append(c.reg.ranges, m.Ranges...)
		d.maybeRegister(c)
	case msgDone:
		if c.reg != nil {
			return fmt.Errorf("%w: done in the middle of a registration", errProto)
		}
		c.sentDone = true
		d.done = true
		d.ack(c, nil)
		d.setRestoring()
	default:
		closeAll(fds)
		return fmt.Errorf("%w: unexpected %v from a client", errProto, m.Type)
	}
	return nil
}

func (d *daemon) maybeRegister(c *conn) {
	r := c.reg
	if len(r.ranges) < r.total {
		return
	}
	c.reg = nil
	if err := d.register(c, r); err != nil {
		r.closeFds()
		d.ack(c, err)
		return
	}
	d.ack(c, nil)
}

// register turns a complete registration into a live process.
func (d *daemon) register(c *conn, r *pendingReg) error {
	if err := checkRanges(r.ranges); err != nil {
		return err
	}
	u := uffd.FromFd(r.uffd)
	features, initialized, err := u.Enabled()
	if err != nil {
		return fmt.Errorf("pid %d: the fd sent as userfaultfd: %w", r.pid, err)
	}
	if !initialized {
		return fmt.Errorf("pid %d: userfaultfd without the UFFDIO_API handshake", r.pid)
	}
	if missing := requiredFeatures &^ features; missing != 0 {
		return fmt.Errorf("pid %d: userfaultfd lacks features %s", r.pid, uffd.FeatureNames(missing))
	}
	if err := u.SetNonblock(true); err != nil {
		return err
	}
	if r.pidfd < 0 {
		if r.pidfd, err = unix.PidfdOpen(r.pid, 0); err != nil {
			return fmt.Errorf("pidfd_open(%d): %w", r.pid, err)
		}
	}
	// pid names the dumped process (the page source's key); /proc and
	// the children search need the pid as this process sees it.
	hostPid, err := pidOfPidfd(r.pidfd)
	if err != nil {
		return fmt.Errorf("pid %d: the fd sent as pidfd: %w", r.pid, err)
	}
	if hostPid <= 0 {
		return fmt.Errorf("pid %d exited before it was handed over: %w", r.pid, unix.ESRCH)
	}
	extents, err := d.src.Extents(r.pid)
	if err != nil {
		return fmt.Errorf("pid %d: page source: %w", r.pid, err)
	}
	if d.pidTaken(hostPid) {
		return fmt.Errorf("pid %d is already registered", r.pid)
	}
	p := &process{
		id: d.newID(), pid: hostPid, srcPid: r.pid, u: u, pidfd: r.pidfd, conn: c,
		lazy: newLazySet(r.ranges, extents), knownChildren: map[int]bool{},
	}
	// Any user address above vm.mmap_min_addr will do for probes.
	p.probeAddr = 1 << 20
	if len(r.ranges) > 0 {
		p.probeAddr = r.ranges[0].Start
		p.cursor = r.ranges[0].Start
	}
	// Children that exist now are not forks the daemon has to match.
	for _, pid := range childrenOf(hostPid) {
		p.knownChildren[pid] = true
	}
	// From here on the process owns the fds.
	r.uffd, r.pidfd = -1, -1
	// The quiet period runs from here: a process that just started
	// usually faults in a burst, and those faults go first. (Before
	// addProcess: workers may take the process at once.)
	d.lastFault.Store(time.Now().UnixNano())
	// Counted before workers can see the process: while this restore
	// runs, one worker only.
	c.registered++
	d.setRestoring()
	if err := d.addProcess(p); err != nil {
		return err
	}
	d.stats.Processes++
	if d.firstReg.IsZero() {
		d.firstReg = time.Now()
	}
	d.checkComplete(p)
	return nil
}

func (d *daemon) newID() uint64 {
	d.nextID++
	return d.nextID
}

// ack answers the client; err == nil is success.
func (d *daemon) ack(c *conn, err error) {
	m := &message{Type: msgAck, Status: ackOK}
	if err != nil {
		m.Status = ackError
		m.Text = err.Error()
	}
	sendMsg(c.fd, m) // a client that is gone is handled by its hangup
}

// closeConn ends a connection. One that registered processes and goes away
// without Done means the restore failed: its processes must not run on.
func (d *daemon) closeConn(c *conn) {
	aborted := !c.sentDone && (c.registered > 0 || c.reg != nil)
	d.dropConn(c)
	if aborted {
		d.fail(fmt.Errorf("lazy-pages: %w (%d processes registered)", ErrAborted, c.registered))
	}
}

func (d *daemon) dropConn(c *conn) {
	if c.reg != nil {
		c.reg.closeFds()
	}
	d.unwatchFd(c.fd)
	unix.Close(c.fd)
	delete(d.conns, c.fd)
	d.setRestoring()
}

// childrenOf lists the children of every thread of pid.
func childrenOf(pid int) []int {
	tids, err := procfs.Tasks(pid)
	if err != nil {
		return nil
	}
	var out []int
	for _, tid := range tids {
		kids, err := procfs.Children(pid, tid)
		if err != nil {
			continue
		}
		out = append(out, kids...)
	}
	return out
}
