package integration

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/testutil"
)

// tcpTickRe matches tcp_echo's tick lines; group 1 is the tick.
var tcpTickRe = regexp.MustCompile(`(?m)^tick (\d+) echoed=\d+ pid=\d+$`)

// echoServer is a tcp_echo victim with a client connected to it.
type echoServer struct {
	v        *testutil.Victim
	addr     netip.AddrPort // the listener
	connFd   string         // the accepted connection's fd in the victim
	client   *echoClient
	clientNs *netnsThread // nil: the test goroutine's namespace
}

// startEcho starts tcp_echo on addr (port chosen by the kernel) and connects an echo client to it from
// clientNs (nil: the test's namespace). extra are more tcp_echo arguments after ADDR PORT CHUNK DELAY.
func startEcho(t *testing.T, addr, connectTo string, clientNs *netnsThread, extra ...string) *echoServer {
	t.Helper()
	args := append([]string{addr, "0", "64", "5"}, extra...)
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "tcp_echo"), args...)
	m := v.WaitOutput(regexp.MustCompile(`(?m)^listening port=(\d+) pid=\d+$`), outputTimeout)
	port, _ := strconv.Atoi(m[1])
	dst := netip.AddrPortFrom(netip.MustParseAddr(connectTo), uint16(port))
	c := startEchoClient(t, dst, clientNs, 0)
	fd := v.WaitOutput(regexp.MustCompile(`(?m)^accepted fd=(\d+)`), outputTimeout)[1]
	return &echoServer{v: v, addr: dst, connFd: fd, client: c, clientNs: clientNs}
}

// requireUnreadData waits until the server's socket holds bytes its program has not read yet.
func (e *echoServer) requireUnreadData(t *testing.T) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		// The server's socket, seen from its own namespace (the test goroutine's): local is the
		// listener's address, remote the client's.
		if q := rxQueue(t, e.addr, e.client.local()); q > 0 {
			return q
		}
		if time.Now().After(deadline) {
			t.Fatal("the server's receive queue stays empty: the test needs unread data in it")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// resets counts the resets sent in the namespaces involved: any reset on the connection, by either side,
// is sent by one of them. (EstabResets is no use here: it also counts the dumped socket torn down
// silently in repair mode.)
func (e *echoServer) resets(t *testing.T) int64 {
	t.Helper()
	n := tcpCounter(t, "OutRsts")
	if e.clientNs != nil {
		e.clientNs.do(func() {
			// Read directly: t.Fatal is not allowed on this goroutine.
			n += snmpTCP("OutRsts")
		})
	}
	return n
}

// streamQueue returns the receive queue length recorded in the tcp-stream image of the only connection.
func streamQueue(t *testing.T, dir string) uint32 {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "tcp-stream-*.img"))
	if err != nil || len(names) != 1 {
		t.Fatalf("tcp-stream images: %v (%v), want exactly one", names, err)
	}
	var ino uint32
	if _, err := fmt.Sscanf(filepath.Base(names[0]), "tcp-stream-%x.img", &ino); err != nil {
		t.Fatalf("%s: %v", names[0], err)
	}
	d, err := images.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	e, inq, _, err := d.ReadTCPStream(ino)
	if err != nil {
		t.Fatalf("read %s: %v", names[0], err)
	}
	if int(e.GetInqLen()) != len(inq) {
		t.Fatalf("tcp-stream: inq_len %d but %d bytes", e.GetInqLen(), len(inq))
	}
	return e.GetInqLen()
}

// runEchoRestore is the core scenario: a client streams numbered lines through the echo server; the
// server alone is dumped with unread data in its receive queue and restored; the client's connection must
// go on with no reset and every line echoed exactly once, in order.
func runEchoRestore(t *testing.T, e *echoServer, lazy bool) {
	t.Helper()
	c := e.client
	c.waitReceived(t, 200, outputTimeout)
	rstBefore := e.resets(t)
	queued := e.requireUnreadData(t)

	dir := t.TempDir()
	dumpTook := dumpTCP(t, e.v, dir, "--tcp-established")
	atDump := c.received.Load()
	c.watch(atDump + 1)
	lastBefore := time.Unix(0, c.lastRecv.Load())
	inq := streamQueue(t, dir)
	t.Logf("dump: %v; receive queue %d bytes before the dump, %d in the image", dumpTook.Round(time.Millisecond), queued, inq)
	if inq == 0 {
		t.Error("the tcp-stream image holds no receive queue")
	}
	// go-criu's crit reads what lazyr wrote (CRIU's formats).
	names, _ := filepath.Glob(filepath.Join(dir, "tcp-stream-*.img"))
	for _, name := range append(names, filepath.Join(dir, "files.img")) {
		mustDecode(t, dir, filepath.Base(name))
	}

	// Between dump and restore the lock holds the connection: programs on lo, pinned for the restore.
	pin := lockPin(t, dir)
	if pin == "" {
		t.Fatal("the dump recorded no network lock")
	}
	if _, err := os.Stat(pin); err != nil {
		t.Fatalf("pinned lock: %v", err)
	}
	if n := tcxPrograms(t, "lo"); n != 2 {
		t.Errorf("%d tcx programs on lo while dumped, want the lock's 2", n)
	}

	// A restore without --tcp-established is refused before it touches anything, lock included.
	_, stderr, code := testutil.Lazyr(t, "restore", "-D", dir, "-d")
	requireFailure(t, "restore of a connection without --tcp-established", stderr, code,
		regexp.MustCompile(`--tcp-established`), regexp.MustCompile(regexp.QuoteMeta(e.addr.String())))
	if _, err := os.Stat(pin); err != nil {
		t.Fatalf("pinned lock after the refused restore: %v", err)
	}
	requireNoProcess(t, e.v.Pid)

	restoreArgs := []string{"--tcp-established"}
	if lazy {
		// The lazy-pages daemon serves the memory; it ends by itself once every page is in.
		work := t.TempDir()
		pidfile := filepath.Join(work, "lp.pid")
		_, stderr, code := testutil.Lazyr(t, "lazy-pages", "-D", dir, "-W", work, "--daemon", "--pidfile", pidfile,
			"-o", filepath.Join(work, "lp.log"), "-v", "4")
		if code != 0 {
			t.Fatalf("lazy-pages: %s", stderr)
		}
		if b, err := os.ReadFile(pidfile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				testutil.KillAtCleanup(t, pid)
			}
		}
		restoreArgs = append(restoreArgs, "--lazy-pages", "-W", work)
	}
	start := time.Now()
	restoreTook := restoreTCP(t, dir, e.v, restoreArgs...)
	c.waitReceived(t, atDump+1, 30*time.Second)
	first := c.arrivalOf()
	c.waitReceived(t, atDump+1000, 30*time.Second)
	t.Logf("restore: %v; first echo %v after the restore started; the client waited %v between echoes (dump, reap, restore); %d lines echoed before the dump, %d now",
		restoreTook.Round(time.Millisecond), first.Sub(start).Round(time.Millisecond), first.Sub(lastBefore).Round(time.Millisecond), atDump, c.received.Load())

	if n := tcxPrograms(t, "lo"); n != 0 {
		t.Errorf("%d tcx programs left on lo after the restore", n)
	}
	if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pinned lock %s after the restore: %v, want it removed", pin, err)
	}
	if d := e.resets(t) - rstBefore; d != 0 {
		t.Errorf("%d resets sent", d)
	}
	if err := c.error(); err != nil {
		t.Fatalf("echo client: %v", err)
	}
	last := lastNumber(t, e.v.Output(), tcpTickRe)
	waitRestored(t, e.v, lineRe(`^tick %d echoed=\d+ pid=%d$`, last+2, e.v.Pid))
	out := e.v.Output()
	requireNoFail(t, out)
	requireConsecutive(t, "tick", numbers(t, out, tcpTickRe), 0, last+3)
}

// snmpTCP is tcpCounter for goroutines other than the test's (-1 on error).
func snmpTCP(name string) int64 {
	b, err := os.ReadFile("/proc/thread-self/net/snmp")
	if err != nil {
		return -1
	}
	var keys, vals []string
	for _, l := range regexp.MustCompile(`(?m)^Tcp:.*$`).FindAllString(string(b), 2) {
		if keys == nil {
			keys = regexp.MustCompile(`\S+`).FindAllString(l, -1)
		} else {
			vals = regexp.MustCompile(`\S+`).FindAllString(l, -1)
		}
	}
	for i, k := range keys {
		if k == name && i < len(vals) {
			v, err := strconv.ParseInt(vals[i], 10, 64)
			if err != nil {
				return -1
			}
			return v
		}
	}
	return -1
}

func TestTCPEstablished(t *testing.T) {
	testutil.RequireRoot(t)
	enterTCPNetns(t)
	runEchoRestore(t, startEcho(t, "127.0.0.1", "127.0.0.1", nil), false)
}

// The same with the memory restored lazily.
func TestTCPEstablishedLazy(t *testing.T) {
	testutil.RequireRoot(t)
	enterTCPNetns(t)
	runEchoRestore(t, startEcho(t, "127.0.0.1", "127.0.0.1", nil), true)
}

func TestTCPEstablishedIPv6(t *testing.T) {
	testutil.RequireRoot(t)
	enterTCPNetns(t)
	runEchoRestore(t, startEcho(t, "::1", "::1", nil), false)
}

// The server and the client in two network namespaces joined by a veth pair: the lock must hold the
// connection on the veth (the peer's retransmissions come from outside), not only on lo.
func TestTCPEstablishedVeth(t *testing.T) {
	testutil.RequireRoot(t)
	enterTCPNetns(t)
	client := newNetnsThread(t)
	tcpVeth(t, client, "192.0.2.1", "192.0.2.2")
	e := startEcho(t, "192.0.2.1", "192.0.2.1", client)
	if got := e.client.local().Addr().String(); got != "192.0.2.2" {
		t.Fatalf("client address %s, want 192.0.2.2 (through the veth)", got)
	}
	runEchoRestore(t, e, false)
	if n := tcxPrograms(t, "lzr-a"); n != 0 {
		t.Errorf("%d tcx programs left on the veth after the restore", n)
	}
}

// Without --tcp-established a dump of a process with a connection is refused, naming the fd and the
// connection; the process runs on untouched, connection included.
func TestTCPDumpRefusesEstablished(t *testing.T) {
	testutil.RequireRoot(t)
	enterTCPNetns(t)
	e := startEcho(t, "127.0.0.1", "127.0.0.1", nil)
	e.client.waitReceived(t, 100, outputTimeout)
	rst := e.resets(t)
	_, stderr, code := testutil.Lazyr(t, "dump", "-t", strconv.Itoa(e.v.Pid), "-D", t.TempDir())
	requireFailure(t, "dump of a process with an established connection", stderr, code,
		regexp.MustCompile(`(?i)\bfd\W{0,3}`+e.connFd+`\b`),
		regexp.MustCompile(regexp.QuoteMeta(e.addr.String()+" -> "+e.client.local().String())),
		regexp.MustCompile(`--tcp-established`))
	requireUndisturbed(t, e.v)
	e.client.waitReceived(t, e.client.received.Load()+200, outputTimeout)
	if err := e.client.error(); err != nil {
		t.Fatal(err)
	}
	if n := tcxPrograms(t, "lo"); n != 0 {
		t.Errorf("%d tcx programs on lo after the refused dump", n)
	}
	if d := e.resets(t) - rst; d != 0 {
		t.Errorf("%d resets", d)
	}
}

// A dump that fails after the connection was locked and put in repair mode gives everything back: the
// lock is released, the socket leaves repair mode, and the connection goes on.
func TestTCPDumpFailureReleasesLock(t *testing.T) {
	testutil.RequireRoot(t)
	enterTCPNetns(t)
	// "raw": tcp_echo also opens a raw socket after accepting, which lazyr refuses (after the connection).
	e := startEcho(t, "127.0.0.1", "127.0.0.1", nil, "raw")
	e.v.WaitOutput(regexp.MustCompile(`(?m)^raw fd=\d+`), outputTimeout)
	e.client.waitReceived(t, 100, outputTimeout)
	rst := e.resets(t)
	dir := t.TempDir()
	_, stderr, code := testutil.Lazyr(t, "dump", "-t", strconv.Itoa(e.v.Pid), "-D", dir, "--tcp-established")
	requireFailure(t, "dump of a process with a raw socket", stderr, code, regexp.MustCompile(`(?i)socket`))
	requireUndisturbed(t, e.v)
	e.client.waitReceived(t, e.client.received.Load()+300, 20*time.Second)
	if err := e.client.error(); err != nil {
		t.Fatal(err)
	}
	if n := tcxPrograms(t, "lo"); n != 0 {
		t.Errorf("%d tcx programs on lo after the failed dump", n)
	}
	if p := lockPin(t, dir); p != "" {
		t.Errorf("the failed dump recorded a lock at %s", p)
	}
	if d := e.resets(t) - rst; d != 0 {
		t.Errorf("%d resets", d)
	}
}

// --leave-running dumps the connection and gives it back: the lock is released at the end and the
// connection goes on.
func TestTCPDumpLeaveRunning(t *testing.T) {
	testutil.RequireRoot(t)
	enterTCPNetns(t)
	e := startEcho(t, "127.0.0.1", "127.0.0.1", nil)
	e.client.waitReceived(t, 100, outputTimeout)
	rst := e.resets(t)
	dir := t.TempDir()
	dump(t, e.v.Pid, dir, "--tcp-established", "--leave-running")
	if q := streamQueue(t, dir); q == 0 {
		t.Error("the tcp-stream image holds no receive queue")
	}
	requireUndisturbed(t, e.v)
	e.client.waitReceived(t, e.client.received.Load()+300, 20*time.Second)
	if err := e.client.error(); err != nil {
		t.Fatal(err)
	}
	if n := tcxPrograms(t, "lo"); n != 0 {
		t.Errorf("%d tcx programs on lo after a --leave-running dump", n)
	}
	if p := lockPin(t, dir); p != "" {
		t.Errorf("a --leave-running dump recorded a lock at %s", p)
	}
	if d := e.resets(t) - rst; d != 0 {
		t.Errorf("%d resets", d)
	}
}

// --network-lock skip: no BPF program at all.
func TestTCPDumpNetworkLockSkip(t *testing.T) {
	testutil.RequireRoot(t)
	enterTCPNetns(t)
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "tcp_echo"), "127.0.0.1", "0", "64", "5")
	port, _ := strconv.Atoi(v.WaitOutput(regexp.MustCompile(`(?m)^listening port=(\d+) pid=\d+$`), outputTimeout)[1])
	// Nothing holds the connection off without a lock: it must be idle during the dump, so the client
	// sends a fixed number of lines and the test waits for all of their echoes.
	c := startEchoClient(t, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)), nil, 50)
	c.waitReceived(t, 50, outputTimeout)
	dir := t.TempDir()
	dumpTCP(t, v, dir, "--tcp-established", "--network-lock", "skip")
	if n := tcxPrograms(t, "lo"); n != 0 {
		t.Errorf("%d tcx programs on lo after a dump with --network-lock skip", n)
	}
	if p := lockPin(t, dir); p != "" {
		t.Errorf("a dump without a lock recorded one at %s", p)
	}
	streamQueue(t, dir)
}

// A restore that fails after taking the lock over releases it: no program, no pin stays behind.
func TestTCPRestoreFailureReleasesLock(t *testing.T) {
	testutil.RequireRoot(t)
	enterTCPNetns(t)
	e := startEcho(t, "127.0.0.1", "127.0.0.1", nil)
	e.client.waitReceived(t, 100, outputTimeout)
	dir := t.TempDir()
	dumpTCP(t, e.v, dir, "--tcp-established")
	pin := lockPin(t, dir)
	if pin == "" || tcxPrograms(t, "lo") != 2 {
		t.Fatalf("no lock after the dump (pin %q)", pin)
	}
	// Someone else takes the listener's port: the restore cannot bind it.
	blocker, err := net.Listen("tcp", e.addr.String())
	if err != nil {
		t.Fatalf("take the port: %v", err)
	}
	defer blocker.Close()
	_, stderr, code := testutil.Lazyr(t, "restore", "-D", dir, "-d", "--tcp-established")
	requireFailure(t, "restore onto a taken port", stderr, code, regexp.MustCompile(`(?i)address already in use|bind`))
	requireNoProcess(t, e.v.Pid)
	if n := tcxPrograms(t, "lo"); n != 0 {
		t.Errorf("%d tcx programs on lo after the failed restore", n)
	}
	if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pinned lock %s after the failed restore: %v, want it removed", pin, err)
	}
}
