package kernel

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/lazyr/lazyr/internal/procfs"
	"golang.org/x/sys/unix"
)

// ProbeClone3SetTid checks what clone3(2) with set_tid needs: the ABI
// (Linux 5.5+), CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN in the effective
// set, and /proc/sys/kernel/ns_last_pid (CONFIG_CHECKPOINT_RESTORE). It never
// creates a task: Go must not fork with a raw clone3.
func ProbeClone3SetTid() error {
	st, err := procfs.ReadStatus(os.Getpid())
	if err != nil {
		return fmt.Errorf("clone3 set_tid: %w", err)
	}
	const need = 1<<unix.CAP_CHECKPOINT_RESTORE | 1<<unix.CAP_SYS_ADMIN
	if st.CapEff&need == 0 {
		return missing("clone3 set_tid: needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN in the effective set", unix.EPERM)
	}
	if _, err := os.Stat("/proc/sys/kernel/ns_last_pid"); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return missing("clone3 set_tid: /proc/sys/kernel/ns_last_pid is missing (CONFIG_CHECKPOINT_RESTORE off)", unix.ENOENT)
		}
		return fmt.Errorf("clone3 set_tid: %w", err)
	}
	return clone3SetTidABI()
}
