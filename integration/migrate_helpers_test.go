package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/testutil"
	"github.com/lazyr/lazyr/lazypages"
)

// The migration tests: a page server (lazyr page-server, or the source side of dump --lazy-pages), a
// lazy-pages daemon reading from it (lazy-pages --page-server) and a lazy restore.

const (
	// readyTimeout bounds the wait for a background lazyr to report readiness.
	readyTimeout = 60 * time.Second
	// srcAddr and dstAddr are the two "hosts" of TestMigrateBetweenHosts: TEST-NET-1 addresses that
	// exist only inside the network namespaces the test creates.
	srcAddr, dstAddr = "192.0.2.101", "192.0.2.102"
)

// bgLazyr is a lazyr command running in the background (a page server, a dump --lazy-pages).
type bgLazyr struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stderr string
	log    string
	done   chan struct{}
	code   int
}

// startBg starts lazyr args (behind prefix, e.g. nsenter, if given) with "--status-fd 3", "-o LOG",
// "-v 4" added and waits until it writes its status byte. It fails the test if lazyr exits first.
// Whatever still runs at the end of the test is killed with its process group.
func startBg(t *testing.T, prefix []string, args ...string) *bgLazyr {
	t.Helper()
	tmp := t.TempDir()
	b := &bgLazyr{t: t, name: "lazyr " + args[0], stderr: filepath.Join(tmp, "stderr"), log: filepath.Join(tmp, "lazyr.log"), done: make(chan struct{})}
	errF, err := os.Create(b.stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer errF.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	full := append(append([]string{}, prefix...), testutil.BuildLazyr(t))
	full = append(full, args...)
	full = append(full, "--status-fd", "3", "-o", b.log, "-v", "4")
	b.cmd = exec.Command(full[0], full[1:]...)
	b.cmd.Stdout, b.cmd.Stderr = errF, errF
	b.cmd.ExtraFiles = []*os.File{w}
	b.cmd.Dir = tmp
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := b.cmd.Start(); err != nil {
		w.Close()
		t.Fatalf("start %s: %v", b.name, err)
	}
	w.Close()
	go func() {
		b.cmd.Wait()
		b.code = b.cmd.ProcessState.ExitCode()
		close(b.done)
	}()
	t.Cleanup(func() {
		select {
		case <-b.done:
		default:
			syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
			<-b.done
		}
	})
	ready := make(chan error, 1)
	go func() {
		one := make([]byte, 1)
		_, err := r.Read(one)
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			<-b.done
			t.Fatalf("%s exited (code %d) before it was ready\nstderr:\n%s\nlog:\n%s", b.name, b.code, b.errText(), logTail(b.log))
		}
	case <-time.After(readyTimeout):
		t.Fatalf("%s not ready after %v\nlog:\n%s", b.name, readyTimeout, logTail(b.log))
	}
	return b
}

func (b *bgLazyr) errText() string { return testutil.ReadOutput(b.stderr) }

// signal sends sig to the lazyr process itself.
func (b *bgLazyr) signal(sig syscall.Signal) {
	b.t.Helper()
	if err := b.cmd.Process.Signal(sig); err != nil {
		b.t.Fatalf("signal %s: %v", b.name, err)
	}
}

// wait waits for lazyr to exit and returns its exit code.
func (b *bgLazyr) wait(timeout time.Duration) int {
	b.t.Helper()
	select {
	case <-b.done:
		return b.code
	case <-time.After(timeout):
		b.t.Fatalf("%s still running after %v\nlog:\n%s", b.name, timeout, logTail(b.log))
		return -1
	}
}

// requireExit waits for lazyr to exit with code want.
func (b *bgLazyr) requireExit(want int, timeout time.Duration) {
	b.t.Helper()
	if code := b.wait(timeout); code != want {
		b.t.Fatalf("%s exited %d, want %d\nstderr:\n%s\nlog:\n%s", b.name, code, want, b.errText(), logTail(b.log))
	}
}

// freePort returns a TCP port that was free on loopback a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// lazyr runs a foreground lazyr command (behind prefix, if any) with a verbose log and fails the test
// if it fails.
func lazyr(t *testing.T, prefix []string, args ...string) {
	t.Helper()
	_, stderr, code := lazyrCode(t, prefix, args...)
	if code != 0 {
		t.Fatalf("lazyr %s: exit %d\nstderr:\n%s", strings.Join(args, " "), code, stderr)
	}
}

// lazyrCode runs lazyr like lazyr does and returns its output and exit code; the log (-o) is appended
// to stderr.
func lazyrCode(t *testing.T, prefix []string, args ...string) (string, string, int) {
	t.Helper()
	log := filepath.Join(t.TempDir(), "lazyr.log")
	args = append(args, "-o", log, "-v", "4")
	opts := testutil.LazyrOptions{}
	if len(prefix) > 0 {
		opts.Binary = prefix[0]
		args = append(append(append([]string{}, prefix[1:]...), testutil.BuildLazyr(t)), args...)
	}
	stdout, stderr, code := testutil.LazyrWith(t, opts, args...)
	return stdout, stderr + "\nlog:\n" + logTail(log), code
}

// lazyPagesStats waits for the statistics a finished lazy-pages daemon leaves in its work dir.
func lazyPagesStats(t *testing.T, work string) *lazypages.Stats {
	t.Helper()
	path := filepath.Join(work, "lazy-pages-stats.json")
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			st := &lazypages.Stats{}
			if err = json.Unmarshal(b, st); err == nil {
				return st
			}
			// The daemon writes the file in place: it may be half written yet.
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lazy-pages daemon did not finish (%s: %v)", path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// requireFetchedImages checks an images directory fetched by lazy-pages --page-server: complete
// (inventory), the pagemap of pid there, and at least lazyPages pages left to the page server (PE_LAZY
// without data), with at most maxPages pages stored locally.
func requireFetchedImages(t *testing.T, dir string, pid int, lazyPages, maxPages uint64) {
	t.Helper()
	d, err := images.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if !d.Exists(images.InventoryName) {
		t.Fatalf("%s: no inventory", dir)
	}
	pm, err := d.ReadPagemap(pid)
	if err != nil {
		t.Fatal(err)
	}
	var lazy uint64
	for _, e := range pm.Extents {
		if e.Flags&images.PELazy != 0 {
			if e.Present() {
				t.Fatalf("%s: lazy pages at %#x stored locally (flags %#x)", dir, e.Vaddr, e.Flags)
			}
			lazy += e.NrPages
		}
	}
	if lazy < lazyPages || pm.TotalPages() > maxPages {
		t.Fatalf("%s: %d lazy pages (want >= %d), %d stored (want <= %d)", dir, lazy, lazyPages, pm.TotalPages(), maxPages)
	}
}

// startPidnsVictim starts bin as the init of a new PID namespace (unshare -pf, behind prefix if given)
// and returns the victim (unshare, whose child it is) and bin's pid as lazyr sees it. unshare's own
// stderr goes to /dev/null: it shares the victim's open output file, and a message it prints when bin
// dies (late, in a migration: only once the destination runs) would overwrite the restored victim's
// lines at the same offset. The victims print to fd 1 only.
func startPidnsVictim(t *testing.T, prefix []string, bin string, args ...string) (*testutil.Victim, int) {
	t.Helper()
	cmd := append(append([]string{}, prefix...), "sh", "-c", `exec unshare -pf "$@" 2>/dev/null`, "sh", bin)
	v := testutil.StartVictim(t, cmd[0], append(cmd[1:], args...)...)
	return v, childOf(t, v.Pid)
}

// childOf waits for the first child of pid (the real victim behind unshare) and returns it.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	deadline := time.Now().Add(outputTimeout)
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if f := strings.Fields(string(b)); len(f) > 0 {
			c, err := strconv.Atoi(f[0])
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d has no child", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sigBlk returns the blocked-signal mask of pid (/proc/PID/status SigBlk).
func sigBlk(t *testing.T, pid int) string { return procStatusField(t, pid, "SigBlk") }

var nsSeq atomic.Int64

// netnsPair makes two network namespaces (named, under /run/netns) joined by a veth pair, addresses
// srcAddr and dstAddr, and returns the nsenter prefixes that run a command in each. They are deleted
// when the test ends.
func netnsPair(t *testing.T) (src, dst []string, srcNS, dstNS string) {
	t.Helper()
	n := nsSeq.Add(1)
	srcNS = fmt.Sprintf("lzr-mig-s%d-%d", os.Getpid(), n)
	dstNS = fmt.Sprintf("lzr-mig-d%d-%d", os.Getpid(), n)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", srcNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", srcNS).Run() })
	run("netns", "add", dstNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", dstNS).Run() })
	run("link", "add", "lzr-mig-s", "netns", srcNS, "type", "veth", "peer", "name", "lzr-mig-d", "netns", dstNS)
	run("-n", srcNS, "addr", "add", srcAddr+"/24", "dev", "lzr-mig-s")
	run("-n", dstNS, "addr", "add", dstAddr+"/24", "dev", "lzr-mig-d")
	for _, ns := range []string{srcNS, dstNS} {
		run("-n", ns, "link", "set", "lo", "up")
	}
	run("-n", srcNS, "link", "set", "lzr-mig-s", "up")
	run("-n", dstNS, "link", "set", "lzr-mig-d", "up")
	in := func(ns string) []string { return []string{"nsenter", "--net=/run/netns/" + ns, "--"} }
	return in(srcNS), in(dstNS), srcNS, dstNS
}

// sameNetns reports whether pid is in the named network namespace.
func sameNetns(t *testing.T, pid int, ns string) bool {
	t.Helper()
	var a, b unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat("/run/netns/"+ns, &b); err != nil {
		t.Fatal(err)
	}
	return a.Ino == b.Ino && a.Dev == b.Dev
}

// pki is a throwaway CA with a server and a client certificate for the TLS tests.
type pki struct {
	dir                   string
	ca, cert, key         string // the CA; the server's certificate and key
	clientCert, clientKey string
	rogueCert, rogueKey   string // a client certificate another CA signed
	caCert, rogueCA       *x509.Certificate
	caKey, rogueCAKey     *ecdsa.PrivateKey
	serial                int64
	ips                   []net.IP
}

func newPKI(t *testing.T, ips ...string) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	for _, s := range ips {
		p.ips = append(p.ips, net.ParseIP(s))
	}
	var der []byte
	p.caKey, der, p.caCert = p.issue(t, "lazyr test CA", nil, nil, true)
	p.ca = p.writePEM(t, "ca.pem", "CERTIFICATE", der)
	key, der, _ := p.issue(t, "page server", p.caCert, p.caKey, false)
	p.cert, p.key = p.writePEM(t, "server.pem", "CERTIFICATE", der), p.writeKey(t, "server.key", key)
	key, der, _ = p.issue(t, "lazy-pages", p.caCert, p.caKey, false)
	p.clientCert, p.clientKey = p.writePEM(t, "client.pem", "CERTIFICATE", der), p.writeKey(t, "client.key", key)
	p.rogueCAKey, _, p.rogueCA = p.issue(t, "someone else's CA", nil, nil, true)
	key, der, _ = p.issue(t, "intruder", p.rogueCA, p.rogueCAKey, false)
	p.rogueCert, p.rogueKey = p.writePEM(t, "rogue.pem", "CERTIFICATE", der), p.writeKey(t, "rogue.key", key)
	return p
}

// issue makes a key and a certificate signed by parent (self-signed if nil), valid for p.ips.
func (p *pki) issue(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool) (*ecdsa.PrivateKey, []byte, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  p.ips,
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, der, cert
}

func (p *pki) writePEM(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (p *pki) writeKey(t *testing.T, name string, key *ecdsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p.writePEM(t, name, "EC PRIVATE KEY", der)
}

// serverArgs and clientArgs are the TLS flags of each side.
func (p *pki) serverArgs() []string {
	return []string{"--tls", "--tls-cacert", p.ca, "--tls-cert", p.cert, "--tls-key", p.key}
}

func (p *pki) clientArgs() []string {
	return []string{"--tls", "--tls-cacert", p.ca, "--tls-cert", p.clientCert, "--tls-key", p.clientKey}
}

// writeTrigger gives a waiting bigmem victim its reading order. Renamed into place: bigmem polls for the
// name and reads the file at once, and must never see it empty.
func writeTrigger(t *testing.T, path, order string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(order), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}
