package procfs

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startSleep starts /bin/sleep through a symlink called name (which becomes
// its comm) in directory dir, and kills and reaps it at the end of the test.
func startSleep(t *testing.T, name, dir string) *exec.Cmd {
	t.Helper()
	bin := "/bin/sleep"
	if name != "" {
		bin = filepath.Join(t.TempDir(), name)
		if err := os.Symlink("/bin/sleep", bin); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "1000")
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	waitExec(t, cmd.Process.Pid)
	return cmd
}

// waitExec waits until pid sleeps in (clock_)nanosleep. exec.Cmd.Start
// returns when the exec has passed the point of no return, which is before
// the new binary is mapped, and /proc/PID/exe changes before that too: only
// the syscall the new program blocks in says it is fully there.
func waitExec(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(path(pid, "syscall"))
		if err == nil && (strings.HasPrefix(string(b), strconv.Itoa(unix.SYS_CLOCK_NANOSLEEP)+" ") ||
			strings.HasPrefix(string(b), strconv.Itoa(unix.SYS_NANOSLEEP)+" ")) {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("pid %d never reached its sleep", pid)
}

// deadPid returns a PID that has no /proc entry.
func deadPid(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if _, err := os.Stat(path(pid, "")); !errors.Is(err, fs.ErrNotExist) {
		t.Skipf("pid %d was reused already", pid)
	}
	return pid
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN) for this check")
	}
}
