package integration

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/internal/testutil"
)

// The TCP tests run in network namespaces of their own: nothing they do reaches the machine's network,
// the namespace's SNMP counters (resets sent and received) count only the test's own connections, and
// the lock's programs on lo are only the test's.

// enterTCPNetns moves the test goroutine into a new network namespace with lo up, for the rest of the test.
// The goroutine stays locked to its thread, which the runtime terminates when the test ends instead of
// reusing it in the wrong namespace. Processes the test starts from this goroutine (victims, lazyr)
// inherit the namespace: fork happens on the calling thread.
func enterTCPNetns(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatalf("unshare(CLONE_NEWNET): %v", err)
	}
	tcpIP(t, "link", "set", "lo", "up")
}

// tcpIP runs the ip(8) command on the calling thread (so in its network namespace).
func tcpIP(t *testing.T, args ...string) {
	t.Helper()
	if err := tcpIPErr(args...); err != nil {
		t.Fatal(err)
	}
}

// tcpIPErr is tcpIP for goroutines other than the test's, which must not call t.Fatal.
func tcpIPErr(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// netnsThread is a goroutine locked in a network namespace of its own, which runs functions there.
type netnsThread struct {
	tid  int
	reqs chan func()
}

// newNetnsThread starts a thread in a new network namespace (lo up); it ends with the test.
func newNetnsThread(t *testing.T) *netnsThread {
	t.Helper()
	n := &netnsThread{reqs: make(chan func())}
	ready := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- err
			return
		}
		n.tid = unix.Gettid()
		ready <- nil
		for f := range n.reqs {
			f()
		}
	}()
	if err := <-ready; err != nil {
		t.Fatalf("unshare(CLONE_NEWNET): %v", err)
	}
	t.Cleanup(func() { close(n.reqs) })
	var err error
	n.do(func() { err = tcpIPErr("link", "set", "lo", "up") })
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// do runs f on the namespace's thread.
func (n *netnsThread) do(f func()) {
	done := make(chan struct{})
	n.reqs <- func() {
		defer close(done)
		f()
	}
	<-done
}

// nsPath names the thread's network namespace for ip(8).
func (n *netnsThread) nsPath() string {
	return fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), n.tid)
}

// tcpVeth joins the test goroutine's namespace (address a) and b's (address b) with a veth pair. Both
// addresses are in 192.0.2.0/24 (TEST-NET-1), which exists only inside the test's namespaces.
func tcpVeth(t *testing.T, b *netnsThread, addrA, addrB string) {
	t.Helper()
	tcpIP(t, "link", "add", "lzr-a", "type", "veth", "peer", "name", "lzr-b", "netns", b.nsPath())
	tcpIP(t, "addr", "add", addrA+"/24", "dev", "lzr-a")
	tcpIP(t, "link", "set", "lzr-a", "up")
	var err error
	b.do(func() {
		if err = tcpIPErr("addr", "add", addrB+"/24", "dev", "lzr-b"); err == nil {
			err = tcpIPErr("link", "set", "lzr-b", "up")
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// echoClient keeps sending numbered lines to an echo server and checks that every echoed line is the next
// one: TCP must neither lose nor duplicate a byte across a dump and restore of the server.
type echoClient struct {
	conn     net.Conn
	limit    int64        // lines to send (0: no limit)
	sent     atomic.Int64 // lines written
	received atomic.Int64 // lines echoed back, each checked
	stopping atomic.Bool
	lastRecv atomic.Int64 // when the last line arrived (UnixNano)
	watchFor atomic.Int64 // line count whose arrival time is wanted (see arrivalOf)
	watchAt  atomic.Int64 // when that count was reached (UnixNano)
	wg       sync.WaitGroup
	mu       sync.Mutex
	err      error
}

const echoLine = "line %09d\n"

// startEchoClient connects to addr from the network namespace of ns, or of the calling thread if ns is nil,
// and sends limit lines (0: until stopped).
func startEchoClient(t *testing.T, addr netip.AddrPort, ns *netnsThread, limit int64) *echoClient {
	t.Helper()
	var conn net.Conn
	var err error
	dial := func() { conn, err = net.DialTimeout("tcp", addr.String(), 5*time.Second) }
	if ns != nil {
		ns.do(dial)
	} else {
		dial()
	}
	if err != nil {
		t.Fatalf("connect to the echo server %v: %v", addr, err)
	}
	c := &echoClient{conn: conn, limit: limit}
	c.wg.Add(2)
	go c.write()
	go c.read()
	t.Cleanup(func() { c.stop() })
	return c
}

func (c *echoClient) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil && !c.stopping.Load() {
		c.err = err
	}
}

func (c *echoClient) error() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *echoClient) write() {
	defer c.wg.Done()
	for i := int64(0); !c.stopping.Load() && (c.limit == 0 || i < c.limit); i++ {
		if _, err := fmt.Fprintf(c.conn, echoLine, i); err != nil {
			c.fail(fmt.Errorf("write line %d: %w", i, err))
			return
		}
		c.sent.Store(i + 1)
	}
}

func (c *echoClient) read() {
	defer c.wg.Done()
	r := bufio.NewReader(c.conn)
	for i := int64(0); ; i++ {
		line, err := r.ReadString('\n')
		if err != nil {
			c.fail(fmt.Errorf("read echo of line %d: %w", i, err))
			return
		}
		if want := fmt.Sprintf(echoLine, i); line != want {
			c.fail(fmt.Errorf("echo %d is %q, want %q (bytes lost, duplicated or reordered)", i, line, want))
			return
		}
		now := time.Now().UnixNano()
		c.received.Store(i + 1)
		c.lastRecv.Store(now)
		if i+1 == c.watchFor.Load() {
			c.watchAt.Store(now)
		}
	}
}

// watch asks for the arrival time of line count n (see arrivalOf).
func (c *echoClient) watch(n int64) { c.watchAt.Store(0); c.watchFor.Store(n) }

// arrivalOf returns when the watched line count was reached (zero if not yet).
func (c *echoClient) arrivalOf() time.Time {
	if ns := c.watchAt.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// stop ends the client; errors after this point are expected (the connection is closed under it).
func (c *echoClient) stop() {
	if c.stopping.Swap(true) {
		return
	}
	c.conn.Close()
	c.wg.Wait()
}

// waitReceived waits until n lines came back, failing early on a client error.
func (c *echoClient) waitReceived(t *testing.T, n int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for c.received.Load() < n {
		if err := c.error(); err != nil {
			t.Fatalf("echo client: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("echo client: %d lines echoed after %v, want %d (%d sent)", c.received.Load(), timeout, n, c.sent.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *echoClient) local() netip.AddrPort  { return c.conn.LocalAddr().(*net.TCPAddr).AddrPort() }
func (c *echoClient) remote() netip.AddrPort { return c.conn.RemoteAddr().(*net.TCPAddr).AddrPort() }

// rxQueue returns the receive queue length of the TCP socket local->remote, from /proc/net/tcp of the
// calling thread's network namespace.
func rxQueue(t *testing.T, local, remote netip.AddrPort) int {
	t.Helper()
	file := "/proc/thread-self/net/tcp"
	if local.Addr().Is6() && !local.Addr().Is4In6() {
		file += "6"
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	want := procNetAddr(local) + " " + procNetAddr(remote)
	for _, l := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) < 5 || f[1]+" "+f[2] != want {
			continue
		}
		_, rx, _ := strings.Cut(f[4], ":")
		n, err := strconv.ParseInt(rx, 16, 64)
		if err != nil {
			t.Fatalf("%s: bad queue field %q", file, f[4])
		}
		return int(n)
	}
	t.Fatalf("no socket %v -> %v in %s", local, remote, file)
	return 0
}

// procNetAddr formats an address as /proc/net/tcp does: the raw address bytes as host-order 32-bit hex
// words, then the port.
func procNetAddr(ap netip.AddrPort) string {
	var b []byte
	if a := ap.Addr(); a.Is4() {
		v := a.As4()
		b = v[:]
	} else {
		v := a.As16()
		b = v[:]
	}
	var s strings.Builder
	for i := 0; i < len(b); i += 4 {
		fmt.Fprintf(&s, "%02X%02X%02X%02X", b[i+3], b[i+2], b[i+1], b[i])
	}
	fmt.Fprintf(&s, ":%04X", ap.Port())
	return s.String()
}

// tcpCounter returns a Tcp counter of /proc/net/snmp ("OutRsts", "EstabResets", ...) of the calling
// thread's network namespace.
func tcpCounter(t *testing.T, name string) int64 {
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

// tcxPrograms counts the tcx programs attached to an interface of the calling thread's network namespace
// (ingress and egress): the network lock's, while it is in force.
func tcxPrograms(t *testing.T, ifname string) int {
	t.Helper()
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		r, err := link.QueryPrograms(link.QueryOptions{Target: ifi.Index, Attach: at})
		if err != nil {
			t.Fatalf("query tcx programs of %s: %v", ifname, err)
		}
		n += len(r.Programs)
	}
	return n
}

// lockPin returns the pin directory the dump recorded in dir ("" if none).
func lockPin(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "netlock.pin"))
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// dumpTCP dumps the victim with extra flags, checks that the dump killed it, and waits for its PID.
func dumpTCP(t *testing.T, v *testutil.Victim, dir string, extra ...string) time.Duration {
	t.Helper()
	start := time.Now()
	dump(t, v.Pid, dir, extra...)
	took := time.Since(start)
	st, err := v.Wait(goneTimeout)
	if err != nil {
		t.Fatalf("after dump: %v", err)
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("victim %d ended with %v after the dump; want it killed by a signal", v.Pid, st)
	}
	if err := testutil.WaitPidGone(v.Pid, goneTimeout); err != nil {
		t.Fatal(err)
	}
	return took
}

// restoreTCP runs `lazyr restore -D dir -d` with extra flags and checks that the victim's PID is back.
func restoreTCP(t *testing.T, dir string, v *testutil.Victim, extra ...string) time.Duration {
	t.Helper()
	tmp := t.TempDir()
	log := filepath.Join(tmp, "restore.log")
	args := append([]string{"restore", "-D", dir, "-d", "-o", log, "-v", "4"}, extra...)
	start := time.Now()
	_, stderr, code := testutil.Lazyr(t, args...)
	took := time.Since(start)
	if code != 0 {
		t.Fatalf("lazyr restore: exit %d\nstderr:\n%s\nlog:\n%s", code, stderr, logTail(log))
	}
	testutil.KillAtCleanup(t, v.Pid)
	if !testutil.PidAlive(v.Pid) {
		t.Fatalf("restored pid %d is not running; output:\n%s", v.Pid, testutil.Tail(v.Output(), 20))
	}
	return took
}
