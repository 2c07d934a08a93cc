package netlock

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Loopback retransmissions start at the 200 ms minimum RTO and back off, so a released connection gets its
// dropped data within a few hundred milliseconds.
const (
	quiet    = 300 * time.Millisecond // long enough for loopback to deliver anything that is not dropped
	recovery = 5 * time.Second
)

func TestLockDropsAndReleases(t *testing.T) {
	for _, addr := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()} {
		t.Run(addr.String(), func(t *testing.T) {
			enterNetns(t)
			_, cli, srv := tcpPair(t, addr, nil)
			send(t, cli, []byte("hello"))
			if got := recvWithin(t, srv, recovery); string(got) != "hello" {
				t.Fatalf("before the lock: got %q", got)
			}
			before := bpfFDs(t)
			acked := bytesAcked(t, cli)
			rstBefore := snmp(t, "Tcp", "OutRsts")

			l, err := New(Options{Conns: []Conn{{Local: localAddr(t, srv), Remote: peerAddr(t, srv)}}})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			ids := objectIDs(t, l)

			send(t, cli, []byte("ping"))
			send(t, srv, []byte("pong"))
			if got := recvWithin(t, srv, quiet); got != nil {
				t.Fatalf("server received %q through the lock", got)
			}
			if got := recvWithin(t, cli, quiet); got != nil {
				t.Fatalf("client received %q through the lock", got)
			}
			// An egress drop is reported to the sending stack, which keeps the data queued as unsent;
			// either way the peer must not have acknowledged it.
			if a := bytesAcked(t, cli); a != acked {
				t.Errorf("client saw %d bytes acknowledged through the lock", a-acked)
			}
			n, err := l.Dropped()
			if err != nil || n == 0 {
				t.Errorf("Dropped() = %d, %v; want > 0", n, err)
			}

			if err := l.Release(); err != nil {
				t.Fatalf("Release: %v", err)
			}
			if err := l.Release(); err != nil {
				t.Errorf("second Release: %v", err)
			}
			if err := l.Add(Conn{Local: localAddr(t, srv), Remote: peerAddr(t, srv)}); !errors.Is(err, ErrReleased) {
				t.Errorf("Add after Release: %v, want ErrReleased", err)
			}
			if got := recvWithin(t, srv, recovery); string(got) != "ping" {
				t.Errorf("server after release: got %q, want ping", got)
			}
			if got := recvWithin(t, cli, recovery); string(got) != "pong" {
				t.Errorf("client after release: got %q, want pong", got)
			}
			healthy(t, cli, "client")
			healthy(t, srv, "server")
			if d := snmp(t, "Tcp", "OutRsts") - rstBefore; d != 0 {
				t.Errorf("%d resets sent", d)
			}
			if after := bpfFDs(t); !slices.Equal(before, after) {
				t.Errorf("BPF descriptors before New %v, after Release %v", before, after)
			}
			objectsGone(t, ids)
		})
	}
}

func bytesAcked(t *testing.T, fd int) uint64 {
	t.Helper()
	ti, err := unix.GetsockoptTCPInfo(fd, unix.SOL_TCP, unix.TCP_INFO)
	if err != nil {
		t.Fatal(err)
	}
	return ti.Bytes_acked
}

type ids struct {
	links []link.ID
	progs []ebpf.ProgramID
}

func objectIDs(t *testing.T, l *Lock) ids {
	t.Helper()
	var r ids
	for _, lk := range l.links {
		info, err := lk.Info()
		if err != nil {
			t.Fatalf("link info: %v", err)
		}
		r.links = append(r.links, info.ID)
	}
	for _, p := range l.progs {
		info, err := p.Info()
		if err != nil {
			t.Fatalf("program info: %v", err)
		}
		id, ok := info.ID()
		if !ok {
			t.Fatal("program info has no ID")
		}
		r.progs = append(r.progs, id)
	}
	if len(r.links) != 2 || len(r.progs) != 2 {
		t.Fatalf("lock on lo has %d links and %d programs, want 2 and 2", len(r.links), len(r.progs))
	}
	return r
}

// objectsGone checks through the kernel's ID tables that the lock's links and programs no longer exist.
// Freeing is deferred past an RCU grace period, hence the polling.
func objectsGone(t *testing.T, r ids) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for _, id := range r.links {
		for {
			lk, err := link.NewFromID(id)
			if errors.Is(err, os.ErrNotExist) {
				break
			}
			if err == nil {
				lk.Close()
			}
			if time.Now().After(deadline) {
				t.Errorf("link %d still exists after Release (%v)", id, err)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, id := range r.progs {
		for {
			p, err := ebpf.NewProgramFromID(id)
			if errors.Is(err, os.ErrNotExist) {
				break
			}
			if err == nil {
				p.Close()
			}
			if time.Now().After(deadline) {
				t.Errorf("program %d still exists after Release (%v)", id, err)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestLockLocalPort(t *testing.T) {
	enterNetns(t)
	lo := netip.MustParseAddr("127.0.0.1")
	_, cli, srv := tcpPair(t, lo, nil)
	_, cli2, srv2 := tcpPair(t, lo, nil)
	l, err := New(Options{LocalPorts: []uint16{localAddr(t, srv).Port()}, Interfaces: []string{"lo"}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer l.Release()

	send(t, cli, []byte("locked"))
	send(t, cli2, []byte("free"))
	if got := recvWithin(t, srv2, recovery); string(got) != "free" {
		t.Errorf("connection on another port: got %q, want free", got)
	}
	if got := recvWithin(t, srv, quiet); got != nil {
		t.Errorf("locked port received %q", got)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if got := recvWithin(t, srv, recovery); string(got) != "locked" {
		t.Errorf("after release: got %q, want locked", got)
	}
	healthy(t, cli, "client")
}

// Packets with the pass mark go through a locked connection: the client's marked data reaches the
// server, while the server's unmarked acknowledgements are dropped.
func TestLockPassMark(t *testing.T) {
	enterNetns(t)
	const mark = 0xC114
	_, cli, srv := tcpPair(t, netip.MustParseAddr("127.0.0.1"), func(cli int) {
		if err := unix.SetsockoptInt(cli, unix.SOL_SOCKET, unix.SO_MARK, mark); err != nil {
			t.Fatalf("SO_MARK: %v", err)
		}
	})
	l, err := New(Options{Conns: []Conn{{Local: localAddr(t, srv), Remote: peerAddr(t, srv)}}, PassMark: mark})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer l.Release()
	send(t, cli, []byte("marked"))
	if got := recvWithin(t, srv, recovery); string(got) != "marked" {
		t.Errorf("marked data: got %q", got)
	}
	send(t, srv, []byte("unmarked"))
	if got := recvWithin(t, cli, quiet); got != nil {
		t.Errorf("unmarked data passed: %q", got)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if got := recvWithin(t, cli, recovery); string(got) != "unmarked" {
		t.Errorf("after release: got %q", got)
	}
}

// A New that fails after attaching to some interfaces takes everything down again.
func TestNewFailureLeavesNothing(t *testing.T) {
	enterNetns(t)
	_, cli, srv := tcpPair(t, netip.MustParseAddr("127.0.0.1"), nil)
	before := bpfFDs(t)
	l, err := New(Options{
		Conns:      []Conn{{Local: localAddr(t, srv), Remote: peerAddr(t, srv)}},
		Interfaces: []string{"lo", "nosuchif0"},
	})
	if err == nil {
		l.Release()
		t.Fatal("New with a missing interface succeeded")
	}
	if after := bpfFDs(t); !slices.Equal(before, after) {
		t.Errorf("BPF descriptors before %v, after failed New %v", before, after)
	}
	// The program attached to lo before the failure must be gone: traffic flows.
	send(t, cli, []byte("through"))
	if got := recvWithin(t, srv, recovery); !bytes.Equal(got, []byte("through")) {
		t.Errorf("after failed New: got %q", got)
	}
}

func TestInvalidConn(t *testing.T) {
	enterNetns(t)
	_, err := New(Options{Conns: []Conn{{Local: netip.MustParseAddrPort("127.0.0.1:1"), Remote: netip.MustParseAddrPort("[::1]:2")}}})
	if err == nil {
		t.Fatal("mixed-family connection accepted")
	}
}

// Without the capabilities BPF needs, New fails with a typed error that keeps the errno. Capabilities
// are dropped in a child process, so that no feature probe result cached by cilium/ebpf in this process
// is computed without privileges.
func TestUnsupportedWithoutPrivilege(t *testing.T) {
	if os.Getenv("NETLOCK_TEST_NOCAPS") == "1" {
		runtime.LockOSThread()
		dropCaps(t)
		_, err := New(Options{Interfaces: []string{"lo"}})
		var ue *UnsupportedError
		if !errors.As(err, &ue) || !errors.Is(err, ErrNotSupported) || !errors.Is(err, unix.EPERM) {
			t.Fatalf("New without privileges: %v (%T); want *UnsupportedError wrapping EPERM", err, err)
		}
		t.Logf("error: %v", err)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestUnsupportedWithoutPrivilege$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "NETLOCK_TEST_NOCAPS=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("BPF not supported")) {
		t.Fatalf("child: %v\n%s", err, out)
	}
	t.Logf("child:\n%s", out)
}

// dropCaps removes CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF and CAP_PERFMON from the calling thread.
func dropCaps(t *testing.T) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Fatalf("capget: %v", err)
	}
	for _, c := range []uint{unix.CAP_NET_ADMIN, unix.CAP_SYS_ADMIN, unix.CAP_BPF, unix.CAP_PERFMON} {
		data[c/32].Effective &^= 1 << (c % 32)
		data[c/32].Permitted &^= 1 << (c % 32)
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		t.Fatalf("capset: %v", err)
	}
}

func TestProbe(t *testing.T) {
	enterNetns(t)
	before := bpfFDs(t)
	if err := Probe(); err != nil {
		t.Fatalf("Probe: %v", err)
	}
	if after := bpfFDs(t); !slices.Equal(before, after) {
		t.Errorf("BPF descriptors before %v, after Probe %v", before, after)
	}
}

// Connections can be added to and removed from a running lock.
func TestAddRemove(t *testing.T) {
	enterNetns(t)
	_, cli, srv := tcpPair(t, netip.MustParseAddr("127.0.0.1"), nil)
	l, err := New(Options{Interfaces: []string{"lo"}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer l.Release()
	send(t, cli, []byte("a"))
	if got := recvWithin(t, srv, recovery); string(got) != "a" {
		t.Fatalf("empty lock: got %q", got)
	}
	c := Conn{Local: localAddr(t, srv), Remote: peerAddr(t, srv)}
	if err := l.Add(c); err != nil {
		t.Fatal(err)
	}
	send(t, cli, []byte("b"))
	if got := recvWithin(t, srv, quiet); got != nil {
		t.Fatalf("added connection passed %q", got)
	}
	if err := l.Remove(c); err != nil {
		t.Fatal(err)
	}
	if got := recvWithin(t, srv, recovery); string(got) != "b" {
		t.Errorf("after Remove: got %q", got)
	}
	healthy(t, cli, "client")
}
