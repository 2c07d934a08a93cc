package kernel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

const childEnv = "LAZYR_KERNEL_PROBE_CHILD"

// TestProbeUnprivileged runs Probe as user nobody (no capabilities) in a copy
// of this test binary, to see the error paths a non-root `lazyr check` takes:
// each failure must say ErrNotSupported and keep the errno that explains it.
func TestProbeUnprivileged(t *testing.T) {
	if os.Getenv(childEnv) == "1" {
		for _, f := range Probe() {
			fmt.Printf("%s|%v|%v|%v\n", f.Name, f.Err == nil, errors.Is(f.Err, ErrNotSupported), errors.Is(f.Err, unix.EPERM))
		}
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch to user nobody")
	}
	// The go test binary lives in a 0700 work dir: copy it where nobody
	// can run it.
	dir, err := os.MkdirTemp("", "lazyr-kernel-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "kernel.test")
	if err := copyFile(os.Args[0], bin); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestProbeUnprivileged$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}

	type result struct{ ok, notSupported, eperm bool }
	got := map[string]result{}
	s := bufio.NewScanner(bytes.NewReader(out))
	for s.Scan() {
		f := strings.Split(s.Text(), "|")
		if len(f) != 4 {
			continue
		}
		got[f[0]] = result{f[1] == "true", f[2] == "true", f[3] == "true"}
	}
	t.Logf("as nobody: %v", got)
	if len(got) != 15 {
		t.Fatalf("child reported %d features:\n%s", len(got), out)
	}
	for name, r := range got {
		if !r.ok && !r.notSupported {
			t.Errorf("%s failed without wrapping ErrNotSupported", name)
		}
	}
	// Same uid, own child, own memory: these need no privilege.
	for _, n := range []string{"ptrace", "pidfd_getfd", "pagemap_scan"} {
		if !got[n].ok {
			t.Errorf("%s failed as nobody", n)
		}
	}
	// These need a capability nobody lacks, and must say EPERM.
	// (userfaultfd: vm.unprivileged_userfaultfd=0 and /dev/userfaultfd is
	// root's 0600; bpf: kernel.unprivileged_bpf_disabled=2.)
	for _, n := range []string{"clone3_set_tid", "tcp_repair", "userfaultfd", "bpf"} {
		if r := got[n]; r.ok || !r.notSupported || !r.eperm {
			t.Errorf("%s as nobody: %+v, want not supported with EPERM", n, r)
		}
	}
	if r := got["uffd_event_fork"]; r.ok || !r.notSupported {
		t.Errorf("uffd_event_fork without a userfaultfd: %+v", r)
	}
}

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}
