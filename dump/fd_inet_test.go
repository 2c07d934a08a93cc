package dump

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/netlock"
	"github.com/lazyr/lazyr/soccr"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, TCP repair, BPF")
	}
}

// enterNetns moves the test goroutine into a new network namespace with lo up; the thread stays locked
// and dies with the test. Processes started from the goroutine inherit the namespace.
func enterNetns(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatalf("unshare(CLONE_NEWNET): %v", err)
	}
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link set lo up: %v\n%s", err, out)
	}
}

func socket(t *testing.T, family, typ int) int {
	t.Helper()
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func port(t *testing.T, fd int) int {
	t.Helper()
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port
	case *unix.SockaddrInet6:
		return a.Port
	}
	t.Fatalf("address %T", sa)
	return 0
}

var lo4 = [4]byte{127, 0, 0, 1}

// tcpConn returns a listener (one connection accepted, one left in its accept queue) and the two ends
// of the accepted connection.
func tcpConn(t *testing.T) (lis, cli, srv int) {
	t.Helper()
	lis = socket(t, unix.AF_INET, unix.SOCK_STREAM)
	if err := unix.Bind(lis, &unix.SockaddrInet4{Addr: lo4}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(lis, 7); err != nil {
		t.Fatal(err)
	}
	cli = socket(t, unix.AF_INET, unix.SOCK_STREAM)
	if err := unix.Connect(cli, &unix.SockaddrInet4{Addr: lo4, Port: port(t, lis)}); err != nil {
		t.Fatal(err)
	}
	srv, _, err := unix.Accept4(lis, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(srv) })
	return lis, cli, srv
}

func TestInspectInet(t *testing.T) {
	requireRoot(t)
	enterNetns(t)
	lis, cli, srv := tcpConn(t)
	pending := socket(t, unix.AF_INET, unix.SOCK_STREAM) // waits in the accept queue
	if err := unix.Connect(pending, &unix.SockaddrInet4{Addr: lo4, Port: port(t, lis)}); err != nil {
		t.Fatal(err)
	}
	udp := socket(t, unix.AF_INET6, unix.SOCK_DGRAM)
	if err := unix.Bind(udp, &unix.SockaddrInet6{Addr: netip.IPv6Loopback().As16()}); err != nil {
		t.Fatal(err)
	}
	cudp := socket(t, unix.AF_INET, unix.SOCK_DGRAM)
	if err := unix.Connect(cudp, &unix.SockaddrInet4{Addr: lo4, Port: 9}); err != nil {
		t.Fatal(err)
	}
	fresh := socket(t, unix.AF_INET, unix.SOCK_STREAM)
	l4 := netip.AddrFrom4(lo4)
	for _, c := range []struct {
		fd   int
		want string
	}{
		{lis, fmt.Sprintf("TCP listener on 127.0.0.1:%d", port(t, lis))},
		{srv, fmt.Sprintf("TCP connection 127.0.0.1:%d -> 127.0.0.1:%d (ESTABLISHED)", port(t, lis), port(t, cli))},
		{udp, fmt.Sprintf("UDP socket bound to [::1]:%d", port(t, udp))},
		{cudp, fmt.Sprintf("UDP connection 127.0.0.1:%d -> 127.0.0.1:9 (connected)", port(t, cudp))},
		{fresh, "unbound TCP socket"},
	} {
		s, err := inspectInet(c.fd)
		if err != nil {
			t.Fatalf("inspect %q: %v", c.want, err)
		}
		if s.String() != c.want {
			t.Errorf("inspected %q, want %q", s, c.want)
		}
		if s.connected() != (c.fd == srv) {
			t.Errorf("%v: connected() = %v", s, s.connected())
		}
	}
	s, _ := inspectInet(lis)
	if s.backlog != 7 || s.acceptQueue != 1 {
		t.Errorf("listener backlog %d, accept queue %d; want 7 and 1", s.backlog, s.acceptQueue)
	}
	if s, _ := inspectInet(srv); s.conn().Local != netip.AddrPortFrom(l4, uint16(port(t, lis))) {
		t.Errorf("conn() = %v", s.conn())
	}
	pid := os.Getpid()
	for fd, want := range map[int]bool{lis: true, udp: true, cudp: true, socket(t, unix.AF_UNIX, unix.SOCK_STREAM): false} {
		if got := isInetSocket(pid, fd); got != want {
			t.Errorf("isInetSocket(fd %d) = %v, want %v", fd, got, want)
		}
	}
	icmp, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(icmp)
	if isInetSocket(pid, icmp) {
		t.Error("a raw socket is claimed as TCP/UDP")
	}
}

func TestAddrWords(t *testing.T) {
	// CRIU keeps the raw network-order bytes in uint32s: on a little-endian host 127.0.0.1 is 0x0100007f.
	if got := addrWords(unix.AF_INET, netip.MustParseAddr("127.0.0.1")); len(got) != 1 || got[0] != 0x0100007f {
		t.Errorf("127.0.0.1: %#x", got)
	}
	if got := addrWords(unix.AF_INET6, netip.IPv6Loopback()); len(got) != 4 || got[0] != 0 || got[3] != 0x01000000 {
		t.Errorf("::1: %#x", got)
	}
	if got := addrWords(unix.AF_INET6, netip.MustParseAddr("::ffff:10.1.2.3")); got[2] != 0xffff0000 || got[3] != 0x0302010a {
		t.Errorf("v4-mapped: %#x", got)
	}
	if got := addrWords(unix.AF_INET, netip.Addr{}); len(got) != 1 || got[0] != 0 {
		t.Errorf("no address: %#x", got)
	}
}

func TestSockOpts(t *testing.T) {
	requireRoot(t)
	enterNetns(t)
	fd := socket(t, unix.AF_INET, unix.SOCK_DGRAM)
	for _, o := range []struct{ level, opt, val int }{
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1}, {unix.SOL_SOCKET, unix.SO_RCVBUF, 40000},
		// IP_TOS sets the priority too: priority last, as an application would to get its own.
		{unix.SOL_IP, unix.IP_TOS, 0x10}, {unix.SOL_SOCKET, unix.SO_PRIORITY, 3}, {unix.SOL_SOCKET, unix.SO_MARK, 77},
		{unix.SOL_IP, unix.IP_TTL, 5}, {unix.SOL_IP, unix.IP_FREEBIND, 1},
	} {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.val); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 9}); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2, Usec: 500000}); err != nil {
		t.Fatal(err)
	}
	if err := unix.BindToDevice(fd, "lo"); err != nil {
		t.Fatal(err)
	}
	o, err := sockOpts(fd)
	if err != nil {
		t.Fatal(err)
	}
	if !o.GetSoKeepalive() || o.GetSoRcvbuf() != 80000 || o.GetSoPriority() != 3 || o.GetSoMark() != 77 ||
		o.GetSoLinger() != 9 || o.GetSoRcvTmoSec() != 2 || o.GetSoRcvTmoUsec() != 500000 || o.GetSoBoundDev() != "lo" ||
		o.GetSoBufLock()&2 == 0 || o.GetReuseaddr() {
		t.Errorf("sockOpts = %v", o)
	}
	ip, err := ipOpts(fd, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	if ip.GetTos() != 0x10 || ip.GetTtl() != 5 || !ip.GetFreebind() || ip.GetPktinfo() {
		t.Errorf("ipOpts = %v", ip)
	}
	// Defaults stay out of the image.
	plain := socket(t, unix.AF_INET6, unix.SOCK_STREAM)
	if ip, err := ipOpts(plain, unix.AF_INET6); err != nil || ip.Ttl != nil || ip.Tos != nil {
		t.Errorf("ipOpts of a fresh socket = %v, %v; want no TTL and no TOS", ip, err)
	}
	// A classic BPF filter cannot be restored: refused.
	filter := []unix.SockFilter{{Code: 0x06, K: 0xffff}} // ret #0xffff
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: 1, Filter: &filter[0]}); err != nil {
		t.Fatal(err)
	}
	if _, err := sockOpts(fd); !errors.Is(err, ErrUnsupported) {
		t.Errorf("socket with a filter: %v, want ErrUnsupported", err)
	}
}

type recordingNotify struct{ locks, unlocks int }

func (r *recordingNotify) NetworkLock() error   { r.locks++; return nil }
func (r *recordingNotify) NetworkUnlock() error { r.unlocks++; return nil }

func tcxCount(t *testing.T) int {
	t.Helper()
	n := 0
	for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		r, err := link.QueryPrograms(link.QueryOptions{Target: 1, Attach: at}) // lo
		if err != nil {
			t.Fatal(err)
		}
		n += len(r.Programs)
	}
	return n
}

// lockNetwork on a child (in a network namespace other than lazyr's) that holds an established
// connection: refused without TCPEstablished; with it, the lock lands on the child's lo and Notify is
// told; giveBack undoes both, and the connection still works.
func TestLockNetwork(t *testing.T) {
	requireRoot(t)
	enterNetns(t)
	_, cli, srv := tcpConn(t)
	child := exec.Command("sleep", "60")
	child.ExtraFiles = []*os.File{os.NewFile(uintptr(srv), "srv")} // the child's fd 3
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		child.Process.Kill()
		child.Wait()
	}()

	rec := &recordingNotify{}
	opts := &Options{Pid: child.Process.Pid, Notify: rec}
	_, err := lockNetwork(opts, zap.NewNop())
	re := regexp.MustCompile(fmt.Sprintf(`process %d: fd 3 \(socket:\[\d+\]\): TCP connection 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:%d \(ESTABLISHED\).*--tcp-established`, child.Process.Pid, port(t, cli)))
	if !errors.Is(err, ErrUnsupported) || !re.MatchString(err.Error()) {
		t.Errorf("without TCPEstablished: %v; want a refusal matching %s", err, re)
	}
	if rec.locks != 0 || tcxCount(t) != 0 {
		t.Errorf("refused: %d Notify locks, %d programs", rec.locks, tcxCount(t))
	}
	if _, err := lockNetwork(&Options{Pid: child.Process.Pid, NetworkLock: "nft"}, zap.NewNop()); !errors.Is(err, ErrUnsupported) {
		t.Errorf("unknown lock method: %v", err)
	}

	opts = &Options{Pid: child.Process.Pid, Notify: rec, TCPEstablished: true}
	n, err := lockNetwork(opts, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if opts.net != n || n.lock == nil || rec.locks != 1 {
		t.Fatalf("lock %v, Notify locks %d", n.lock, rec.locks)
	}
	if got := tcxCount(t); got != 2 {
		t.Errorf("%d programs on the child's lo, want 2", got)
	}
	// The frozen dump's part: the socket goes into repair mode and is kept.
	c, err := n.getfd(child.Process.Pid, 3)
	if err != nil {
		t.Fatal(err)
	}
	st, err := soccr.Dump(c)
	if err != nil {
		t.Fatal(err)
	}
	n.keep(c, st, "test connection")
	if err := n.giveBack(); err != nil {
		t.Fatal(err)
	}
	if inRepair, err := soccr.InRepair(srv); err != nil || inRepair {
		t.Errorf("socket still in repair mode after giveBack (%v)", err)
	}
	n.close()
	if got := tcxCount(t); got != 0 {
		t.Errorf("%d programs left after giveBack", got)
	}
	if rec.unlocks != 1 {
		t.Errorf("Notify unlocks %d, want 1", rec.unlocks)
	}
	if _, err := unix.Write(cli, []byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if n, err := unix.Read(srv, buf); err != nil || n != 1 {
		t.Errorf("connection after giveBack: %d, %v", n, err)
	}
}

// writeRecord names the pin directory after the images directory, and removes a stale record when the
// dump leaves no lock.
func TestWriteRecord(t *testing.T) {
	requireRoot(t)
	enterNetns(t)
	d, err := images.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	path := filepath.Join(d.Path(), netlockRecordName)
	if err := os.WriteFile(path, []byte("stale\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := &netDump{opts: &Options{}, log: zap.NewNop()}
	if err := n.writeRecord(d); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale record kept by a dump without a lock: %v", err)
	}
	if n.pinDir != "" {
		t.Errorf("pinDir %q without a lock", n.pinDir)
	}
	var st unix.Stat_t
	if err := unix.Stat(d.Path(), &st); err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(netlockPinBase, fmt.Sprintf("netlock-%x-%x", st.Dev, st.Ino))
	if got := netlockPinDir(&st); got != want || !strings.HasPrefix(got, "/sys/fs/bpf/lazyr/") {
		t.Errorf("netlockPinDir = %q, want %q", got, want)
	}
	l, err := netlock.New(netlock.Options{Interfaces: []string{"lo"}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	n.lock = l
	if err := n.writeRecord(d); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != want+"\n" || n.pinDir != want {
		t.Errorf("record %q (%v), pinDir %q; want %q", b, err, n.pinDir, want)
	}
	// A --leave-running dump releases its lock at the end: no record.
	n.opts.LeaveRunning = true
	if err := n.writeRecord(d); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record written by a --leave-running dump: %v", err)
	}
}

// inNetnsOf runs its function in the target's network namespace, on another thread when the caller is
// elsewhere, and leaves the caller where it was.
func TestInNetnsOf(t *testing.T) {
	requireRoot(t)
	nsIno := func(path string) uint64 {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	// A child in a network namespace of its own, started from a thread that made that namespace.
	type started struct {
		cmd *exec.Cmd
		err error
	}
	ch := make(chan started)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- started{err: err}
			return
		}
		cmd := exec.Command("sleep", "60")
		ch <- started{cmd, cmd.Start()}
	}()
	s := <-ch
	if s.err != nil {
		t.Fatal(s.err)
	}
	defer func() {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}()
	pid := s.cmd.Process.Pid
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := nsIno("/proc/thread-self/ns/net")
	want := nsIno(fmt.Sprintf("/proc/%d/ns/net", pid))
	if before == want {
		t.Fatal("test premise: the child shares the test's network namespace")
	}
	var got uint64
	if err := inNetnsOf(pid, func() error { got = nsIno("/proc/thread-self/ns/net"); return nil }); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("fn ran in namespace %d, want the child's %d", got, want)
	}
	if after := nsIno("/proc/thread-self/ns/net"); after != before {
		t.Errorf("the caller moved from namespace %d to %d", before, after)
	}
	// A process in the caller's namespace: fn runs right here, on the calling thread.
	same := exec.Command("sleep", "60")
	if err := same.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		same.Process.Kill()
		same.Wait()
	}()
	tid := unix.Gettid()
	var ranOn int
	if err := inNetnsOf(same.Process.Pid, func() error { ranOn = unix.Gettid(); return nil }); err != nil || ranOn != tid {
		t.Errorf("same namespace: ran on thread %d (%v), want the caller's %d", ranOn, err, tid)
	}
}
