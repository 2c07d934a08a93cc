package procfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

const (
	atNull   = 0
	atPagesz = 6
	atUID    = 11
	atEntry  = 9
)

func auxvLookup(w []uint64, typ uint64) (uint64, bool) {
	for i := 0; i+1 < len(w); i += 2 {
		if w[i] == typ {
			return w[i+1], true
		}
	}
	return 0, false
}

func TestAuxv(t *testing.T) {
	w, err := Auxv(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if len(w) < 4 || len(w)%2 != 0 || w[len(w)-2] != atNull || w[len(w)-1] != 0 {
		t.Fatalf("auxv %v: want pairs ending in AT_NULL", w)
	}
	if v, ok := auxvLookup(w, atPagesz); !ok || v != uint64(os.Getpagesize()) {
		t.Errorf("AT_PAGESZ %d", v)
	}
	if v, ok := auxvLookup(w, atUID); !ok || v != uint64(os.Getuid()) {
		t.Errorf("AT_UID %d", v)
	}
	// AT_ENTRY of the child lies in the text of its binary.
	cmd := startSleep(t, "", "")
	cw, err := Auxv(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	entry, _ := auxvLookup(cw, atEntry)
	ms, err := Maps(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := Exe(cmd.Process.Pid)
	if m := findMapping(ms, entry); m == nil || !m.Exec || m.Path != exe {
		t.Errorf("AT_ENTRY %#x in %+v", entry, m)
	}
	if _, err := parseAuxv(make([]byte, 12)); !errors.Is(err, ErrMalformed) {
		t.Errorf("odd auxv: %v", err)
	}
}

func TestPersonality(t *testing.T) {
	want, _, e := unix.Syscall(unix.SYS_PERSONALITY, 0xffffffff, 0, 0) // query only
	if e != 0 {
		t.Fatal(e)
	}
	got, err := Personality(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if uint32(want) != got {
		t.Errorf("personality %#x, want %#x", got, want)
	}
}

func TestPathsAndComm(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cmd := startSleep(t, "my-sleep-with-a-long-name", dir)
	pid := cmd.Process.Pid
	if got, err := Cwd(pid); err != nil || got != dir {
		t.Errorf("Cwd %q %v, want %q", got, err, dir)
	}
	if got, err := Root(pid); err != nil || got != "/" {
		t.Errorf("Root %q %v", got, err)
	}
	sleep, _ := filepath.EvalSymlinks("/bin/sleep")
	if got, err := Exe(pid); err != nil || got != sleep {
		t.Errorf("Exe %q %v, want %q", got, err, sleep)
	}
	// comm is the basename of the exec'ed path, cut to TASK_COMM_LEN-1.
	if got, err := Comm(pid); err != nil || got != "my-sleep-with-a" {
		t.Errorf("Comm %q %v", got, err)
	}
	wd, _ := os.Getwd()
	if got, err := Cwd(os.Getpid()); err != nil || got != wd {
		t.Errorf("own Cwd %q %v, want %q", got, err, wd)
	}
	dead := deadPid(t)
	for name, fn := range map[string]func(int) (string, error){"cwd": Cwd, "root": Root, "exe": Exe, "comm": Comm} {
		if _, err := fn(dead); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s of dead pid: %v", name, err)
		}
	}
}

func TestChildrenAndTasks(t *testing.T) {
	a := startSleep(t, "", "")
	b := startSleep(t, "", "")
	tasks, err := Tasks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// A child belongs to the thread that forked it: collect over all.
	var all []int
	for _, tid := range tasks {
		c, err := Children(os.Getpid(), tid)
		if err != nil && !errors.Is(err, fs.ErrNotExist) { // a thread may exit meanwhile
			t.Fatal(err)
		}
		all = append(all, c...)
	}
	for _, pid := range []int{a.Process.Pid, b.Process.Pid} {
		if !slices.Contains(all, pid) {
			t.Errorf("children %v lack %d", all, pid)
		}
	}
	ct, err := Tasks(a.Process.Pid)
	if err != nil || !slices.Equal(ct, []int{a.Process.Pid}) {
		t.Errorf("tasks of sleep %v %v", ct, err)
	}
	if c, err := Children(a.Process.Pid, a.Process.Pid); err != nil || len(c) != 0 {
		t.Errorf("children of sleep %v %v", c, err)
	}
	if _, err := Tasks(deadPid(t)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dead pid: %v", err)
	}
}

func TestLoginUIDAndOOM(t *testing.T) {
	cmd := startSleep(t, "", "")
	pid := cmd.Process.Pid
	mine, err := LoginUID(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if theirs, err := LoginUID(pid); err != nil || theirs != mine {
		t.Errorf("child loginuid %d %v, ours %d (inherited)", theirs, err, mine)
	}
	if err := os.WriteFile(path(pid, "oom_score_adj"), []byte("321"), 0); err != nil {
		t.Fatal(err)
	}
	if v, err := OOMScoreAdj(pid); err != nil || v != 321 {
		t.Errorf("oom_score_adj %d %v", v, err)
	}
	b, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := strconv.Atoi(string(b[:len(b)-1]))
	if v, err := OOMScoreAdj(os.Getpid()); err != nil || v != want {
		t.Errorf("own oom_score_adj %d %v, want %d", v, err, want)
	}
}
