package uffd

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// featureInitialized is the kernel-internal bit (UFFD_FEATURE_INITIALIZED)
// that fdinfo shows once the API handshake is done.
const featureInitialized = 1 << 31

// Enabled reads the fd's state from /proc/self/fdinfo: whether the API
// handshake was done and which features it enabled. It lets a process that
// received a userfaultfd from elsewhere check what it was given.
func (u *FD) Enabled() (features uint64, handshakeDone bool, err error) {
	p := "/proc/self/fdinfo/" + strconv.Itoa(u.fd)
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, false, fmt.Errorf("userfaultfd state: %w", err)
	}
	return parseFdinfo(b)
}

// parseFdinfo extracts the features from the "API:\t<api>:<features>:<ioctls>"
// line (all hex) that userfaultfd_show_fdinfo prints.
func parseFdinfo(b []byte) (features uint64, handshakeDone bool, err error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("API:"))
		if !ok {
			continue
		}
		f := bytes.Split(bytes.TrimSpace(rest), []byte(":"))
		if len(f) != 3 {
			return 0, false, fmt.Errorf("userfaultfd fdinfo: malformed API line %q", sc.Bytes())
		}
		v, err := strconv.ParseUint(string(f[1]), 16, 64)
		if err != nil {
			return 0, false, fmt.Errorf("userfaultfd fdinfo: features %q: %w", f[1], err)
		}
		return v &^ featureInitialized, v&featureInitialized != 0, nil
	}
	return 0, false, fmt.Errorf("userfaultfd fdinfo: no API line (not a userfaultfd?)")
}
