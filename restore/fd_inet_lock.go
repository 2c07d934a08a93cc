package restore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/netlock"
	"github.com/lazyr/lazyr/soccr"
)

// Network lock methods (Options.NetworkLock), as for the dump.
const (
	NetworkLockEBPF = "ebpf"
	NetworkLockSkip = "skip"
)

// netlockRecordName is the file in which a dump names the lock it left pinned (dump/fd_inet_lock.go).
const netlockRecordName = "netlock.pin"

// netlockPinBase is where dumps pin their locks; a record naming anything else is refused, since the
// restore removes what the record names.
var netlockPinBase = filepath.Join(netlock.DefaultBPFFS, "lazyr")

var pinNameRe = regexp.MustCompile(`^netlock-[0-9a-f]{1,16}-[0-9a-f]{1,16}$`)

// pinDirFromRecord checks the content of a lock record (untrusted, from the images): one line naming a
// directory right under netlockPinBase, as a dump writes it.
func pinDirFromRecord(b []byte) (string, error) {
	s := strings.TrimSuffix(string(b), "\n")
	if filepath.Dir(s) != netlockPinBase || !pinNameRe.MatchString(filepath.Base(s)) {
		return "", fmt.Errorf("%w: %s does not name a lazyr lock pin (%.80q)", ErrBadImages, netlockRecordName, s)
	}
	return s, nil
}

// netRestore is the network side of one restore: the inet sockets of the images (checked before anything
// is created), the lock that keeps the peers away until the connections are back, and the rebuilt
// connections waiting in repair mode for the lock to go.
//
// Life cycle (restore.Run): prepareNetwork before anything is created; the inet fd opener rebuilds the
// sockets; unlock right before the task runs (lock released, then every connection leaves repair mode,
// which sends a window probe the peer answers at once); close at the end in every case (on failure it
// releases the lock too: the connections are lost then, and nothing must stay behind).
type netRestore struct {
	opts     *Options
	log      *zap.Logger
	socks    map[uint32]*inetSock    // by file id
	streams  map[uint32]*soccr.State // connections, by file id
	lock     *netlock.Lock
	notified bool
	pidfds   map[int]int // by pid: the restored processes whose sockets were created
	repaired []repairedSock
	unlocked bool
}

// repairedSock is lazyr's copy of a restored connection, in repair mode until unlock.
type repairedSock struct {
	fd   int
	st   *soccr.State
	desc string
}

func (o *Options) notify() Notify {
	if o.Notify == nil {
		return NoNotify{}
	}
	return o.Notify
}

// prepareNetwork checks the inet sockets of the images, reads the TCP streams, and takes over the lock:
// the one the dump left pinned, or (if there is none, as after a migration) a new one on the images'
// connections. It stores itself in opts for the inet fd opener.
func prepareNetwork(d *images.Dir, files map[uint32]*fdinfo.FileEntry, opts *Options, log *zap.Logger) (_ *netRestore, err error) {
	method := opts.NetworkLock
	if method == "" {
		method = NetworkLockEBPF
	}
	if method != NetworkLockEBPF && method != NetworkLockSkip {
		return nil, fmt.Errorf("network lock method %q (want %s or %s): %w", opts.NetworkLock, NetworkLockEBPF, NetworkLockSkip, ErrUnsupported)
	}
	n := &netRestore{opts: opts, log: log, socks: map[uint32]*inetSock{}, streams: map[uint32]*soccr.State{}, pidfds: map[int]int{}}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	var conns []netlock.Conn
	for id, f := range files {
		if f.GetType() != fdinfo.FdTypes_INETSK {
			continue
		}
		s, err := parseInet(f.GetIsk())
		if err != nil {
			return nil, err
		}
		n.socks[id] = s
		if !s.connected() {
			continue
		}
		if !opts.TCPEstablished {
			return nil, fmt.Errorf("the images hold an established %v: restore it with --tcp-established (Options.TCPEstablished): %w", s, ErrUnsupported)
		}
		st, err := readStream(d, s)
		if err != nil {
			return nil, err
		}
		n.streams[id] = st
		conns = append(conns, netlock.Conn{Local: s.local, Remote: s.remote})
	}
	if err := opts.notify().NetworkLock(); err != nil {
		return nil, fmt.Errorf("network lock (Notify): %w", err)
	}
	n.notified = true
	if err := n.takeLock(d, method, conns); err != nil {
		return nil, err
	}
	opts.net = n
	return n, nil
}

// readStream builds the soccr state of a connection from its tcp-stream image and its inet entry.
func readStream(d *images.Dir, s *inetSock) (*soccr.State, error) {
	e, inq, outq, err := d.ReadTCPStream(s.ino)
	if err != nil {
		return nil, fmt.Errorf("%w: %v: %w", ErrBadImages, s, err)
	}
	st := soccr.FromImage(e, inq, outq)
	o := s.entry.GetOpts()
	st.Family, st.Src, st.Dst, st.TCPState = s.family, s.local, s.remote, s.state
	st.ReuseAddr = o.GetReuseaddr()
	st.Keepalive = o.GetSoKeepalive()
	st.SndBuf, st.RcvBuf = int(o.GetSoSndbuf()), int(o.GetSoRcvbuf())
	if o.SoBufLock != nil {
		st.BufLock = int(o.GetSoBufLock() & 3)
	}
	st.V6Only = s.entry.GetV6Only()
	// Older CRIU images keep the keepalive timings in sk_opts; tcp_opts overrides them.
	st.KeepCnt, st.KeepIdle, st.KeepIntvl = int(o.GetTcpKeepcnt()), int(o.GetTcpKeepidle()), int(o.GetTcpKeepintvl())
	st.ApplyTCPOptsImage(s.entry.GetTcpOpts())
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v: %w", ErrBadImages, s, err)
	}
	return st, nil
}

// takeLock loads the lock the dump pinned (a record names it), or, when there is none and there are
// connections to protect, makes a new one. A pinned lock is taken over whatever the method: releasing it
// is cleanup, not locking.
func (n *netRestore) takeLock(d *images.Dir, method string, conns []netlock.Conn) error {
	b, err := os.ReadFile(filepath.Join(d.Path(), netlockRecordName))
	switch {
	case err == nil:
		dir, err := pinDirFromRecord(b)
		if err != nil {
			return err
		}
		l, err := netlock.LoadPinned(dir)
		if errors.Is(err, fs.ErrNotExist) {
			// Images copied to another host, or the lock already released (an earlier restore).
			n.log.Info("the network lock the dump left is gone", zap.String("pin", dir))
			break
		}
		if err != nil {
			return fmt.Errorf("network lock left by the dump: %w", err)
		}
		n.lock = l
		// The dump locked these already; entering them again costs nothing and covers any it missed.
		for _, c := range conns {
			if err := l.Add(c); err != nil {
				return fmt.Errorf("network lock: %w", err)
			}
		}
		n.log.Debug("network lock taken over from the dump", zap.String("pin", dir))
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("read %s: %w", netlockRecordName, err)
	}
	if method != NetworkLockEBPF || len(conns) == 0 {
		return nil
	}
	// The restored sockets are created in lazyr's network namespace (the task inherits it): lock there.
	l, err := netlock.New(netlock.Options{Conns: conns, PassMark: soccr.PacketMark})
	if err != nil {
		return fmt.Errorf("network lock on %d connections (--network-lock skip restores without it): %w", len(conns), err)
	}
	n.lock = l
	n.log.Debug("network locked", zap.Int("connections", len(conns)))
	return nil
}

// getfd returns lazyr's own descriptor for fd of the task pid (pidfd_getfd): the same socket, so that
// bind, connect and TCP repair on it act on the task's socket. The caller closes it.
func (n *netRestore) getfd(pid int, fd uint64) (int, error) {
	pidfd, ok := n.pidfds[pid]
	if !ok {
		var err error
		if pidfd, err = unix.PidfdOpen(pid, 0); err != nil {
			return -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
		}
		n.pidfds[pid] = pidfd
	}
	c, err := unix.PidfdGetfd(pidfd, int(fd), 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_getfd %d of %d: %w", fd, pid, err)
	}
	return c, nil
}

// keep takes over the copy of a connection left in repair mode.
func (n *netRestore) keep(fd int, st *soccr.State, desc string) {
	n.repaired = append(n.repaired, repairedSock{fd: fd, st: st, desc: desc})
}

// unlock opens the network right before the tasks run: the lock is cleared, then every restored
// connection leaves repair mode (its window probe then reaches the peer, which answers at once instead of
// at its next retransmission). Clearing is a few map deletions; the programs are detached by close, once
// the tasks run (detaching costs tens of milliseconds that would otherwise add to the downtime).
// Preconditions: every fd is restored; no task has resumed (a socket in repair mode fails the task's
// reads with EINVAL).
func (n *netRestore) unlock() error {
	if n == nil || n.unlocked {
		return nil
	}
	n.unlocked = true
	var errs []error
	if n.notified {
		n.notified = false
		if err := n.opts.notify().NetworkUnlock(); err != nil {
			errs = append(errs, fmt.Errorf("network unlock (Notify): %w", err))
		}
	}
	if n.lock != nil {
		if err := n.lock.Clear(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, r := range n.repaired {
		if err := soccr.Resume(r.fd, r.st); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.desc, err))
		}
		unix.Close(r.fd)
	}
	n.repaired = nil
	return errors.Join(errs...)
}

// close ends the network side of the restore: the lock is released (its programs detached, its pins
// removed). After a failure the connections are closed while still in repair mode (no packet to the
// peer): they are lost, and no BPF program may stay behind.
func (n *netRestore) close() {
	if n == nil {
		return
	}
	for _, r := range n.repaired {
		unix.Close(r.fd)
	}
	n.repaired = nil
	if n.lock != nil {
		if err := n.lock.Release(); err != nil {
			n.log.Error("releasing the network lock", zap.Error(err))
		}
		n.lock = nil
	}
	if n.notified {
		n.notified = false
		if err := n.opts.notify().NetworkUnlock(); err != nil {
			n.log.Error("network unlock (Notify)", zap.Error(err))
		}
	}
	for pid, fd := range n.pidfds {
		unix.Close(fd)
		delete(n.pidfds, pid)
	}
}
