package testutil

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
)

// FailLine matches the line a victim prints when it finds its own state
// corrupted ("FAIL ..."). Every wait on output ends early when it appears.
var FailLine = regexp.MustCompile(`(?m)^FAIL.*$`)

// ErrFailLine is wrapped by wait errors caused by a FAIL line.
var ErrFailLine = errors.New("victim printed FAIL")

// ReadOutput returns the content of an output file ("" if it does not exist).
func ReadOutput(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}

// WaitOutputFile waits until re matches the content of the file at path and
// returns the first match with its submatches. It is for processes that are
// not children of the test (restored ones).
func WaitOutputFile(path string, re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	return waitOutput(path, re, timeout, nil)
}

// WaitPidOutput is WaitOutputFile that also gives up as soon as the process
// PID is gone or a zombie, instead of waiting for the timeout.
func WaitPidOutput(pid int, path string, re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	return waitOutput(path, re, timeout, func() error {
		if !PidAlive(pid) {
			return fmt.Errorf("pid %d is no longer running", pid)
		}
		return nil
	})
}

// waitOutput polls path until re matches. check, if not nil, is called when
// re did not match yet; an error from it ends the wait (after one last look
// at the file, since the process may have written and then exited).
func waitOutput(path string, re *regexp.Regexp, timeout time.Duration, check func() error) ([]string, error) {
	deadline := time.Now().Add(timeout)
	for {
		out := ReadOutput(path)
		if m := re.FindStringSubmatch(out); m != nil {
			return m, nil
		}
		if f := FailLine.FindString(out); f != "" {
			return nil, fmt.Errorf("%w while waiting for %q: %s\n%s", ErrFailLine, re, f, Tail(out, 20))
		}
		if check != nil {
			if err := check(); err != nil {
				out = ReadOutput(path)
				if m := re.FindStringSubmatch(out); m != nil {
					return m, nil
				}
				return nil, fmt.Errorf("waiting for %q in %s: %w\n%s", re, path, err, Tail(out, 20))
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no %q in %s after %v; output ends with:\n%s", re, path, timeout, Tail(out, 20))
		}
		time.Sleep(pollInterval)
	}
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
