package testutil

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

var cloexecOnce struct {
	once sync.Once
	err  error
}

// closeInheritedOnExec marks every fd >= 3 of the test process close-on-exec.
// Go opens its own fds with O_CLOEXEC, but fds the test binary inherited
// without it (from a shell, a CI runner, `go test` itself) would otherwise
// leak into every victim and into lazyr: a victim must hold exactly the fds
// it opened, or a dump sees stray pipes and sockets it is not about.
func closeInheritedOnExec() error {
	o := &cloexecOnce
	o.once.Do(func() {
		if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
			o.err = fmt.Errorf("close_range(3, ~0, CLOSE_RANGE_CLOEXEC): %w", err)
		}
	})
	return o.err
}
