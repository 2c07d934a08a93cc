package testutil

import (
	"os"
	"testing"
)

// RequireRoot skips the test when not running as root. Checkpoint and
// restore need ptrace over the victims, exact PIDs (clone3 set_tid needs
// CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE) and userfaultfd. CI runs as root,
// so nothing skips there.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("needs root (euid is %d): checkpoint/restore needs ptrace over other processes, exact PIDs and userfaultfd", os.Geteuid())
	}
}
