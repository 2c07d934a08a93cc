package procfs

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestReadLimitsSelf(t *testing.T) {
	ls, err := ReadLimits(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != unix.RLIMIT_RTTIME+1 {
		t.Fatalf("%d limits, want %d", len(ls), unix.RLIMIT_RTTIME+1)
	}
	for r := range ls {
		var want unix.Rlimit
		if err := unix.Getrlimit(r, &want); err != nil {
			t.Fatal(err)
		}
		if ls[r].Cur != want.Cur || ls[r].Max != want.Max {
			t.Errorf("resource %d: got %+v, getrlimit %+v", r, ls[r], want)
		}
	}
}

func TestReadLimitsChild(t *testing.T) {
	cmd := startSleep(t, "", "")
	// Lower a limit of the child only, and see it in its limits file.
	want := unix.Rlimit{Cur: 12345, Max: 23456}
	if err := unix.Prlimit(cmd.Process.Pid, unix.RLIMIT_CORE, &want, nil); err != nil {
		t.Fatal(err)
	}
	ls, err := ReadLimits(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if ls[unix.RLIMIT_CORE] != (Limit{12345, 23456}) {
		t.Errorf("core limit %+v", ls[unix.RLIMIT_CORE])
	}
	if _, err := ReadLimits(deadPid(t)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dead pid: %v", err)
	}
}

func TestParseLimitsMissingRow(t *testing.T) {
	b, err := os.ReadFile("/proc/self/limits")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	var cut []string
	for _, l := range lines {
		if !strings.HasPrefix(l, "Max realtime timeout") {
			cut = append(cut, l)
		}
	}
	if _, err := parseLimits(strings.NewReader(strings.Join(cut, "\n"))); !errors.Is(err, ErrMalformed) {
		t.Errorf("missing row: err %v", err)
	}
	if _, err := parseLimits(strings.NewReader("Max cpu time  12 x seconds\n")); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad value: err %v", err)
	}
}
