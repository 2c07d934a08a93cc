package netlock

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// privateBPFFS mounts a BPF filesystem of the test's own on a temporary directory (every bpffs mount is a
// separate instance), unmounted at the end of the test.
func privateBPFFS(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bpffs")
	if err := MountBPFFS(dir); err != nil {
		t.Fatalf("MountBPFFS: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func TestMountBPFFS(t *testing.T) {
	dir := privateBPFFS(t)
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Type != unix.BPF_FS_MAGIC {
		t.Fatalf("%s: statfs type %#x (%v), want bpffs %#x", dir, st.Type, err, unix.BPF_FS_MAGIC)
	}
	// A second call finds the mount and does not stack another one on it.
	if err := MountBPFFS(dir); err != nil {
		t.Fatalf("second MountBPFFS: %v", err)
	}
	if err := unix.Unmount(dir, 0); err != nil {
		t.Fatalf("unmount: %v", err)
	}
	if err := unix.Statfs(dir, &st); err != nil || st.Type == unix.BPF_FS_MAGIC {
		t.Errorf("after one unmount %s is still a bpffs (type %#x, %v): MountBPFFS mounted twice", dir, st.Type, err)
	}
	// Remount so that the cleanup's unmount has something to do.
	if err := MountBPFFS(dir); err != nil {
		t.Fatal(err)
	}
}

// A pinned lock survives Close (the process letting go of every descriptor), is found again by
// LoadPinned, and its Release removes every pin and object.
func TestPinSurvivesClose(t *testing.T) {
	enterNetns(t)
	pins := filepath.Join(privateBPFFS(t), "lock")
	_, cli, srv := tcpPair(t, netip.MustParseAddr("127.0.0.1"), nil)
	before := bpfFDs(t)
	c := Conn{Local: localAddr(t, srv), Remote: peerAddr(t, srv)}
	l, err := New(Options{Conns: []Conn{c}, Interfaces: []string{"lo"}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ids := objectIDs(t, l)
	if err := l.Pin(pins); err != nil {
		l.Release()
		t.Fatalf("Pin: %v", err)
	}
	if got := l.PinDir(); got != pins {
		t.Errorf("PinDir() = %q, want %q", got, pins)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if after := bpfFDs(t); !slices.Equal(before, after) {
		t.Errorf("BPF descriptors before New %v, after Close %v", before, after)
	}

	send(t, cli, []byte("held"))
	if got := recvWithin(t, srv, quiet); got != nil {
		t.Fatalf("server received %q although the pinned lock should hold", got)
	}

	l2, err := LoadPinned(pins)
	if err != nil {
		t.Fatalf("LoadPinned: %v", err)
	}
	if n, err := l2.Dropped(); err != nil || n == 0 {
		t.Errorf("Dropped() on the loaded lock = %d, %v; want > 0", n, err)
	}
	// The loaded lock is a full lock: connections can be added and removed.
	if err := l2.Add(c); err != nil {
		t.Errorf("Add on the loaded lock: %v", err)
	}
	if err := l2.Release(); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if _, err := os.Stat(pins); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pin directory after Release: %v, want it gone", err)
	}
	if got := recvWithin(t, srv, recovery); string(got) != "held" {
		t.Errorf("after Release: got %q, want held", got)
	}
	healthy(t, cli, "client")
	healthy(t, srv, "server")
	objectsGone(t, ids)
	if after := bpfFDs(t); !slices.Equal(before, after) {
		t.Errorf("BPF descriptors before New %v, after Release %v", before, after)
	}
	if _, err := LoadPinned(pins); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadPinned after Release: %v, want fs.ErrNotExist", err)
	}
}

// Pinning outside a BPF filesystem fails and leaves nothing behind; the lock itself keeps working.
func TestPinFailureCleansUp(t *testing.T) {
	enterNetns(t)
	_, cli, srv := tcpPair(t, netip.MustParseAddr("127.0.0.1"), nil)
	l, err := New(Options{Conns: []Conn{{Local: localAddr(t, srv), Remote: peerAddr(t, srv)}}, Interfaces: []string{"lo"}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer l.Release()
	dir := filepath.Join(t.TempDir(), "not-bpffs")
	if err := l.Pin(dir); err == nil {
		t.Fatal("Pin on a non-BPF filesystem succeeded")
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pin directory after the failed Pin: %v, want it removed", err)
	}
	if l.PinDir() != "" {
		t.Errorf("PinDir() = %q after a failed Pin", l.PinDir())
	}
	send(t, cli, []byte("x"))
	if got := recvWithin(t, srv, quiet); got != nil {
		t.Fatalf("lock let %q through after a failed Pin", got)
	}
	// Close on an unpinned lock releases it.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := recvWithin(t, srv, recovery); string(got) != "x" {
		t.Errorf("after Close of an unpinned lock: got %q, want x", got)
	}
}

// A pinned lock can be pinned only once, and a second lock cannot take the same directory.
func TestPinTwice(t *testing.T) {
	enterNetns(t)
	root := privateBPFFS(t)
	dir := filepath.Join(root, "lock")
	a, err := New(Options{Interfaces: []string{"lo"}, MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	b, err := New(Options{Interfaces: []string{"lo"}, MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	if err := a.Pin(dir); err != nil {
		t.Fatal(err)
	}
	if err := a.Pin(filepath.Join(root, "other")); err == nil {
		t.Error("second Pin of the same lock succeeded")
	}
	if err := b.Pin(dir); err == nil {
		t.Error("Pin into a directory that holds a lock succeeded")
	}
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, filepath.Join(root, "other")} {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after Release: %v, want it gone", d, err)
		}
	}
}

// Clear lets traffic through at once while the programs stay attached until Release.
func TestClear(t *testing.T) {
	enterNetns(t)
	_, cli, srv := tcpPair(t, netip.MustParseAddr("127.0.0.1"), nil)
	_, cli2, srv2 := tcpPair(t, netip.MustParseAddr("127.0.0.1"), nil)
	l, err := New(Options{
		Conns:      []Conn{{Local: localAddr(t, srv), Remote: peerAddr(t, srv)}},
		LocalPorts: []uint16{localAddr(t, srv2).Port()},
		Interfaces: []string{"lo"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	ids := objectIDs(t, l)
	send(t, cli, []byte("a"))
	send(t, cli2, []byte("b"))
	if got := recvWithin(t, srv, quiet); got != nil {
		t.Fatalf("locked connection received %q", got)
	}
	if err := l.Clear(); err != nil {
		t.Fatal(err)
	}
	if got := recvWithin(t, srv, recovery); string(got) != "a" {
		t.Errorf("connection after Clear: %q, want a", got)
	}
	if got := recvWithin(t, srv2, recovery); string(got) != "b" {
		t.Errorf("port after Clear: %q, want b", got)
	}
	for _, id := range ids.links {
		lk, err := link.NewFromID(id)
		if err != nil {
			t.Errorf("link %d gone after Clear: %v", id, err)
			continue
		}
		lk.Close()
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	objectsGone(t, ids)
	if err := l.Clear(); !errors.Is(err, ErrReleased) {
		t.Errorf("Clear after Release: %v, want ErrReleased", err)
	}
}
