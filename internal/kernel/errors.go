package kernel

import (
	"errors"
	"fmt"
)

// ErrNotSupported is wrapped by every probe error that means "this kernel (or
// this process's privileges) does not offer the feature".
var ErrNotSupported = errors.New("not supported")

// missing returns an error saying what is missing and why, wrapping
// ErrNotSupported and, if not nil, the errno.
func missing(what string, errno error) error {
	if errno == nil {
		return fmt.Errorf("%s: %w", what, ErrNotSupported)
	}
	return fmt.Errorf("%s: %w: %w", what, ErrNotSupported, errno)
}
