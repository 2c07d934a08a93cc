package restore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	sk_opts "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-opts"
	sk_packet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-packet"
	sk_unix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/images"
)

// Socket states of UnixSkEntry.state (the TCP state names) and CRIU's USK_EXTERN.
const (
	skEstablished = 1
	skClose       = 7
	skListen      = 10
)

// unixOpener recreates unix sockets inside the task: a connected pair of the process with socketpair(),
// a listener with socket()+bind()+listen(), a datagram socket connected to a named socket outside by
// connect(), an unconnected one with socket() (+bind()). Queued messages are written back from lazyr
// through a duplicate of the sending end (pidfd_getfd), or sent to the socket's name, before the
// shutdown state and the options are applied.
type unixOpener struct{}

func init() {
	registerFdOpener(fdinfo.FdTypes_UNIXSK, unixOpener{})
	registerFdFinisher(unixOpener{})
}

type unixState struct {
	loaded   bool
	byIno    map[uint32]*sk_unix.UnixSkEntry
	queues   map[uint32][][]byte // file id -> queued messages, oldest first
	pending  map[uint32]uint64   // socket inode -> its fd, created with its peer, not handed out yet
	connects []unixConnect       // one-way connections to sockets of the process, made in finish
}

// unixConnect is a datagram socket (file id) connected to a named socket of the process that is not
// connected back: it connects once every socket is there.
type unixConnect struct {
	id   uint32
	peer *sk_unix.UnixSkEntry
}

func (s *unixState) load(rf *fileRestore) error {
	s.loaded, s.byIno, s.queues, s.pending = true, map[uint32]*sk_unix.UnixSkEntry{}, map[uint32][][]byte{}, map[uint32]uint64{}
	for _, f := range rf.p.files {
		if e := f.GetUsk(); e != nil {
			s.byIno[e.GetIno()] = e
		}
	}
	entries, data, err := images.ReadRecords[sk_packet.SkPacketEntry](rf.p.dir, images.SkQueuesName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadImages, images.SkQueuesName, err)
	}
	for i, e := range entries {
		if len(e.GetScm()) > 0 {
			return fmt.Errorf("queued message with control data for socket %d: %w", e.GetIdFor(), ErrUnsupported)
		}
		s.queues[e.GetIdFor()] = append(s.queues[e.GetIdFor()], data[i])
	}
	return nil
}

func (unixOpener) open(rf *fileRestore, f *fdinfo.FileEntry) (uint64, error) {
	e := f.GetUsk()
	if e == nil {
		return 0, fmt.Errorf("%w: unix socket entry %d without its socket part", ErrBadImages, f.GetId())
	}
	s := kindState[unixState](rf, "unix")
	if !s.loaded {
		if err := s.load(rf); err != nil {
			return 0, err
		}
	}
	if fd, ok := s.pending[e.GetIno()]; ok {
		delete(s.pending, e.GetIno())
		return fd, nil
	}
	t := rf.t
	typ := uint64(e.GetType())
	switch typ {
	case unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET:
	default:
		return 0, fmt.Errorf("%w: unix socket of type %d", ErrBadImages, typ)
	}
	peer := s.byIno[e.GetPeer()]
	switch e.GetState() {
	case skEstablished:
		if typ == unix.SOCK_DGRAM {
			return openDgram(rf, s, f.GetId(), e, peer)
		}
		if e.GetPeer() == 0 || (peer != nil && peer.GetUflags()&images.UnixSkExtern == 0 && peer.GetPeer() == e.GetIno()) {
			return openPair(rf, s, f.GetId(), e, peer)
		}
		return 0, fmt.Errorf("%w: unix socket %d is connected to %d, which is not its peer in the images", ErrBadImages, e.GetIno(), e.GetPeer())
	case skListen:
		fd, err := newSocket(rf, e)
		if err != nil {
			return 0, err
		}
		if _, err := t.Syscall(unix.SYS_LISTEN, fd, uint64(e.GetBacklog())); err != nil {
			closeInTask(t, fd)
			return 0, fmt.Errorf("listen: %w", err)
		}
		return fd, finishSocket(rf, s, fd, f.GetId(), e)
	case skClose:
		fd, err := newSocket(rf, e)
		if err != nil {
			return 0, err
		}
		return fd, finishSocket(rf, s, fd, f.GetId(), e)
	}
	return 0, fmt.Errorf("unix socket %d in state %d: %w", e.GetIno(), e.GetState(), ErrUnsupported)
}

// openDgram recreates a connected datagram socket. A datagram socket shows as connected when it
// connect()ed and also when another one connected to it (Linux marks both), so a pair is made with
// socketpair() only when both ends are unnamed and connected to each other; a named socket is bound
// again (its peer, if any, connected by name later, in finish); an unnamed one whose peer is gone is
// made as a pair whose other end is closed once it has sent the queue.
func openDgram(rf *fileRestore, s *unixState, id uint32, e, peer *sk_unix.UnixSkEntry) (uint64, error) {
	named := len(e.GetName()) > 0
	switch {
	case e.GetPeer() == 0 && !named:
		return openPair(rf, s, id, e, nil)
	case e.GetPeer() == 0:
		fd, err := newSocket(rf, e)
		if err != nil {
			return 0, err
		}
		return fd, finishSocket(rf, s, fd, id, e)
	case peer == nil:
		return 0, fmt.Errorf("%w: unix socket %d is connected to %d, which is not in the images", ErrBadImages, e.GetIno(), e.GetPeer())
	case peer.GetUflags()&images.UnixSkExtern != 0:
		// Connected to a named socket outside the process.
		fd, err := newSocket(rf, e)
		if err != nil {
			return 0, err
		}
		if err := connectTo(rf, fd, peer); err != nil {
			closeInTask(rf.t, fd)
			return 0, err
		}
		return fd, finishSocket(rf, s, fd, id, e)
	case !named && len(peer.GetName()) == 0 && peer.GetPeer() == e.GetIno():
		return openPair(rf, s, id, e, peer)
	case len(peer.GetName()) == 0:
		return 0, fmt.Errorf("%w: unix socket %d is connected to the unnamed socket %d", ErrBadImages, e.GetIno(), peer.GetIno())
	}
	// Connected to a named socket of the process, which may not exist yet.
	if !named && len(s.queues[id]) > 0 {
		return 0, fmt.Errorf("queued data in unnamed socket %d connected one way to %q: %w", e.GetIno(), peer.GetName(), ErrUnsupported)
	}
	fd, err := newSocket(rf, e)
	if err != nil {
		return 0, err
	}
	s.connects = append(s.connects, unixConnect{id: id, peer: peer})
	return fd, finishSocket(rf, s, fd, id, e)
}

// openPair creates a connected pair for e and its peer (nil: the peer was closed, and only its queue
// and shutdown are left to restore).
func openPair(rf *fileRestore, s *unixState, id uint32, e, peer *sk_unix.UnixSkEntry) (uint64, error) {
	t := rf.t
	sv, err := fdPair(t, unix.SYS_SOCKETPAIR, 3, unix.AF_UNIX, uint64(e.GetType())|unix.SOCK_CLOEXEC, 0, 0)
	if err != nil {
		return 0, fmt.Errorf("socketpair: %w", err)
	}
	fd, other := sv[0], sv[1]
	fail := func(err error) (uint64, error) {
		closeInTask(t, fd)
		closeInTask(t, other)
		return 0, err
	}
	// Each end's queue is sent through the other end.
	if err := sendQueue(t.Pid, other, s.queues[id], e.GetType()); err != nil {
		return fail(fmt.Errorf("unix socket %d queue: %w", e.GetIno(), err))
	}
	if peer == nil {
		closeInTask(t, other)
		return fd, finishSocket(rf, s, fd, 0, e)
	}
	if err := sendQueue(t.Pid, fd, s.queues[peer.GetId()], peer.GetType()); err != nil {
		return fail(fmt.Errorf("unix socket %d queue: %w", peer.GetIno(), err))
	}
	if err := finishSocket(rf, s, other, 0, peer); err != nil {
		return fail(err)
	}
	if other, err = rf.parkHelper(other); err != nil {
		closeInTask(t, fd)
		return 0, err
	}
	s.pending[peer.GetIno()] = other
	return fd, finishSocket(rf, s, fd, 0, e)
}

// newSocket creates an unconnected socket of e's type and binds it to e's name, if it has one.
func newSocket(rf *fileRestore, e *sk_unix.UnixSkEntry) (uint64, error) {
	t := rf.t
	fd, err := t.Syscall(unix.SYS_SOCKET, unix.AF_UNIX, uint64(e.GetType())|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("socket: %w", err)
	}
	if len(e.GetName()) > 0 {
		if err := bindName(rf, fd, e); err != nil {
			closeInTask(t, fd)
			return 0, err
		}
	}
	return fd, nil
}

// unixPath is the file system path of a path-bound socket (its name made absolute with name_dir).
func unixPath(e *sk_unix.UnixSkEntry) string {
	name := string(e.GetName())
	if !filepath.IsAbs(name) && e.GetNameDir() != "" {
		return filepath.Join(e.GetNameDir(), name)
	}
	return name
}

// sockaddrUn builds a struct sockaddr_un for name.
func sockaddrUn(name []byte) ([]byte, error) {
	if len(name) > 108 {
		return nil, fmt.Errorf("%w: unix socket name of %d bytes", ErrBadImages, len(name))
	}
	b := make([]byte, 2+len(name))
	b[0] = unix.AF_UNIX
	copy(b[2:], name)
	return b, nil
}

// bindName binds the task's socket to e's name. A path name's old socket file, left behind by the dumped
// process, is removed first; a relative name is bound from its directory; a name that had been unlinked
// is unlinked again; the socket file gets its dumped permissions.
func bindName(rf *fileRestore, fd uint64, e *sk_unix.UnixSkEntry) error {
	t := rf.t
	name := e.GetName()
	abstract := name[0] == 0
	path := unixPath(e)
	if !abstract {
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
			if err := unix.Unlink(path); err != nil {
				return fmt.Errorf("remove stale socket file %s: %w", path, err)
			}
		}
		if dir := e.GetNameDir(); dir != "" && !filepath.IsAbs(string(name)) {
			addr, err := t.WriteScratch(0, append([]byte(dir), 0))
			if err != nil {
				return err
			}
			// The task's cwd is set for good later (restoreFS).
			if _, err := t.Syscall(unix.SYS_CHDIR, addr); err != nil {
				return fmt.Errorf("chdir %s to bind %s: %w", dir, name, err)
			}
		}
	}
	sa, err := sockaddrUn(name)
	if err != nil {
		return err
	}
	addr, err := t.WriteScratch(0, sa)
	if err != nil {
		return err
	}
	if _, err := t.Syscall(unix.SYS_BIND, fd, addr, uint64(len(sa))); err != nil {
		return fmt.Errorf("bind %q: %w", name, err)
	}
	if abstract {
		return nil
	}
	if e.GetDeleted() {
		if err := unix.Unlink(path); err != nil {
			return fmt.Errorf("unlink socket file %s again: %w", path, err)
		}
		return nil
	}
	if p := e.GetFilePerms(); p != nil {
		if err := os.Lchown(path, int(p.GetUid()), int(p.GetGid())); err != nil {
			return err
		}
		if err := unix.Fchmodat(unix.AT_FDCWD, path, p.GetMode()&0o7777, 0); err != nil {
			return fmt.Errorf("chmod %s: %w", path, err)
		}
	}
	return nil
}

// connectTo connects the task's socket to the (outside) socket peer names.
func connectTo(rf *fileRestore, fd uint64, peer *sk_unix.UnixSkEntry) error {
	name := peer.GetName()
	if len(name) > 0 && name[0] != 0 {
		name = []byte(unixPath(peer))
	}
	sa, err := sockaddrUn(name)
	if err != nil {
		return err
	}
	addr, err := rf.t.WriteScratch(0, sa)
	if err != nil {
		return err
	}
	if _, err := rf.t.Syscall(unix.SYS_CONNECT, fd, addr, uint64(len(sa))); err != nil {
		return fmt.Errorf("connect to %q: %w", name, err)
	}
	return nil
}

// finishSocket puts back the queue of an unpaired socket (id != 0; sent to its name), then its shutdown
// state, options and file status flags.
func finishSocket(rf *fileRestore, s *unixState, fd uint64, id uint32, e *sk_unix.UnixSkEntry) error {
	t := rf.t
	if msgs := s.queues[id]; id != 0 && len(msgs) > 0 {
		if err := sendToName(e, msgs); err != nil {
			return fmt.Errorf("unix socket %d queue: %w", e.GetIno(), err)
		}
	}
	c, err := taskDup(t.Pid, fd)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := applySockOpts(int(c.Fd()), e.GetOpts()); err != nil {
		return fmt.Errorf("unix socket %d: %w", e.GetIno(), err)
	}
	if how := e.GetShutdown(); how != sk_opts.SkShutdown_NONE {
		arg := map[sk_opts.SkShutdown]int{sk_opts.SkShutdown_READ: unix.SHUT_RD, sk_opts.SkShutdown_WRITE: unix.SHUT_WR, sk_opts.SkShutdown_BOTH: unix.SHUT_RDWR}[how]
		if err := unix.Shutdown(int(c.Fd()), arg); err != nil && !errors.Is(err, unix.ENOTCONN) {
			return fmt.Errorf("unix socket %d: shutdown: %w", e.GetIno(), err)
		}
	}
	return setStatusFlags(t, fd, e.GetFlags())
}

// applySockOpts sets the options the dump kept. Buffer sizes were read doubled (as getsockopt reports
// them); the *FORCE variants set them past the sysctl limits, which lazyr (root) may.
func applySockOpts(fd int, o *sk_opts.SkOptsEntry) error {
	if o == nil {
		return nil
	}
	if v := o.GetSoSndbuf(); v != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, int(v/2)); err != nil {
			return fmt.Errorf("SO_SNDBUFFORCE: %w", err)
		}
	}
	if v := o.GetSoRcvbuf(); v != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, int(v/2)); err != nil {
			return fmt.Errorf("SO_RCVBUFFORCE: %w", err)
		}
	}
	for _, tmo := range []struct {
		opt       int
		sec, usec uint64
	}{{unix.SO_SNDTIMEO, o.GetSoSndTmoSec(), o.GetSoSndTmoUsec()}, {unix.SO_RCVTIMEO, o.GetSoRcvTmoSec(), o.GetSoRcvTmoUsec()}} {
		if tmo.sec == 0 && tmo.usec == 0 {
			continue
		}
		tv := unix.Timeval{Sec: int64(tmo.sec), Usec: int64(tmo.usec)}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, tmo.opt, &tv); err != nil {
			return fmt.Errorf("socket timeout: %w", err)
		}
	}
	if o.GetSoPasscred() {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
			return fmt.Errorf("SO_PASSCRED: %w", err)
		}
	}
	return nil
}

// sendQueue writes queued messages through the task's socket sender, from lazyr, so they land in its
// peer's receive queue. The sender's buffer is made big enough for them first; the dumped size is set
// afterwards with the other options.
func sendQueue(pid int, sender uint64, msgs [][]byte, typ uint32) error {
	if len(msgs) == 0 {
		return nil
	}
	c, err := taskDup(pid, sender)
	if err != nil {
		return err
	}
	defer c.Close()
	fd := int(c.Fd())
	total := 0
	for _, m := range msgs {
		total += len(m)
	}
	// Twice the data plus slack covers the kernel's per-buffer overhead (truesize) for any split.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 2*total+2048*len(msgs)+64<<10); err != nil {
		return fmt.Errorf("SO_SNDBUFFORCE: %w", err)
	}
	for _, m := range msgs {
		for off := 0; ; {
			n, err := unix.SendmsgN(fd, m[off:], nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
			if err != nil {
				return fmt.Errorf("send %d bytes: %w", len(m)-off, err)
			}
			off += n
			if off >= len(m) || typ != unix.SOCK_STREAM {
				break
			}
		}
	}
	return nil
}

// sendToName sends queued messages to a named datagram socket from a socket of lazyr's own.
func sendToName(e *sk_unix.UnixSkEntry, msgs [][]byte) error {
	name := e.GetName()
	if len(name) == 0 || e.GetType() == unix.SOCK_STREAM {
		return fmt.Errorf("queued data in a socket that has neither a peer nor a name: %w", ErrUnsupported)
	}
	sa := &unix.SockaddrUnix{Name: unixPath(e)}
	if name[0] == 0 {
		sa.Name = "@" + string(name[1:])
	}
	fd, err := unix.Socket(unix.AF_UNIX, int(e.GetType())|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for _, m := range msgs {
		if err := unix.Sendto(fd, m, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, sa); err != nil {
			return fmt.Errorf("send %d bytes to %q: %w", len(m), name, err)
		}
	}
	return nil
}

// finish makes the one-way connections, through the fds at their dumped numbers.
func (unixOpener) finish(rf *fileRestore) error {
	s := kindState[unixState](rf, "unix")
	for _, c := range s.connects {
		fd := int64(-1)
		for _, d := range rf.p.fds {
			if d.GetId() == c.id {
				fd = int64(d.GetFd())
				break
			}
		}
		if fd < 0 {
			return fmt.Errorf("%w: unix socket file %d has no fd", ErrBadImages, c.id)
		}
		if err := connectTo(rf, uint64(fd), c.peer); err != nil {
			return err
		}
	}
	s.connects = nil
	return nil
}
