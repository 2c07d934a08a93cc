package procfs

import (
	"errors"
	"fmt"
	"os"
	"strconv"
)

// ErrMalformed is wrapped by every error that comes from text the parsers do
// not understand (as opposed to errors opening or reading the file).
var ErrMalformed = errors.New("procfs: malformed data")

// path returns /proc/PID/<name>.
func path(pid int, name string) string {
	return "/proc/" + strconv.Itoa(pid) + "/" + name
}

// taskPath returns /proc/PID/task/TID/<name>.
func taskPath(pid, tid int, name string) string {
	return "/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/" + name
}

// readFile reads a whole /proc file. os.ReadFile copes with the size 0 that
// procfs reports for its files. The *fs.PathError it returns already names
// the file and keeps the errno.
func readFile(p string) ([]byte, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("procfs: %w", err)
	}
	return b, nil
}

// readLink is os.Readlink with the package's error prefix.
func readLink(p string) (string, error) {
	s, err := os.Readlink(p)
	if err != nil {
		return "", fmt.Errorf("procfs: %w", err)
	}
	return s, nil
}

// malformed builds an ErrMalformed error with context; text is quoted.
func malformed(what string, detail any) error {
	switch detail.(type) {
	case string, []byte:
		return fmt.Errorf("%w: %s: %q", ErrMalformed, what, detail)
	}
	return fmt.Errorf("%w: %s: %v", ErrMalformed, what, detail)
}

// malformedErr is malformed with an underlying cause (a strconv error).
func malformedErr(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrMalformed, what, err)
}
