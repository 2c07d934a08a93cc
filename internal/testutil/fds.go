package testutil

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ignoredFdTargets are descriptors the Go runtime opens lazily on first use
// (the netpoller's epoll fd and its wakeup eventfd): they appear during the
// tests without being leaks.
var ignoredFdTargets = map[string]bool{
	"anon_inode:[eventpoll]": true,
	"anon_inode:[eventfd]":   true,
}

// openFds maps each open fd of this process to what it points to.
func openFds() (map[int]string, error) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return nil, fmt.Errorf("open /proc/self/fd: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list /proc/self/fd: %w", err)
	}
	fds := make(map[int]string, len(names))
	for _, n := range names {
		fd, err := strconv.Atoi(n)
		if err != nil || uintptr(fd) == d.Fd() {
			continue
		}
		target, err := os.Readlink("/proc/self/fd/" + n)
		if err != nil {
			continue // closed meanwhile
		}
		fds[fd] = target
	}
	return fds, nil
}

// leakedFds lists fds open now that were not open in before (or now point
// somewhere else), minus the runtime's own.
func leakedFds(before map[int]string) ([]string, error) {
	now, err := openFds()
	if err != nil {
		return nil, err
	}
	var leaks []string
	for fd, target := range now {
		if before[fd] == target || ignoredFdTargets[target] {
			continue
		}
		leaks = append(leaks, fmt.Sprintf("fd %d -> %s", fd, target))
	}
	sort.Strings(leaks)
	return leaks, nil
}

// CheckNoLeakedFds runs the tests and fails the run if they left file
// descriptors open (a pidfd of an unreaped process, an image file, a uffd).
// It also removes the lazyr binary BuildLazyr built. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(testutil.CheckNoLeakedFds(m)) }
func CheckNoLeakedFds(m *testing.M) int {
	before, err := openFds()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testutil:", err)
		return 1
	}
	code := m.Run()
	defer removeLazyrBuild()
	// Reaper goroutines close their pidfds a moment after the process is
	// gone; give stragglers a little time before calling it a leak.
	var leaks []string
	for i := 0; i < 50; i++ {
		leaks, err = leakedFds(before)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testutil:", err)
			return 1
		}
		if len(leaks) == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(leaks) > 0 {
		fmt.Fprintf(os.Stderr, "testutil: tests leaked %d file descriptors:\n\t%s\n", len(leaks), strings.Join(leaks, "\n\t"))
		if code == 0 {
			code = 1
		}
	}
	return code
}
