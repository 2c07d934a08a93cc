package kernel

import (
	"fmt"
	"os/exec"
)

// startChild starts a short-lived /bin/sleep for the probes that need another
// process. The sleep bounds its life should the caller crash before
// stopChild. Stdin/out/err are /dev/null (os/exec's default).
func startChild() (*exec.Cmd, error) {
	cmd := exec.Command("/bin/sleep", "30")
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start /bin/sleep: %w", err)
	}
	return cmd, nil
}

// stopChild kills and reaps the child.
func stopChild(cmd *exec.Cmd) {
	cmd.Process.Kill()
	cmd.Wait()
}
