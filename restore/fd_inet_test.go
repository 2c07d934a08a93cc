package restore

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	sk_inet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	sk_opts "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-opts"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/netlock"
	"github.com/lazyr/lazyr/soccr"
)

// enterNetns moves the test goroutine into a new network namespace with lo up; the thread stays locked
// and dies with the test.
func enterNetns(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatalf("unshare(CLONE_NEWNET): %v", err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, TCP repair and BPF")
	}
}

// words is addrWords of the dump side, written out for the test: the raw bytes as host-order words.
func words(a netip.Addr) []uint32 {
	var b []byte
	if a.Is4() {
		v := a.As4()
		b = v[:]
	} else {
		v := a.As16()
		b = v[:]
	}
	w := make([]uint32, len(b)/4)
	for i := range w {
		w[i] = uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24
	}
	return w
}

func connEntry(id, ino uint32) *sk_inet.InetSkEntry {
	lo := netip.MustParseAddr("127.0.0.1")
	return &sk_inet.InetSkEntry{
		Id: proto.Uint32(id), Ino: proto.Uint32(ino), Family: proto.Uint32(unix.AF_INET),
		Type: proto.Uint32(unix.SOCK_STREAM), Proto: proto.Uint32(unix.IPPROTO_TCP), State: proto.Uint32(soccr.StateEstablished),
		SrcPort: proto.Uint32(5000), DstPort: proto.Uint32(40000), Flags: proto.Uint32(unix.O_RDWR), Backlog: proto.Uint32(0),
		SrcAddr: words(lo), DstAddr: words(lo),
		Opts: &sk_opts.SkOptsEntry{SoSndbuf: proto.Uint32(87040), SoRcvbuf: proto.Uint32(131072),
			SoSndTmoSec: proto.Uint64(0), SoSndTmoUsec: proto.Uint64(0), SoRcvTmoSec: proto.Uint64(0), SoRcvTmoUsec: proto.Uint64(0)},
		TcpOpts: &tcp_stream.TcpOptsEntry{Nodelay: proto.Bool(true)},
	}
}

func TestParseInet(t *testing.T) {
	e := connEntry(1, 77)
	s, err := parseInet(e)
	if err != nil {
		t.Fatal(err)
	}
	want := "TCP connection 127.0.0.1:5000 -> 127.0.0.1:40000"
	if !s.connected() || s.String() != want {
		t.Errorf("parsed %q (connected %v), want %q", s, s.connected(), want)
	}
	v6 := proto.Clone(e).(*sk_inet.InetSkEntry)
	v6.Family = proto.Uint32(unix.AF_INET6)
	v6.SrcAddr, v6.DstAddr = words(netip.IPv6Loopback()), words(netip.MustParseAddr("::ffff:127.0.0.1"))
	if _, err := parseInet(v6); !errors.Is(err, ErrBadImages) {
		t.Errorf("mixed IPv6/v4-mapped connection: %v, want ErrBadImages", err)
	}
	v6.DstAddr = words(netip.IPv6Loopback())
	if s, err := parseInet(v6); err != nil || s.local.Addr() != netip.IPv6Loopback() {
		t.Errorf("IPv6 connection: %v, %v", s, err)
	}
	for name, mod := range map[string]func(e *sk_inet.InetSkEntry){
		"family":       func(e *sk_inet.InetSkEntry) { e.Family = proto.Uint32(unix.AF_UNIX) },
		"address size": func(e *sk_inet.InetSkEntry) { e.SrcAddr = []uint32{1, 2} },
		"no peer port": func(e *sk_inet.InetSkEntry) { e.DstPort = proto.Uint32(0) },
		"port":         func(e *sk_inet.InetSkEntry) { e.SrcPort = proto.Uint32(70000) },
		"TCP state":    func(e *sk_inet.InetSkEntry) { e.State = proto.Uint32(soccr.StateTimeWait) },
		"UDP state": func(e *sk_inet.InetSkEntry) {
			e.Type = proto.Uint32(unix.SOCK_DGRAM)
			e.Proto = proto.Uint32(0)
			e.State = proto.Uint32(10)
		},
		"no options": func(e *sk_inet.InetSkEntry) { e.Opts = nil },
		"backlog": func(e *sk_inet.InetSkEntry) {
			e.State = proto.Uint32(soccr.StateListen)
			e.Backlog = proto.Uint32(1 << 30)
		},
	} {
		b := proto.Clone(e).(*sk_inet.InetSkEntry)
		mod(b)
		if _, err := parseInet(b); !errors.Is(err, ErrBadImages) {
			t.Errorf("%s: %v, want ErrBadImages", name, err)
		}
	}
	raw := proto.Clone(e).(*sk_inet.InetSkEntry)
	raw.Type = proto.Uint32(unix.SOCK_RAW)
	if _, err := parseInet(raw); !errors.Is(err, ErrUnsupported) {
		t.Errorf("raw socket: %v, want ErrUnsupported", err)
	}
}

func FuzzParseInet(f *testing.F) {
	for _, e := range []*sk_inet.InetSkEntry{connEntry(1, 2)} {
		b, _ := proto.Marshal(e)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e := &sk_inet.InetSkEntry{}
		if proto.Unmarshal(b, e) != nil {
			return
		}
		s, err := parseInet(e)
		if err != nil {
			if !errors.Is(err, ErrBadImages) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error %v wraps neither ErrBadImages nor ErrUnsupported", err)
			}
			return
		}
		if s.family != unix.AF_INET && s.family != unix.AF_INET6 {
			t.Fatalf("accepted family %d", s.family)
		}
		if s.family == unix.AF_INET && !s.local.Addr().Is4() {
			t.Fatalf("AF_INET socket with address %v", s.local)
		}
		if s.connected() && (!s.remote.IsValid() || s.remote.Port() == 0 || s.local.Port() == 0) {
			t.Fatalf("connection without both ends: %v -> %v", s.local, s.remote)
		}
		_ = s.String()
		if sa, err := sockaddr(s.family, s.local); err == nil && sa == nil {
			t.Fatal("sockaddr returned nothing")
		}
	})
}

func TestPinDirFromRecord(t *testing.T) {
	good := filepath.Join(netlockPinBase, "netlock-2a-1f03") + "\n"
	if d, err := pinDirFromRecord([]byte(good)); err != nil || d+"\n" != good {
		t.Errorf("pinDirFromRecord(%q) = %q, %v", good, d, err)
	}
	for _, bad := range []string{"", "/etc/passwd", netlockPinBase, filepath.Join(netlockPinBase, "x"),
		filepath.Join(netlockPinBase, "netlock-1-2/../../../../etc"), filepath.Join(netlockPinBase, "sub", "netlock-1-2"),
		filepath.Join(netlockPinBase, "netlock-1-2") + "\n\n", "netlock-1-2"} {
		if _, err := pinDirFromRecord([]byte(bad)); !errors.Is(err, ErrBadImages) {
			t.Errorf("pinDirFromRecord(%q): %v, want ErrBadImages", bad, err)
		}
	}
}

func FuzzPinDirFromRecord(f *testing.F) {
	f.Add([]byte(filepath.Join(netlockPinBase, "netlock-1-2") + "\n"))
	f.Add([]byte("/sys/fs/bpf/lazyr/../netlock-1-2"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := pinDirFromRecord(b)
		if err != nil {
			return
		}
		if filepath.Clean(d) != d || filepath.Dir(d) != netlockPinBase || !strings.HasPrefix(filepath.Base(d), "netlock-") {
			t.Fatalf("accepted %q", d)
		}
	})
}

func FuzzParseDiagDump(f *testing.F) {
	msg := make([]byte, nlmsgHdrLen+inetDiagMsgLen)
	msg[0] = byte(len(msg))
	msg[4] = sockDiagByFamily
	msg[nlmsgHdrLen] = unix.AF_INET
	msg[nlmsgHdrLen+1] = tcpTimeWait
	done := []byte{16, 0, 0, 0, unix.NLMSG_DONE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	f.Add(append(append([]byte{}, msg...), done...))
	f.Add([]byte{20, 0, 0, 0, unix.NLMSG_ERROR, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		socks, _, err := parseDiagDump(b)
		if err != nil {
			return
		}
		for _, s := range socks {
			if s.family != unix.AF_INET && s.family != unix.AF_INET6 {
				t.Fatalf("socket of family %d", s.family)
			}
			_ = s.id.localAddr(s.family)
		}
	})
}

func TestParseDiagDump(t *testing.T) {
	msg := make([]byte, nlmsgHdrLen+inetDiagMsgLen)
	msg[0] = byte(len(msg))
	msg[4] = sockDiagByFamily
	body := msg[nlmsgHdrLen:]
	body[0], body[1] = unix.AF_INET, tcpTimeWait
	body[4], body[5] = 0x13, 0x88 // sport 5000
	copy(body[8:], []byte{127, 0, 0, 1})
	established := append([]byte{}, msg...)
	established[nlmsgHdrLen+1] = 1
	done := []byte{16, 0, 0, 0, unix.NLMSG_DONE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	socks, fin, err := parseDiagDump(append(append(msg, established...), done...))
	if err != nil || !fin || len(socks) != 1 {
		t.Fatalf("parseDiagDump: %v, done %v, %v; want one TIME_WAIT socket and done", socks, fin, err)
	}
	if p, a := socks[0].id.localPort(), socks[0].id.localAddr(unix.AF_INET); p != 5000 || a != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("local end %v:%d, want 127.0.0.1:5000", a, p)
	}
	errMsg := []byte{20, 0, 0, 0, unix.NLMSG_ERROR, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff}
	if _, _, err := parseDiagDump(errMsg); !errors.Is(err, unix.ENOENT) {
		t.Errorf("error message: %v, want ENOENT", err)
	}
}

// A listener without SO_REUSEADDR whose connection the server closed first leaves a TIME_WAIT socket
// that blocks binding the port again; destroyTimeWait clears exactly those.
func TestDestroyTimeWait(t *testing.T) {
	requireRoot(t)
	enterNetns(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().(*net.TCPAddr).AddrPort()
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for _, l := range []net.Listener{lis, other} {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		s.Close() // the server closes first: its end goes to TIME_WAIT
		buf := make([]byte, 1)
		c.Read(buf)
		c.Close()
	}
	lis.Close()
	bind := func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		return unix.Bind(fd, &unix.SockaddrInet4{Addr: addr.Addr().As4(), Port: int(addr.Port())})
	}
	if err := bind(); !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("bind next to the TIME_WAIT socket: %v, want EADDRINUSE (test premise)", err)
	}
	n, err := destroyTimeWait(addr)
	if err != nil || n != 1 {
		t.Fatalf("destroyTimeWait = %d, %v; want 1", n, err)
	}
	if err := bind(); err != nil {
		t.Errorf("bind after destroyTimeWait: %v", err)
	}
	if n, err := destroyTimeWait(addr); err != nil || n != 0 {
		t.Errorf("second destroyTimeWait = %d, %v; want 0", n, err)
	}
	// The other port's TIME_WAIT socket was left alone.
	if n, err := destroyTimeWait(other.Addr().(*net.TCPAddr).AddrPort()); err != nil || n != 1 {
		t.Errorf("destroyTimeWait on the other port = %d, %v; want 1 (it must have survived)", n, err)
	}
}

type recordingNotify struct{ locks, unlocks int }

func (r *recordingNotify) NetworkLock() error   { r.locks++; return nil }
func (r *recordingNotify) NetworkUnlock() error { r.unlocks++; return nil }

// connImages writes an image directory holding one established connection (files.img entry + tcp-stream).
func connImages(t *testing.T) (*images.Dir, map[uint32]*fdinfo.FileEntry) {
	t.Helper()
	d, err := images.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	e := connEntry(1, 0x4d2)
	inq, outq := []byte("unread"), []byte("unacked")
	st := &tcp_stream.TcpStreamEntry{InqLen: proto.Uint32(uint32(len(inq))), InqSeq: proto.Uint32(1000),
		OutqLen: proto.Uint32(uint32(len(outq))), OutqSeq: proto.Uint32(2000), OptMask: proto.Uint32(0),
		SndWscale: proto.Uint32(0), MssClamp: proto.Uint32(65483), UnsqLen: proto.Uint32(0)}
	if err := d.WriteTCPStream(e.GetIno(), st, inq, outq); err != nil {
		t.Fatal(err)
	}
	return d, map[uint32]*fdinfo.FileEntry{1: {Type: fdinfo.FdTypes_INETSK.Enum(), Id: proto.Uint32(1), Isk: e}}
}

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

func TestPrepareNetwork(t *testing.T) {
	requireRoot(t)
	enterNetns(t)
	d, files := connImages(t)
	log := zap.NewNop()

	rec := &recordingNotify{}
	_, err := prepareNetwork(d, files, &Options{Notify: rec}, log)
	if !errors.Is(err, ErrUnsupported) || !regexp.MustCompile(`127\.0\.0\.1:5000 -> 127\.0\.0\.1:40000.*--tcp-established`).MatchString(err.Error()) {
		t.Errorf("without TCPEstablished: %v; want a refusal naming the connection and the flag", err)
	}
	if rec.locks != 0 {
		t.Errorf("Notify.NetworkLock called %d times for a refused restore", rec.locks)
	}
	if _, err := prepareNetwork(d, files, &Options{TCPEstablished: true, NetworkLock: "iptables"}, log); !errors.Is(err, ErrUnsupported) {
		t.Errorf("unknown lock method: %v, want ErrUnsupported", err)
	}

	// skip: no lock, but Notify is told, once each way.
	rec = &recordingNotify{}
	opts := &Options{TCPEstablished: true, NetworkLock: NetworkLockSkip, Notify: rec}
	n, err := prepareNetwork(d, files, opts, log)
	if err != nil {
		t.Fatal(err)
	}
	if opts.net != n || n.lock != nil || tcxCount(t) != 0 {
		t.Errorf("skip: opts.net set %v, lock %v, %d programs", opts.net == n, n.lock, tcxCount(t))
	}
	if st := n.streams[1]; st == nil || string(st.InQueue) != "unread" || string(st.OutQueue) != "unacked" || !st.Nodelay || st.Src.Port() != 5000 {
		t.Errorf("stream state %v", st)
	}
	if err := n.unlock(); err != nil {
		t.Fatal(err)
	}
	n.close()
	if rec.locks != 1 || rec.unlocks != 1 {
		t.Errorf("Notify: %d locks, %d unlocks; want 1 and 1", rec.locks, rec.unlocks)
	}

	// ebpf without a record: a lock of the restore's own, released by unlock.
	n, err = prepareNetwork(d, files, &Options{TCPEstablished: true}, log)
	if err != nil {
		t.Fatal(err)
	}
	if got := tcxCount(t); got != 2 {
		t.Errorf("%d programs on lo with the restore's own lock, want 2", got)
	}
	if err := n.unlock(); err != nil {
		t.Fatal(err)
	}
	n.close()
	if got := tcxCount(t); got != 0 {
		t.Errorf("%d programs on lo after unlock", got)
	}
}

// The lock a dump left pinned is taken over and released, on failure too.
func TestPrepareNetworkPinnedLock(t *testing.T) {
	requireRoot(t)
	enterNetns(t)
	bpffs := filepath.Join(t.TempDir(), "bpffs")
	if err := netlock.MountBPFFS(bpffs); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(bpffs, unix.MNT_DETACH)
	saved := netlockPinBase
	netlockPinBase = filepath.Join(bpffs, "lazyr")
	defer func() { netlockPinBase = saved }()
	if err := os.Mkdir(netlockPinBase, 0o700); err != nil {
		t.Fatal(err)
	}
	d, files := connImages(t)
	for _, succeed := range []bool{true, false} {
		pin := filepath.Join(netlockPinBase, "netlock-1-2")
		l, err := netlock.New(netlock.Options{Interfaces: []string{"lo"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Pin(pin); err != nil {
			t.Fatal(err)
		}
		l.Close()
		if err := os.WriteFile(filepath.Join(d.Path(), netlockRecordName), []byte(pin+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		rec := &recordingNotify{}
		n, err := prepareNetwork(d, files, &Options{TCPEstablished: true, NetworkLock: NetworkLockSkip, Notify: rec}, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		if n.lock == nil || tcxCount(t) != 2 {
			t.Fatalf("pinned lock not taken over (lock %v, %d programs)", n.lock, tcxCount(t))
		}
		if succeed {
			if err := n.unlock(); err != nil {
				t.Fatal(err)
			}
		}
		n.close() // after a failure: releases
		if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("succeed=%v: pin %s still there (%v)", succeed, pin, err)
		}
		if got := tcxCount(t); got != 0 {
			t.Errorf("succeed=%v: %d programs left on lo", succeed, got)
		}
		if rec.unlocks != 1 {
			t.Errorf("succeed=%v: Notify.NetworkUnlock called %d times, want 1", succeed, rec.unlocks)
		}
	}
	// A record naming something else is refused.
	os.WriteFile(filepath.Join(d.Path(), netlockRecordName), []byte("/etc\n"), 0o600)
	if _, err := prepareNetwork(d, files, &Options{TCPEstablished: true}, zap.NewNop()); !errors.Is(err, ErrBadImages) {
		t.Errorf("record naming /etc: %v, want ErrBadImages", err)
	}
}
