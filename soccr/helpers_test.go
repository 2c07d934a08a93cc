package soccr

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lazyr/lazyr/netlock"
	"golang.org/x/sys/unix"
)

const timeout = 10 * time.Second // generous: a restored connection's first retransmission waits a 1 s RTO

// enterNetns moves the calling test goroutine into a fresh network namespace with lo up, for the rest of
// the test. The goroutine stays locked to its thread and never unlocks: when the test ends the runtime
// terminates that thread instead of reusing it in the wrong namespace. Sockets (Restore's included) must
// be created from this goroutine; once created they can be used anywhere.
func enterNetns(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatalf("unshare(CLONE_NEWNET): %v", err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatalf("SIOCGIFFLAGS lo: %v", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatalf("SIOCSIFFLAGS lo: %v", err)
	}
}

var (
	lo4 = netip.MustParseAddr("127.0.0.1")
	lo6 = netip.IPv6Loopback()
)

type pair struct {
	lis, cli, srv int
}

// tcpPair connects a client to a server on addr. cliSetup runs on the client socket before connect.
// Descriptors are closed at the end of the test unless the test takes them over (closeFD).
func tcpPair(t *testing.T, addr netip.Addr, cliSetup func(fd int)) pair {
	t.Helper()
	family := unix.AF_INET
	if addr.Is6() {
		family = unix.AF_INET6
	}
	mk := func() int {
		fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("socket: %v", err)
		}
		track(t, fd)
		return fd
	}
	var p pair
	p.lis = mk()
	sa, err := sockaddrOf(family, netip.AddrPortFrom(addr, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(p.lis, sa); err != nil {
		t.Fatalf("bind: %v", err)
	}
	if err := unix.Listen(p.lis, 4); err != nil {
		t.Fatalf("listen: %v", err)
	}
	p.cli = mk()
	if cliSetup != nil {
		cliSetup(p.cli)
	}
	lsa, _ := unix.Getsockname(p.lis)
	if err := unix.Connect(p.cli, lsa); err != nil {
		t.Fatalf("connect: %v", err)
	}
	if p.srv, _, err = unix.Accept4(p.lis, unix.SOCK_CLOEXEC); err != nil {
		t.Fatalf("accept: %v", err)
	}
	track(t, p.srv)
	return p
}

var open = map[int]bool{}

// track closes fd at the end of the test unless closeFD closed it first.
func track(t *testing.T, fd int) {
	open[fd] = true
	t.Cleanup(func() {
		if open[fd] {
			delete(open, fd)
			unix.Close(fd)
		}
	})
}

func closeFD(t *testing.T, fd int) {
	t.Helper()
	delete(open, fd)
	if err := unix.Close(fd); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// stream is one direction of a connection: byte i of it is pattern(i), so a lost, duplicated or
// reordered byte anywhere shows up as a mismatch.
type stream struct {
	name       string
	sent, recv int
}

func pattern(i int) byte { return byte(i*7 + i>>9 + i>>17) }

func (s *stream) next(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = pattern(s.sent + i)
	}
	return b
}

// expect returns the n bytes the reader must see next.
func (s *stream) expect(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = pattern(s.recv + i)
	}
	return b
}

// write sends n more bytes of the stream, waiting for room up to the timeout.
func (s *stream) write(t *testing.T, fd, n int) {
	t.Helper()
	b := s.next(n)
	deadline := time.Now().Add(timeout)
	for len(b) > 0 {
		k, err := unix.SendmsgN(fd, b, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if errors.Is(err, unix.EAGAIN) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: write timed out with %d bytes left", s.name, len(b))
			}
			waitFD(t, fd, unix.POLLOUT, time.Until(deadline))
			continue
		}
		if err != nil {
			t.Fatalf("%s: write: %v", s.name, err)
		}
		b = b[k:]
		s.sent += k
	}
}

// writeSome sends up to n bytes without waiting and returns how many went into the socket.
func (s *stream) writeSome(t *testing.T, fd, n int) int {
	t.Helper()
	b := s.next(n)
	total := 0
	for len(b) > 0 {
		k, err := unix.SendmsgN(fd, b, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			t.Fatalf("%s: write: %v", s.name, err)
		}
		b, total, s.sent = b[k:], total+k, s.sent+k
	}
	return total
}

// read reads exactly n bytes and checks them against the stream.
func (s *stream) read(t *testing.T, fd, n int) {
	t.Helper()
	want := s.expect(n)
	got := make([]byte, 0, n)
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(timeout)
	for len(got) < n {
		k, _, err := unix.Recvfrom(fd, buf[:min(len(buf), n-len(got))], unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: read timed out after %d of %d bytes", s.name, len(got), n)
			}
			waitFD(t, fd, unix.POLLIN, time.Until(deadline))
			continue
		}
		if err != nil {
			t.Fatalf("%s: read after %d of %d bytes: %v", s.name, len(got), n, err)
		}
		if k == 0 {
			t.Fatalf("%s: EOF after %d of %d bytes", s.name, len(got), n)
		}
		got = append(got, buf[:k]...)
	}
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("%s: byte %d of the stream is %#x, want %#x", s.name, s.recv+i, got[i], want[i])
	}
	s.recv += n
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if i >= len(b) || a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

// readEOF expects end of stream, with no more data before it.
func readEOF(t *testing.T, fd int, who string) {
	t.Helper()
	buf := make([]byte, 16)
	deadline := time.Now().Add(timeout)
	for {
		k, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no EOF within %v", who, timeout)
			}
			waitFD(t, fd, unix.POLLIN, time.Until(deadline))
			continue
		}
		if err != nil {
			t.Fatalf("%s: read: %v", who, err)
		}
		if k != 0 {
			t.Fatalf("%s: %d unexpected bytes before EOF", who, k)
		}
		return
	}
}

// quiet checks that nothing arrives on fd for d: no new data, no FIN, no error.
func quiet(t *testing.T, fd int, d time.Duration, who string) {
	t.Helper()
	inq := ioctlInt(t, fd, unix.SIOCINQ)
	time.Sleep(d)
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	if _, err := unix.Poll(pfd, 0); err != nil && !errors.Is(err, unix.EINTR) {
		t.Fatal(err)
	}
	if pfd[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLRDHUP) != 0 {
		t.Fatalf("%s: unexpected event (revents %#x)", who, pfd[0].Revents)
	}
	if n := ioctlInt(t, fd, unix.SIOCINQ); n != inq {
		t.Fatalf("%s: %d bytes arrived", who, n-inq)
	}
	noError(t, fd, who)
}

func waitFD(t *testing.T, fd int, ev int16, d time.Duration) {
	t.Helper()
	if d <= 0 {
		return
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: ev}}
	if _, err := unix.Poll(pfd, int(d.Milliseconds())+1); err != nil && !errors.Is(err, unix.EINTR) {
		t.Fatalf("poll: %v", err)
	}
}

func tcpState(t *testing.T, fd int) int {
	t.Helper()
	ti, err := getTCPInfoHead(fd)
	if err != nil {
		t.Fatalf("TCP_INFO: %v", err)
	}
	return int(ti.State)
}

func waitState(t *testing.T, fd, want int, who string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := tcpState(t, fd)
		if st == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: TCP state %d, want %d", who, st, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ioctlInt(t *testing.T, fd int, req uint) int {
	t.Helper()
	v, err := unix.IoctlGetInt(fd, req)
	if err != nil {
		t.Fatalf("ioctl %#x: %v", req, err)
	}
	return v
}

// settle waits until fd's send queue stops changing: what is in flight on loopback has arrived.
func settle(t *testing.T, fd int) {
	t.Helper()
	last := -1
	for i := 0; i < 100; i++ {
		time.Sleep(20 * time.Millisecond)
		q := ioctlInt(t, fd, unix.SIOCOUTQ)<<20 | ioctlInt(t, fd, unix.SIOCOUTQNSD)
		if q == last {
			return
		}
		last = q
	}
}

// noError fails the test if the socket saw an error (a reset shows up here as ECONNRESET).
func noError(t *testing.T, fd int, who string) {
	t.Helper()
	if e, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || e != 0 {
		t.Errorf("%s: SO_ERROR %v (%v)", who, unix.Errno(e), err)
	}
}

// resets returns how many RST segments the network namespace has sent (/proc/net/snmp Tcp OutRsts, read
// for the calling thread's namespace). Both ends of the test connections live in the namespace, so any
// reset on the wire is counted. (EstabResets is no use: closing a socket in repair mode counts there
// although nothing is sent.)
func resets(t *testing.T) int64 {
	t.Helper()
	return snmp(t, "OutRsts")
}

func snmp(t *testing.T, name string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/thread-self/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i := 0; i+1 < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "Tcp:") {
			continue
		}
		keys, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		for j, k := range keys {
			if k == name && j < len(vals) {
				v, err := strconv.ParseInt(vals[j], 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
		}
	}
	t.Fatalf("no Tcp %s in snmp", name)
	return 0
}

func setInt(t *testing.T, fd, level, opt, v int) {
	t.Helper()
	if err := unix.SetsockoptInt(fd, level, opt, v); err != nil {
		t.Fatalf("setsockopt %d/%d: %v", level, opt, err)
	}
}

func getInt(t *testing.T, fd, level, opt int) int {
	t.Helper()
	v, err := unix.GetsockoptInt(fd, level, opt)
	if err != nil {
		t.Fatalf("getsockopt %d/%d: %v", level, opt, err)
	}
	return v
}

// lock holds off the connection's packets (both directions, on lo), as a checkpoint tool does between
// dump and restore: without it the peer's next ACK or window probe reaches a port with no socket (or
// with only the listener) and is answered with a reset. Forged segments (PacketMark) pass.
func lock(t *testing.T, fd int) *netlock.Lock {
	t.Helper()
	src, dst := localAddrPort(t, fd), peerAddrPort(t, fd)
	l, err := netlock.New(netlock.Options{
		Conns:      []netlock.Conn{{Local: src, Remote: dst}},
		Interfaces: []string{"lo"},
		PassMark:   PacketMark,
	})
	if err != nil {
		t.Fatalf("netlock: %v", err)
	}
	t.Cleanup(func() { l.Release() })
	return l
}

func release(t *testing.T, l *netlock.Lock) {
	t.Helper()
	if err := l.Release(); err != nil {
		t.Fatalf("netlock release: %v", err)
	}
}

func localAddrPort(t *testing.T, fd int) netip.AddrPort {
	t.Helper()
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	ap, err := addrPortOf(sa)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

func peerAddrPort(t *testing.T, fd int) netip.AddrPort {
	t.Helper()
	sa, err := unix.Getpeername(fd)
	if err != nil {
		t.Fatal(err)
	}
	ap, err := addrPortOf(sa)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}
