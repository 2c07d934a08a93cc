package uffd

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// MissingFeaturesError is returned by API when the kernel does not offer
// some of the requested features. Err is the errno of the failed handshake.
type MissingFeaturesError struct {
	Requested uint64
	Missing   uint64
	Err       error
}

func (e *MissingFeaturesError) Error() string {
	return fmt.Sprintf("UFFDIO_API: kernel lacks features %s (requested %s): %v",
		FeatureNames(e.Missing), FeatureNames(e.Requested), e.Err)
}

func (e *MissingFeaturesError) Unwrap() error { return e.Err }

// ErrUnknownEvent is returned when decoding a uffd_msg with an event code
// this package does not know.
var ErrUnknownEvent = errors.New("uffd: unknown event")

// apiError explains a failed UFFDIO_API. The kernel zeroes the reply on
// failure, so the supported set is probed on a fresh fd.
func apiError(requested uint64, errno error) error {
	if errors.Is(errno, unix.EINVAL) || errors.Is(errno, unix.EPERM) {
		supported, _, err := SupportedFeatures()
		if err == nil {
			if missing := requested &^ supported; missing != 0 {
				return &MissingFeaturesError{Requested: requested, Missing: missing, Err: errno}
			}
		}
	}
	switch {
	case errors.Is(errno, unix.EPERM) && requested&FeatureEventFork != 0:
		return fmt.Errorf("UFFDIO_API: EVENT_FORK needs CAP_SYS_PTRACE: %w", errno)
	case errors.Is(errno, unix.EINVAL):
		// The handshake can succeed only once per fd.
		return fmt.Errorf("UFFDIO_API (features %s): already done on this fd, or bad request: %w",
			FeatureNames(requested), errno)
	}
	return fmt.Errorf("UFFDIO_API (features %s): %w", FeatureNames(requested), errno)
}

// SupportedFeatures reports what UFFDIO_API offers on this kernel, using a
// throw-away userfaultfd.
func SupportedFeatures() (features, ioctls uint64, err error) {
	u, err := New(unix.O_CLOEXEC)
	if err != nil {
		return 0, 0, err
	}
	defer u.Close()
	return u.API(0)
}
