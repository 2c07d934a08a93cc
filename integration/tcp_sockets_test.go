package integration

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/testutil"
)

var socketsReadyRe = regexp.MustCompile(`(?m)^ready tcp4=(\d+) tcp6=(\d+) udp=(\d+) cudp=(\d+) pid=\d+$`)

// socketPorts are the ports tcp_sockets printed.
type socketPorts struct{ tcp4, tcp6, udp, cudp uint16 }

func parsePorts(t *testing.T, m []string) socketPorts {
	t.Helper()
	p := make([]uint16, 4)
	for i := range p {
		n, err := strconv.Atoi(m[i+1])
		if err != nil || n <= 0 || n > 65535 {
			t.Fatalf("bad port %q", m[i+1])
		}
		p[i] = uint16(n)
	}
	return socketPorts{p[0], p[1], p[2], p[3]}
}

// tcpRequest connects, sends one line and returns everything the server sends before closing.
func tcpRequest(t *testing.T, addr netip.AddrPort, line string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatalf("connect %v: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatalf("write to %v: %v", addr, err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read from %v: %v", addr, err)
	}
	return string(b)
}

// udpRequest sends one datagram and returns the answer.
func udpRequest(t *testing.T, addr netip.AddrPort, msg string) string {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1024)
	// The victim serves its socket every 50 ms; a datagram is not lost on loopback, but be patient.
	for try := 0; try < 3; try++ {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatalf("send to %v: %v", addr, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n])
		}
	}
	t.Fatalf("no answer from %v", addr)
	return ""
}

var pingRe = regexp.MustCompile(`^ping (\d+) pid=(\d+)$`)

// nextPing reads the victim's pings until one numbered above after arrives, and checks it comes from the
// victim's connected UDP socket.
func nextPing(t *testing.T, peer *net.UDPConn, from uint16, pid int, after int) int {
	t.Helper()
	buf := make([]byte, 256)
	deadline := time.Now().Add(outputTimeout)
	for {
		_ = peer.SetReadDeadline(deadline)
		n, src, err := peer.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("waiting for a ping above %d: %v", after, err)
		}
		m := pingRe.FindStringSubmatch(string(buf[:n]))
		if m == nil {
			t.Fatalf("unexpected datagram %q", buf[:n])
		}
		if src.Port() != from {
			t.Fatalf("ping from port %d, want the connected socket's %d", src.Port(), from)
		}
		if m[2] != strconv.Itoa(pid) {
			t.Fatalf("ping from pid %s, want %d", m[2], pid)
		}
		if k, _ := strconv.Atoi(m[1]); k > after {
			return k
		}
	}
}

// exerciseSockets uses every socket of tcp_sockets once from outside.
func exerciseSockets(t *testing.T, p socketPorts, peer *net.UDPConn, pid int, round string, lastPing int) int {
	t.Helper()
	lo4, lo6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	if got, want := tcpRequest(t, netip.AddrPortFrom(lo4, p.tcp4), "hello "+round), "tcp4 hello "+round+"\n"; got != want {
		t.Errorf("TCP listener 127.0.0.1:%d answered %q, want %q", p.tcp4, got, want)
	}
	if got, want := tcpRequest(t, netip.AddrPortFrom(lo6, p.tcp6), "hi "+round), "tcp6 hi "+round+"\n"; got != want {
		t.Errorf("TCP listener [::1]:%d answered %q, want %q", p.tcp6, got, want)
	}
	if got, want := udpRequest(t, netip.AddrPortFrom(lo4, p.udp), "dgram "+round), "udp dgram "+round; got != want {
		t.Errorf("UDP socket 127.0.0.1:%d answered %q, want %q", p.udp, got, want)
	}
	return nextPing(t, peer, p.cudp, pid, lastPing)
}

// Listening TCP sockets (IPv4 and IPv6) and UDP sockets (bound, and connected with a kernel-chosen port)
// come back on the same addresses, with their options and flags (which the victim checks itself every
// tick), without --tcp-established and without any network lock.
func TestTCPListenersAndUDP(t *testing.T) {
	testutil.RequireRoot(t)
	enterTCPNetns(t)
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	peerPort := peer.LocalAddr().(*net.UDPAddr).Port
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "tcp_sockets"), strconv.Itoa(peerPort))
	ports := parsePorts(t, v.WaitOutput(socketsReadyRe, outputTimeout))
	last := exerciseSockets(t, ports, peer, v.Pid, "before", -1)

	dir := t.TempDir()
	dumpTCP(t, v, dir)
	if p := lockPin(t, dir); p != "" {
		t.Errorf("a process without connections got a network lock (%s)", p)
	}
	if n := tcxPrograms(t, "lo"); n != 0 {
		t.Errorf("%d tcx programs on lo", n)
	}
	restoreTCP(t, dir, v)
	after := exerciseSockets(t, ports, peer, v.Pid, "after", last)
	t.Logf("last ping before the dump %d, first after the restore %d", last, after)

	lastTick := lastNumber(t, v.Output(), tickRe)
	waitRestored(t, v, lineRe(`^tick %d pid=%d$`, lastTick+3, v.Pid))
	out := v.Output()
	requireNoFail(t, out)
	requireConsecutive(t, "tick", numbers(t, out, tickRe), 0, lastTick+4)
	// The restored process answers a second round too (the listeners were not consumed by the first).
	exerciseSockets(t, ports, peer, v.Pid, "again", after)
	// Ready is printed once: the program continued, it did not start over.
	if n := len(socketsReadyRe.FindAllString(out, -1)); n != 1 {
		t.Errorf("%d ready lines, want 1", n)
	}
}

// The images hold CRIU's inet socket entries (files.img, isk): family, type, state, ports and addresses
// encoded as CRIU does (the raw address bytes as host-order words).
func TestTCPSocketImages(t *testing.T) {
	testutil.RequireRoot(t)
	enterTCPNetns(t)
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	peerPort := uint32(peer.LocalAddr().(*net.UDPAddr).Port)
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "tcp_sockets"), strconv.Itoa(int(peerPort)))
	ports := parsePorts(t, v.WaitOutput(socketsReadyRe, outputTimeout))
	dir := t.TempDir()
	dump(t, v.Pid, dir, "--leave-running")
	requireUndisturbed(t, v)

	d, err := images.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	files, err := images.Read[fdinfo.FileEntry](d, images.FilesName)
	if err != nil {
		t.Fatal(err)
	}
	lo4 := binary.NativeEndian.Uint32([]byte{127, 0, 0, 1})
	lo6 := []uint32{0, 0, 0, binary.NativeEndian.Uint32([]byte{0, 0, 0, 1})}
	type key struct{ family, typ, state, port uint32 }
	want := map[key]bool{
		{unix.AF_INET, unix.SOCK_STREAM, 10, uint32(ports.tcp4)}:  true, // LISTEN
		{unix.AF_INET6, unix.SOCK_STREAM, 10, uint32(ports.tcp6)}: true,
		{unix.AF_INET, unix.SOCK_DGRAM, 7, uint32(ports.udp)}:     true, // CLOSE: unconnected
		{unix.AF_INET, unix.SOCK_DGRAM, 1, uint32(ports.cudp)}:    true, // ESTABLISHED: connected
	}
	for _, f := range files {
		if f.GetType() != fdinfo.FdTypes_INETSK {
			continue
		}
		e := f.GetIsk()
		if e == nil || e.GetId() != f.GetId() {
			t.Fatalf("INETSK file %d without a matching isk entry: %v", f.GetId(), e)
		}
		k := key{e.GetFamily(), e.GetType(), e.GetState(), e.GetSrcPort()}
		if !want[k] {
			t.Errorf("unexpected inet socket %+v", k)
			continue
		}
		delete(want, k)
		if e.GetFamily() == unix.AF_INET6 {
			if !slices.Equal(e.GetSrcAddr(), lo6) {
				t.Errorf("[::1] listener: src_addr %#x, want %#x", e.GetSrcAddr(), lo6)
			}
			if !e.GetV6Only() {
				t.Error("[::1] listener: v6only lost")
			}
			continue
		}
		if !slices.Equal(e.GetSrcAddr(), []uint32{lo4}) {
			t.Errorf("%+v: src_addr %#x, want [%#x]", k, e.GetSrcAddr(), lo4)
		}
		if k.state == 1 && (e.GetDstPort() != peerPort || !slices.Equal(e.GetDstAddr(), []uint32{lo4})) {
			t.Errorf("connected UDP socket: peer %#x:%d, want %#x:%d", e.GetDstAddr(), e.GetDstPort(), lo4, peerPort)
		}
		if k.typ == unix.SOCK_STREAM && e.GetBacklog() != 8 {
			t.Errorf("listener backlog %d, want 8", e.GetBacklog())
		}
		if k.port == uint32(ports.udp) && (e.GetIpOpts().GetTos() != 0x10 || e.GetFlags()&unix.O_NONBLOCK == 0) {
			t.Errorf("bound UDP socket: tos %#x flags %#o, want tos 0x10 and O_NONBLOCK", e.GetIpOpts().GetTos(), e.GetFlags())
		}
	}
	if len(want) != 0 {
		t.Errorf("sockets missing from files.img: %+v", want)
	}
}
