package dump

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	sk_opts "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-opts"
	sk_packet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-packet"
	sk_unix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
)

// images.UnixSkExtern marks a unix socket entry that no fd of the task refers to: the peer, outside the process,
// a datagram socket is connected to. Restore connects to its name. (CRIU's USK_EXTERN.)

// Socket states as sock_diag reports them (the TCP state names).
const (
	skEstablished = 1
	skClose       = 7
	skListen      = 10
)

// unixKind: unix sockets of every type. sock_diag gives the state, the name, the peer and the backlog;
// a duplicate of the socket (pidfd_getfd) gives the options and, peeked with SO_PEEK_OFF + MSG_PEEK so
// nothing is consumed, the queued messages, which go to sk-queues.img.
type unixKind struct{}

func init() { registerFdKind(unixKind{}) }

func (unixKind) handles(f *openFile) bool {
	if !strings.HasPrefix(f.Fd.Target, "socket:[") {
		return false
	}
	s, err := taskFile(f.Pid, f.Fd.Num)
	if err != nil {
		return false
	}
	defer s.Close()
	dom, err := unix.GetsockoptInt(int(s.Fd()), unix.SOL_SOCKET, unix.SO_DOMAIN)
	return err == nil && dom == unix.AF_UNIX
}

type unixState struct {
	byIno  map[uint32]*sk_unix.UnixSkEntry
	pids   map[uint32]int  // socket inode -> a process holding it
	icons  map[uint32]bool // connections waiting in a listener of the task
	queues []images.Record
}

func (unixKind) dump(ft *fileTable, f *openFile, id uint32) (*fdinfo.FileEntry, error) {
	st := kindState[unixState](ft, "unix")
	if st.byIno == nil {
		st.byIno, st.icons, st.pids = map[uint32]*sk_unix.UnixSkEntry{}, map[uint32]bool{}, map[uint32]int{}
	}
	ino := uint32(f.Stat.Ino)
	d, err := queryUnixDiag(ino)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("unix socket %d is not in lazyr's network namespace: %w", ino, ErrUnsupported)
		}
		return nil, err
	}
	s, err := taskFile(f.Pid, f.Fd.Num)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	e := &sk_unix.UnixSkEntry{
		Id: proto.Uint32(id), Ino: proto.Uint32(ino), Type: proto.Uint32(uint32(d.Type)), State: proto.Uint32(uint32(d.State)),
		Flags: proto.Uint32(f.Flags), Uflags: proto.Uint32(0), Backlog: proto.Uint32(0), Peer: proto.Uint32(d.Peer),
		Fown: zeroFown(), Name: unixName(d.Name), Shutdown: sk_opts.SkShutdown(d.Shutdown & 3).Enum(),
	}
	if e.Name == nil {
		e.Name = []byte{}
	}
	switch d.State {
	case skListen:
		e.Backlog = proto.Uint32(d.Wqueue)
		for _, c := range d.Icons {
			st.icons[c] = true
		}
	case skEstablished, skClose:
	default:
		return nil, fmt.Errorf("unix socket %d in state %d (connecting?): %w", ino, d.State, ErrUnsupported)
	}
	if e.Opts, err = socketOpts(int(s.Fd())); err != nil {
		return nil, err
	}
	if err := unixNameInfo(f.Pid, e, d); err != nil {
		return nil, err
	}
	if d.State != skListen {
		msgs, err := peekQueue(int(s.Fd()), d.Type == unix.SOCK_STREAM)
		if err != nil {
			return nil, fmt.Errorf("unix socket %d: queued data: %w", ino, err)
		}
		for _, m := range msgs {
			st.queues = append(st.queues, images.Record{
				Entry: &sk_packet.SkPacketEntry{IdFor: proto.Uint32(id), Length: proto.Uint32(uint32(len(m)))}, Payload: m,
			})
		}
	}
	st.byIno[ino], st.pids[ino] = e, f.Pid
	return &fdinfo.FileEntry{Type: fdinfo.FdTypes_UNIXSK.Enum(), Id: proto.Uint32(id), Usk: e}, nil
}

// unixName is a socket name as bind() takes it: sock_diag reports a path name with the NUL the kernel
// counted in when the program passed it; an abstract name (leading NUL) is kept as it is.
func unixName(b []byte) []byte {
	if len(b) > 0 && b[0] != 0 {
		if i := bytes.IndexByte(b, 0); i >= 0 {
			b = b[:i]
		}
	}
	return b
}

// unixNameInfo records what restore needs to bind the socket's name again: a relative name is resolved
// against the task's cwd (name_dir, the best guess lazyr has), a path name whose file is gone or
// replaced is marked deleted, and the socket file's permissions are kept.
func unixNameInfo(pid int, e *sk_unix.UnixSkEntry, d *unixDiag) error {
	if len(d.Name) == 0 || d.Name[0] == 0 {
		return nil // unbound or abstract
	}
	name := string(unixName(d.Name))
	path := name
	if !filepath.IsAbs(name) {
		cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if err != nil {
			return err
		}
		e.NameDir = proto.String(cwd)
		path = filepath.Join(cwd, name)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil || !d.HasVFS || uint32(st.Ino) != d.VFSIno || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		e.Deleted = proto.Bool(true)
		return nil
	}
	e.FilePerms = &sk_unix.FilePermsEntry{Mode: proto.Uint32(st.Mode), Uid: proto.Uint32(st.Uid), Gid: proto.Uint32(st.Gid)}
	return nil
}

// socketOpts reads the generic socket options CRIU keeps (buffer sizes as getsockopt reports them, i.e.
// doubled, and timeouts).
func socketOpts(fd int) (*sk_opts.SkOptsEntry, error) {
	get := func(opt int) (uint32, error) {
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
		if err != nil {
			return 0, fmt.Errorf("getsockopt %d: %w", opt, err)
		}
		return uint32(v), nil
	}
	o := &sk_opts.SkOptsEntry{}
	snd, err := get(unix.SO_SNDBUF)
	if err != nil {
		return nil, err
	}
	rcv, err := get(unix.SO_RCVBUF)
	if err != nil {
		return nil, err
	}
	pass, err := get(unix.SO_PASSCRED)
	if err != nil {
		return nil, err
	}
	o.SoSndbuf, o.SoRcvbuf, o.SoPasscred = proto.Uint32(snd), proto.Uint32(rcv), proto.Bool(pass != 0)
	for i, opt := range []int{unix.SO_SNDTIMEO, unix.SO_RCVTIMEO} {
		tv, err := unix.GetsockoptTimeval(fd, unix.SOL_SOCKET, opt)
		if err != nil {
			return nil, fmt.Errorf("getsockopt timeout: %w", err)
		}
		if i == 0 {
			o.SoSndTmoSec, o.SoSndTmoUsec = proto.Uint64(uint64(tv.Sec)), proto.Uint64(uint64(tv.Usec))
		} else {
			o.SoRcvTmoSec, o.SoRcvTmoUsec = proto.Uint64(uint64(tv.Sec)), proto.Uint64(uint64(tv.Usec))
		}
	}
	return o, nil
}

// peekQueue copies the socket's receive queue without consuming it: SO_PEEK_OFF makes each MSG_PEEK
// continue where the last one stopped. A stream queue comes back as one piece, a datagram or seqpacket
// queue as one piece per message. The socket's own peek offset is put back afterwards. Messages that
// carry file descriptors (SCM_RIGHTS) are refused: the peek would copy the fds into lazyr, and lazyr
// does not restore fds in flight.
func peekQueue(fd int, stream bool) (msgs [][]byte, err error) {
	old, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return nil, fmt.Errorf("get SO_PEEK_OFF: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return nil, fmt.Errorf("set SO_PEEK_OFF: %w", err)
	}
	defer func() {
		if rerr := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, old); rerr != nil && err == nil {
			err = fmt.Errorf("put SO_PEEK_OFF back: %w", rerr)
		}
	}()
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*253))
	var data []byte
	off := 0
	for {
		flags := unix.MSG_PEEK | unix.MSG_DONTWAIT
		if !stream {
			flags |= unix.MSG_TRUNC // returns the real length of a datagram larger than buf
		}
		n, oobn, rflags, _, err := unix.Recvmsg(fd, buf, oob, flags)
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("peek: %w", err)
		}
		if oobn > 0 {
			if err := refuseRights(oob[:oobn]); err != nil {
				return nil, err
			}
		}
		if rflags&unix.MSG_CTRUNC != 0 {
			return nil, fmt.Errorf("queued message with control data that does not fit: %w", ErrUnsupported)
		}
		if !stream && n > len(buf) {
			// Too big for buf: read this datagram again, whole.
			buf = make([]byte, n)
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, off); err != nil {
				return nil, fmt.Errorf("set SO_PEEK_OFF: %w", err)
			}
			continue
		}
		if n == 0 && stream {
			break
		}
		off += n
		if stream {
			data = append(data, buf[:n]...)
		} else {
			msgs = append(msgs, append([]byte{}, buf[:n]...))
		}
	}
	if len(data) > 0 {
		msgs = append(msgs, data)
	}
	return msgs, nil
}

// refuseRights closes fds a peek received and refuses them; credentials (SO_PASSCRED) are fine.
func refuseRights(oob []byte) error {
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return fmt.Errorf("control message: %w", err)
	}
	for _, c := range cmsgs {
		if c.Header.Level == unix.SOL_SOCKET && c.Header.Type == unix.SCM_RIGHTS {
			fds, _ := unix.ParseUnixRights(&c)
			for _, fd := range fds {
				unix.Close(fd)
			}
			return fmt.Errorf("queued message carries %d file descriptors (fds in flight): %w", len(fds), ErrUnsupported)
		}
	}
	return nil
}

// finish checks that every connection ends inside the task (or, for datagram sockets, at a named socket
// restore can connect to again) and queues the socket images.
func (unixKind) finish(ft *fileTable) error {
	st := kindState[unixState](ft, "unix")
	inos := make([]uint32, 0, len(st.byIno))
	for ino := range st.byIno {
		inos = append(inos, ino)
	}
	sort.Slice(inos, func(i, j int) bool { return inos[i] < inos[j] })
	for _, ino := range inos {
		e := st.byIno[ino]
		peer := e.GetPeer()
		if peer == 0 || st.byIno[peer] != nil {
			continue
		}
		if st.icons[peer] {
			return fmt.Errorf("unix socket %d is connected to a listener of the process that has not accepted it yet: %w", ino, ErrUnsupported)
		}
		d, err := queryUnixDiag(peer)
		if err != nil || len(d.Name) == 0 || e.GetType() == unix.SOCK_STREAM || e.GetType() == unix.SOCK_SEQPACKET {
			return fmt.Errorf("unix socket %d is connected to socket %d outside the dumped processes (external connections are not supported): %w", ino, peer, ErrUnsupported)
		}
		// A datagram socket connected to a named socket outside (a syslog socket, say): keep the peer's
		// name so that restore can connect to it again.
		pid := ft.id()
		pe := &sk_unix.UnixSkEntry{
			Id: proto.Uint32(pid), Ino: proto.Uint32(peer), Type: proto.Uint32(uint32(d.Type)), State: proto.Uint32(uint32(d.State)),
			Flags: proto.Uint32(0), Uflags: proto.Uint32(images.UnixSkExtern), Backlog: proto.Uint32(0), Peer: proto.Uint32(0),
			Fown: zeroFown(), Opts: &sk_opts.SkOptsEntry{SoSndbuf: proto.Uint32(0), SoRcvbuf: proto.Uint32(0),
				SoSndTmoSec: proto.Uint64(0), SoSndTmoUsec: proto.Uint64(0), SoRcvTmoSec: proto.Uint64(0), SoRcvTmoUsec: proto.Uint64(0)},
			Name: unixName(d.Name),
		}
		if err := unixNameInfo(st.pids[ino], pe, d); err != nil {
			return err
		}
		st.byIno[peer] = pe
		ft.entries = append(ft.entries, &fdinfo.FileEntry{Type: fdinfo.FdTypes_UNIXSK.Enum(), Id: proto.Uint32(pid), Usk: pe})
	}
	if len(st.queues) > 0 {
		recs := st.queues
		ft.addRawImage(func(d *images.Dir) error { return d.WriteRecords(images.SkQueuesName, recs...) })
	}
	return nil
}
