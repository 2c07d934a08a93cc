package sys

import (
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/internal/testutil"
)

func TestIPCStructSizes(t *testing.T) {
	// struct msqid64_ds and struct semid64_ds on x86-64.
	if n := unsafe.Sizeof(MsqidDS{}); n != 120 {
		t.Errorf("MsqidDS is %d bytes, want 120", n)
	}
	if n := unsafe.Sizeof(SemidDS{}); n != 104 {
		t.Errorf("SemidDS is %d bytes, want 104", n)
	}
}

// TestIPCObjects: message queues and semaphore sets through the raw calls, in a namespace of their own:
// MSG_COPY leaves messages queued, the *_STAT-by-index walks find the objects.
func TestIPCObjects(t *testing.T) {
	testutil.InPrivateIPCNS(t, func() {
		if n, err := MsgMaxIndex(); err != nil || n != -1 && n != 0 {
			t.Errorf("MsgMaxIndex of an empty namespace: %d, %v", n, err)
		}
		q, err := MsgGet(0x1234, unix.IPC_CREAT|0o600)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range []string{"one", "second"} {
			if err := MsgSend(q, uint64(i+5), []byte(m), unix.IPC_NOWAIT); err != nil {
				t.Fatal(err)
			}
		}
		var ds MsqidDS
		id, err := MsgCtl(0, MsgStat, &ds)
		if err != nil || id != q || ds.Qnum != 2 || ds.Cbytes != 9 || ds.Perm.Key != 0x1234 {
			t.Errorf("MSG_STAT: id %d (%v), %+v", id, err, ds)
		}
		for i := 0; i < 2; i++ {
			typ, data, err := MsgCopyAt(q, i, int(ds.Cbytes))
			if err != nil || typ != uint64(i+5) || string(data) != []string{"one", "second"}[i] {
				t.Errorf("MsgCopyAt %d: %d %q %v", i, typ, data, err)
			}
		}
		if _, _, err := MsgCopyAt(q, 2, 10); !errors.Is(err, unix.ENOMSG) {
			t.Errorf("MsgCopyAt past the end: %v, want ENOMSG", err)
		}
		s, err := SemGet(0x4321, 3, unix.IPC_CREAT|0o600)
		if err != nil {
			t.Fatal(err)
		}
		if err := SemSetAll(s, []uint16{3, 0, 7}); err != nil {
			t.Fatal(err)
		}
		var sds SemidDS
		if id, err := SemCtl(0, SemStat, &sds); err != nil || id != s || sds.Nsems != 3 {
			t.Errorf("SEM_STAT: id %d (%v), %+v", id, err, sds)
		}
		vals := make([]uint16, 3)
		if err := SemGetAll(s, vals); err != nil || vals[0] != 3 || vals[2] != 7 {
			t.Errorf("SemGetAll: %v %v", vals, err)
		}
		if n, err := SemMaxIndex(); err != nil || n != 0 {
			t.Errorf("SemMaxIndex: %d, %v", n, err)
		}
		shm, err := unix.SysvShmGet(unix.IPC_PRIVATE, 3*4096, unix.IPC_CREAT|0o600)
		if err != nil {
			t.Fatal(err)
		}
		b, err := unix.SysvShmAttach(shm, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.SysvShmDetach(b)
		b[2*4096] = 1
		vec := make([]byte, 3)
		if err := Mincore(b, vec); err != nil || vec[0]&1 != 0 || vec[2]&1 != 1 {
			t.Errorf("Mincore: %v %v, want only page 2 in memory", vec, err)
		}
		if n, err := ShmMaxIndex(); err != nil || n != 0 {
			t.Errorf("ShmMaxIndex: %d, %v", n, err)
		}
		if id, ds, err := ShmStatIndex(0); err != nil || id != shm || ds.Segsz != 3*4096 {
			t.Errorf("ShmStatIndex: %d %v %v", id, ds, err)
		}
		if ShmAddr(b) == 0 {
			t.Error("ShmAddr of an attach is 0")
		}
	})
}

// TestInNamespaceOf: fn runs in the target's IPC namespace, on a thread of its own that the caller's
// goroutine does not share, and on the caller's thread for lazyr's own namespace.
func TestInNamespaceOf(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (setns)")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Readlink("/proc/thread-self/ns/ipc")
	if err != nil {
		t.Fatal(err)
	}
	if err := InNamespaceOf(unix.Gettid(), "ipc", func() error {
		got, _ := os.Readlink("/proc/thread-self/ns/ipc")
		if got != self {
			t.Errorf("own namespace: ran in %s, want %s", got, self)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A thread of this process in a fresh namespace stands for the target.
	ready, release := make(chan int), make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		if err := unix.Unshare(unix.CLONE_NEWIPC); err != nil {
			t.Errorf("unshare: %v", err)
			close(ready)
			return
		}
		ready <- unix.Gettid()
		<-release
	}()
	tid, ok := <-ready
	defer close(release)
	if !ok {
		return
	}
	want, _ := os.Readlink("/proc/" + itoa(tid) + "/ns/ipc")
	if want == self || !strings.HasPrefix(want, "ipc:") {
		t.Fatalf("fresh namespace %q", want)
	}
	if err := InNamespaceOf(tid, "ipc", func() error {
		got, _ := os.Readlink("/proc/thread-self/ns/ipc")
		if got != want {
			t.Errorf("ran in %s, want %s", got, want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.Readlink("/proc/thread-self/ns/ipc"); got != self {
		t.Errorf("caller's thread left in %s", got)
	}
	if err := InNamespaceOf(tid, "mnt", func() error { return nil }); !errors.Is(err, unix.EINVAL) {
		t.Errorf("mount namespace: %v, want EINVAL", err)
	}
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
