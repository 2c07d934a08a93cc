package netlock

import "errors"

// ErrNotSupported matches every UnsupportedError.
var ErrNotSupported = errors.New("BPF not supported")

// UnsupportedError says that the kernel (or the caller's privileges) cannot provide a BPF feature the lock
// needs. Err keeps the underlying error and its errno: errors.Is(err, unix.EPERM) works.
type UnsupportedError struct {
	Feature string // what was needed, e.g. "tcx links (Linux 6.6+)"
	Err     error
}

func (e *UnsupportedError) Error() string {
	return "BPF not supported: " + e.Feature + ": " + e.Err.Error()
}

func (e *UnsupportedError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrNotSupported) true for every UnsupportedError.
func (e *UnsupportedError) Is(target error) bool { return target == ErrNotSupported }
