package lazypages

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/lazyr/lazyr/internal/testutil"
)

var victimBin string

func TestMain(m *testing.M) {
	// The daemon re-executes this test binary as its guard.
	if IsGuard(os.Args) {
		os.Exit(GuardMain())
	}
	if os.Getenv(helperDaemonEnv) != "" {
		os.Exit(helperDaemon())
	}
	dir, err := os.MkdirTemp("", "lazypages-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	victimBin = filepath.Join(dir, "victim")
	if out, err := exec.Command("gcc", "-O2", "-Wall", "-pthread", "-o", victimBin, "testdata/victim.c").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the victim: %v\n%s", err, out)
		os.Exit(1)
	}
	code := testutil.CheckNoLeakedFds(m)
	os.RemoveAll(dir)
	os.Exit(code)
}
