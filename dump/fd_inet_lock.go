package dump

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/procfs"
	"github.com/lazyr/lazyr/internal/sys"
	"github.com/lazyr/lazyr/netlock"
	"github.com/lazyr/lazyr/soccr"
)

// Network lock methods (Options.NetworkLock).
const (
	NetworkLockEBPF = "ebpf" // the default: package netlock drops the connections' packets
	NetworkLockSkip = "skip" // no lock (the caller keeps the peers away itself, see Notify)
)

// netlockRecordName is the file of an image directory naming the pinned lock that a dump left in force
// for the restore (restore/fd_inet_lock.go reads it). It is not a CRIU image: CRIU keeps its lock in
// iptables/nftables and records nothing.
const netlockRecordName = "netlock.pin"

// netlockPinBase is the directory of the BPF filesystem under which dumps pin their locks, one directory
// per image directory, named after its device and inode: the pin is found again from the images alone,
// and a second dump into the same directory replaces the first one's lock.
var netlockPinBase = filepath.Join(netlock.DefaultBPFFS, "lazyr")

func netlockPinDir(st *unix.Stat_t) string {
	return filepath.Join(netlockPinBase, fmt.Sprintf("netlock-%x-%x", st.Dev, st.Ino))
}

// netDump is the network side of one dump: the lock on the process's TCP connections (taken before the
// freeze), the sockets put in repair mode while frozen, and what is owed when the process is given back.
//
// Life cycle (dump.Run): lockNetwork before the freeze; the inet fd kind adds connections and repaired
// sockets while frozen; then either commit (the process is about to be killed: the lock is pinned for the
// restore) or giveBack (failure or LeaveRunning: lock opened, sockets out of repair mode, before the
// task runs again); close at the end in every case (it detaches a lock that was not pinned).
type netDump struct {
	pid      int // the root of the tree
	opts     *Options
	log      *zap.Logger
	pidfds   map[int]int   // pidfd of every process whose sockets were looked at
	lock     *netlock.Lock // nil: no eBPF lock (NetworkLock skip, or no connection to lock)
	notified bool          // Notify.NetworkLock succeeded, so NetworkUnlock is owed on give-back
	repaired []repairedSock
	pinDir   string // set when the images record a pin directory for commit
	done     bool   // committed or given back
}

// repairedSock is lazyr's copy of a task socket that the dump put in repair mode.
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

// lockNetwork looks at the process's TCP connections before it is frozen: it refuses established ones
// without TCPEstablished, tells Notify, and locks the connections with netlock in the process's network
// namespace. It stores itself in opts for the inet fd kind.
func lockNetwork(opts *Options, log *zap.Logger) (_ *netDump, err error) {
	method := opts.NetworkLock
	if method == "" {
		method = NetworkLockEBPF
	}
	if method != NetworkLockEBPF && method != NetworkLockSkip {
		return nil, fmt.Errorf("network lock method %q (want %s or %s): %w", opts.NetworkLock, NetworkLockEBPF, NetworkLockSkip, ErrUnsupported)
	}
	n := &netDump{pid: opts.Pid, opts: opts, log: log, pidfds: map[int]int{}}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	conns, err := n.scan()
	if err != nil {
		return nil, err
	}
	if err := opts.notify().NetworkLock(); err != nil {
		return nil, fmt.Errorf("network lock (Notify): %w", err)
	}
	n.notified = true
	if method == NetworkLockEBPF && len(conns) > 0 {
		err := inNetnsOf(opts.Pid, func() error {
			var err error
			n.lock, err = netlock.New(netlock.Options{Conns: conns, PassMark: soccr.PacketMark})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("network lock on %d connections (--network-lock skip dumps without it): %w", len(conns), err)
		}
		log.Debug("network locked", zap.Int("connections", len(conns)))
	}
	opts.net = n
	return n, nil
}

// scan finds the TCP connections of the running tree. The frozen dump looks again (a connection or a
// process may appear meanwhile): this early look only avoids freezing a tree whose dump would be refused,
// and gives the lock its connections before the freeze.
func (n *netDump) scan() ([]netlock.Conn, error) {
	var conns []netlock.Conn
	seen := map[netlock.Conn]bool{}
	for _, pid := range treePids(n.pid) {
		fds, err := procfs.ListFds(pid)
		if err != nil {
			if pid == n.pid {
				return nil, fmt.Errorf("list fds of %d: %w", pid, err)
			}
			continue // exited meanwhile
		}
		for _, fd := range fds {
			if !strings.HasPrefix(fd.Target, "socket:[") || !isInetSocket(pid, fd.Num) {
				continue
			}
			c, err := n.getfd(pid, fd.Num)
			if err != nil {
				continue // closed meanwhile; the frozen dump decides
			}
			s, err := inspectInet(c)
			unix.Close(c)
			if err != nil || !s.connected() {
				continue
			}
			if !n.opts.TCPEstablished {
				return nil, fmt.Errorf("process %d: fd %d (%s): %w", pid, fd.Num, fd.Target, refuseConnection(s))
			}
			if !seen[s.conn()] {
				seen[s.conn()] = true
				conns = append(conns, s.conn())
			}
		}
	}
	return conns, nil
}

// treePids lists root and its descendants as they are now (the tree still runs: a best effort).
func treePids(root int) []int {
	out := []int{}
	seen := map[int]bool{root: true}
	for queue := []int{root}; len(queue) > 0; {
		pid := queue[0]
		queue = queue[1:]
		out = append(out, pid)
		tids, err := procfs.Tasks(pid)
		if err != nil {
			continue
		}
		for _, tid := range tids {
			kids, _ := procfs.Children(pid, tid)
			for _, k := range kids {
				if !seen[k] {
					seen[k] = true
					queue = append(queue, k)
				}
			}
		}
	}
	return out
}

// refuseConnection is the error for a connection met without TCPEstablished; callers add the fd.
func refuseConnection(s *inetSock) error {
	return fmt.Errorf("%v: established TCP connections are dumped only with --tcp-established (Options.TCPEstablished): %w", s, ErrUnsupported)
}

// getfd returns lazyr's own descriptor for fd of process pid (pidfd_getfd): the same socket, so that
// socket options, TCP_REPAIR and reads act on the task's socket. The caller closes it.
func (n *netDump) getfd(pid, fd int) (int, error) {
	pidfd, ok := n.pidfds[pid]
	if !ok {
		var err error
		if pidfd, err = unix.PidfdOpen(pid, 0); err != nil {
			if errors.Is(err, unix.ESRCH) {
				return -1, fmt.Errorf("process %d: %w", pid, ErrNoProcess)
			}
			return -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
		}
		n.pidfds[pid] = pidfd
	}
	c, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_getfd %d of %d: %w", fd, pid, err)
	}
	return c, nil
}

// add locks one more connection found while the task is frozen.
func (n *netDump) add(s *inetSock) error {
	if n.lock == nil {
		return nil
	}
	if err := n.lock.Add(s.conn()); err != nil {
		return fmt.Errorf("network lock: %w", err)
	}
	return nil
}

// keep takes over a socket copy in repair mode; giveBack resumes it, close closes it.
func (n *netDump) keep(fd int, st *soccr.State, desc string) {
	n.repaired = append(n.repaired, repairedSock{fd: fd, st: st, desc: desc})
}

// writeRecord runs with the other images: it names the pin directory that commit will use, or removes a
// stale record when this dump leaves no lock behind.
func (n *netDump) writeRecord(d *images.Dir) error {
	path := filepath.Join(d.Path(), netlockRecordName)
	if n.lock == nil || n.opts.LeaveRunning {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale %s: %w", netlockRecordName, err)
		}
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(d.Path(), &st); err != nil {
		return fmt.Errorf("stat images dir: %w", err)
	}
	pinDir := netlockPinDir(&st)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", netlockRecordName, err)
	}
	_, err = f.WriteString(pinDir + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", netlockRecordName, err)
	}
	n.pinDir = pinDir
	return nil
}

// commit pins the lock where the images say, so that it outlives this process until the restore.
// Called right before the task is killed.
func (n *netDump) commit() error {
	if n.lock == nil || n.pinDir == "" {
		n.done = true
		return nil
	}
	if err := netlock.MountBPFFS(netlock.DefaultBPFFS); err != nil {
		return fmt.Errorf("network lock: %w", err)
	}
	if err := os.MkdirAll(netlockPinBase, 0o700); err != nil {
		return fmt.Errorf("network lock: %w", err)
	}
	// A lock left by an earlier dump into the same images directory: its images are being replaced, and
	// removing its pins releases it.
	if _, err := os.Stat(n.pinDir); err == nil {
		n.log.Warn("releasing the network lock of an earlier dump into the same images directory", zap.String("pin", n.pinDir))
		if err := os.RemoveAll(n.pinDir); err != nil {
			return fmt.Errorf("network lock: remove stale %s: %w", n.pinDir, err)
		}
	}
	if err := n.lock.Pin(n.pinDir); err != nil {
		return fmt.Errorf("network lock: %w", err)
	}
	n.done = true
	n.log.Debug("network lock pinned for the restore", zap.String("pin", n.pinDir))
	return nil
}

// giveBack undoes the network side before the task runs again (failure, or LeaveRunning): the lock opens
// first, so that the window probe each socket sends when it leaves repair mode reaches the peer and the
// connection picks up at once. Opening is a map clear; detaching the programs (tens of milliseconds) is
// left to close, after the task runs.
func (n *netDump) giveBack() error {
	if n == nil || n.done {
		return nil
	}
	n.done = true
	var errs []error
	if n.lock != nil {
		errs = append(errs, n.lock.Clear())
	}
	if n.notified {
		n.notified = false
		if err := n.opts.notify().NetworkUnlock(); err != nil {
			errs = append(errs, fmt.Errorf("network unlock (Notify): %w", err))
		}
	}
	for _, r := range n.repaired {
		if err := soccr.Resume(r.fd, r.st); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.desc, err))
		}
	}
	return errors.Join(errs...)
}

// close ends the network side: what was neither committed nor given back is given back, lazyr's socket
// copies are closed (a socket still in repair mode is torn down without a packet once the killed task's
// descriptor is gone too), and the lock handles are let go: a pinned lock stays in force, an unpinned one
// (given back) is released.
func (n *netDump) close() {
	if n == nil {
		return
	}
	if err := n.giveBack(); err != nil {
		n.log.Error("giving the network back", zap.Error(err))
	}
	for _, r := range n.repaired {
		unix.Close(r.fd)
	}
	n.repaired = nil
	if n.lock != nil {
		if err := n.lock.Close(); err != nil {
			n.log.Error("closing the network lock", zap.Error(err))
		}
		n.lock = nil
	}
	for pid, fd := range n.pidfds {
		unix.Close(fd)
		delete(n.pidfds, pid)
	}
}

// inNetnsOf runs fn in the network namespace of pid (sys.InNamespaceOf: a thread of its own that goes
// back to lazyr's namespace afterwards, so the main thread is never left in the tree's).
func inNetnsOf(pid int, fn func() error) error { return sys.InNamespaceOf(pid, "net", fn) }

// giveBackNetwork is giveBack on a failure path, where the dump's own error is what gets returned.
func giveBackNetwork(n *netDump, log *zap.Logger) {
	if err := n.giveBack(); err != nil {
		log.Error("giving the network back after a failed dump", zap.Error(err))
	}
}
