package sys

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// nsTypes are the namespaces a single thread of a multi-threaded process can join (nsproxy is per
// thread); user and mount namespaces cannot be joined that way.
var nsTypes = map[string]int{"ipc": unix.CLONE_NEWIPC, "net": unix.CLONE_NEWNET, "uts": unix.CLONE_NEWUTS}

// SameNamespace reports whether pid is in the calling thread's namespace of the given kind ("ipc",
// "net", "uts", ...).
// Preconditions: the caller is locked to its OS thread if that thread may be in another namespace than
// the rest of the process.
func SameNamespace(pid int, kind string) (bool, error) {
	var self, target unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/"+kind, &self); err != nil {
		return false, fmt.Errorf("%s namespace of lazyr: %w", kind, err)
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, kind), &target); err != nil {
		return false, fmt.Errorf("%s namespace of %d: %w", kind, pid, err)
	}
	return self.Dev == target.Dev && self.Ino == target.Ino, nil
}

// InNamespaceOf runs fn in pid's namespace of the given kind ("ipc", "net" or "uts"): on the calling
// thread when it is in that namespace already, else on a thread of its own that joins the namespace with
// setns, locked to fn's goroutine, and goes back to its own namespace afterwards (if it cannot, it stays
// locked and exits with the goroutine), so that no other goroutine ever runs in the wrong namespace and
// the main thread, which the runtime never lets exit, is never left behind in it. Whatever fn does that
// lasts beyond the call (a mapping, an fd) belongs to the whole process as usual.
func InNamespaceOf(pid int, kind string, fn func() error) error {
	nstype, ok := nsTypes[kind]
	if !ok {
		return fmt.Errorf("joining a %s namespace from one thread: %w", kind, unix.EINVAL)
	}
	// Locked while comparing and running, so that fn runs on the thread that was compared (a caller may
	// itself be a locked thread in another namespace than the rest of the process).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	same, err := SameNamespace(pid, kind)
	if err != nil {
		return err
	}
	if same {
		return fn()
	}
	ns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, kind), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s namespace of %d: %w", kind, pid, err)
	}
	defer unix.Close(ns)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // unlocked only once the thread is back in its own namespace
		orig, err := unix.Open("/proc/thread-self/ns/"+kind, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("%s namespace of lazyr: %w", kind, err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(ns, nstype); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter the %s namespace of %d: %w", kind, pid, err)
			return
		}
		err = fn()
		if unix.Setns(orig, nstype) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}
