package dump

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// kindState returns the state an fd kind keeps in the file table under key, creating it on first use.
// Kinds keep what they learn about one fd for the others (socket peers, shared memory objects) there.
func kindState[T any](ft *fileTable, key string) *T {
	if ft.kinds == nil {
		ft.kinds = map[string]any{}
	}
	if s, ok := ft.kinds[key].(*T); ok {
		return s
	}
	s := new(T)
	ft.kinds[key] = s
	return s
}

// taskFile returns a duplicate of the task's fd in lazyr (pidfd_getfd): the same open file description,
// so ioctls and getsockopt see exactly the task's file. Anonymous-inode files and sockets cannot be
// reopened through /proc/PID/fd, which is why this is needed at all.
func taskFile(pid, fd int) (*os.File, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	nfd, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_getfd %d of %d: %w", fd, pid, err)
	}
	return os.NewFile(uintptr(nfd), fmt.Sprintf("fd %d of %d", fd, pid)), nil
}

// fdinfoValue returns the value of the first fdinfo line "key: value" (the kernel pads with spaces or a
// tab), trimmed, and whether it was there.
func fdinfoValue(lines []string, key string) (string, bool) {
	for _, l := range lines {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// fdinfoUint parses the value of key in the given base; a missing key is an error.
func fdinfoUint(lines []string, key string, base int) (uint64, error) {
	v, ok := fdinfoValue(lines, key)
	if !ok {
		return 0, fmt.Errorf("fdinfo has no %q line", key)
	}
	n, err := strconv.ParseUint(v, base, 64)
	if err != nil {
		return 0, fmt.Errorf("fdinfo %q: %w", key, err)
	}
	return n, nil
}

// fdinfoFields splits a line of "key:value" or "key: value" pairs ("tfd:  5 events: 19 ...",
// "inotify wd:2 ino:263 ...") into a map. A word without a colon that follows "key:" is its value;
// other words without a colon (a leading "inotify") are ignored.
func fdinfoFields(line string) map[string]string {
	out := map[string]string{}
	pending := ""
	for _, w := range strings.Fields(line) {
		k, v, ok := strings.Cut(w, ":")
		switch {
		case ok && v == "" && k != "":
			pending = k
		case ok && k != "":
			out[k] = v
			pending = ""
		case !ok && pending != "":
			out[pending] = w
			pending = ""
		}
	}
	return out
}

// fieldUint parses one value of fdinfoFields.
func fieldUint(f map[string]string, key string, base int) (uint64, error) {
	v, ok := f[key]
	if !ok {
		return 0, fmt.Errorf("no %q field", key)
	}
	n, err := strconv.ParseUint(v, base, 64)
	if err != nil {
		return 0, fmt.Errorf("field %q: %w", key, err)
	}
	return n, nil
}
