package netlock

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// enterNetns moves the calling test goroutine into a fresh network namespace with lo up, for the rest of
// the test. The goroutine stays locked to its thread and never unlocks: when the test ends the runtime
// terminates that thread instead of reusing it in the wrong namespace. Sockets must be created from this
// goroutine; once created they can be used anywhere.
func enterNetns(t testing.TB) {
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

// tcpPair connects a client to a server on addr and returns the listener, client and accepted server
// sockets; all are closed at the end of the test.
func tcpPair(t *testing.T, addr netip.Addr, setup func(cli int)) (lis, cli, srv int) {
	t.Helper()
	family := unix.AF_INET
	if addr.Is6() {
		family = unix.AF_INET6
	}
	sockaddr := func(ap netip.AddrPort) unix.Sockaddr {
		if family == unix.AF_INET {
			return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
		}
		return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
	}
	mk := func() int {
		fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("socket: %v", err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}
	lis = mk()
	if err := unix.Bind(lis, sockaddr(netip.AddrPortFrom(addr, 0))); err != nil {
		t.Fatalf("bind: %v", err)
	}
	if err := unix.Listen(lis, 4); err != nil {
		t.Fatalf("listen: %v", err)
	}
	cli = mk()
	if setup != nil {
		setup(cli)
	}
	if err := unix.Connect(cli, sockaddr(localAddr(t, lis))); err != nil {
		t.Fatalf("connect: %v", err)
	}
	srv, _, err := unix.Accept4(lis, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	t.Cleanup(func() { unix.Close(srv) })
	return lis, cli, srv
}

func toAddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}

func localAddr(t *testing.T, fd int) netip.AddrPort {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	return toAddrPort(sa)
}

func peerAddr(t *testing.T, fd int) netip.AddrPort {
	sa, err := unix.Getpeername(fd)
	if err != nil {
		t.Fatalf("getpeername: %v", err)
	}
	return toAddrPort(sa)
}

// recvWithin reads what arrives on fd within d (nil when nothing does).
func recvWithin(t *testing.T, fd int, d time.Duration) []byte {
	t.Helper()
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left < 0 {
			return nil
		}
		n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		if n == 0 {
			return nil
		}
		buf := make([]byte, 4096)
		n, _, err = unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		return buf[:n]
	}
}

func send(t *testing.T, fd int, b []byte) {
	t.Helper()
	if err := unix.Sendto(fd, b, unix.MSG_NOSIGNAL, nil); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// healthy fails the test if the socket saw an error (a reset) or left ESTABLISHED.
func healthy(t *testing.T, fd int, who string) {
	t.Helper()
	if e, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || e != 0 {
		t.Errorf("%s: SO_ERROR %v (%v)", who, unix.Errno(e), err)
	}
	ti, err := unix.GetsockoptTCPInfo(fd, unix.SOL_TCP, unix.TCP_INFO)
	if err != nil {
		t.Fatalf("%s: TCP_INFO: %v", who, err)
	}
	if ti.State != 1 {
		t.Errorf("%s: TCP state %d, want ESTABLISHED", who, ti.State)
	}
}

// bpfFDs lists this process's descriptors for BPF objects (maps, programs, links): a lock owns all of
// its kernel objects through such descriptors, so an unchanged list means nothing leaked.
func bpfFDs(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the descriptor of ReadDir itself is gone by now
		}
		if strings.HasPrefix(target, "anon_inode:bpf") {
			out = append(out, e.Name()+"="+target)
		}
	}
	return out
}

// snmp returns a counter of /proc/net/snmp for the calling thread's network namespace.
func snmp(t *testing.T, proto, name string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/thread-self/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i := 0; i+1 < len(lines); i++ {
		if !strings.HasPrefix(lines[i], proto+":") {
			continue
		}
		keys, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		for j, k := range keys {
			if k == name && j < len(vals) {
				var v int64
				for _, c := range vals[j] {
					v = v*10 + int64(c-'0')
				}
				return v
			}
		}
	}
	t.Fatalf("no %s %s in snmp", proto, name)
	return 0
}
