package testutil

import (
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// InPrivateIPCNS runs f on a locked thread in a fresh IPC namespace, and puts the thread back into the
// test's namespace afterwards (if it cannot, the thread stays locked and ends with its goroutine).
func InPrivateIPCNS(t *testing.T, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (unshare CLONE_NEWIPC)")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/ipc", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Unshare(unix.CLONE_NEWIPC); err != nil {
			t.Errorf("unshare(CLONE_NEWIPC): %v", err)
			return
		}
		defer func() {
			if err := unix.Setns(orig, unix.CLONE_NEWIPC); err == nil {
				runtime.UnlockOSThread()
			}
		}()
		f()
	}()
	<-done
}
