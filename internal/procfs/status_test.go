package procfs

import (
	"errors"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestReadStatusSelf(t *testing.T) {
	old := unix.Umask(0o027)
	defer unix.Umask(old)

	st, err := ReadStatus(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	pid := os.Getpid()
	if st.Pid != pid || st.Tgid != pid || st.PPid != os.Getppid() || st.TracerPid != 0 {
		t.Errorf("ids: %+v", st)
	}
	if len(st.NSpid) == 0 || st.NSpid[0] != pid || len(st.NSsid) == 0 || len(st.NSpgid) == 0 {
		t.Errorf("NSpid %v NSpgid %v NSsid %v", st.NSpid, st.NSpgid, st.NSsid)
	}
	if st.NSpgid[0] != unixGetpgid(t) {
		t.Errorf("NSpgid %v", st.NSpgid)
	}
	if st.Umask != 0o027 {
		t.Errorf("Umask %o, want 027", st.Umask)
	}
	if !strings.ContainsRune("RSD", rune(st.State)) { // the main thread's state
		t.Errorf("State %q", st.State)
	}
	comm, err := Comm(pid)
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != comm {
		t.Errorf("Name %q, comm %q", st.Name, comm)
	}
	if st.Uid[0] != uint32(os.Getuid()) || st.Uid[1] != uint32(os.Geteuid()) ||
		st.Gid[0] != uint32(os.Getgid()) || st.Gid[1] != uint32(os.Getegid()) {
		t.Errorf("Uid %v Gid %v", st.Uid, st.Gid)
	}
	groups, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	var g []uint32
	for _, x := range groups {
		g = append(g, uint32(x))
	}
	if !slices.Equal(st.Groups, g) && !(len(st.Groups) == 0 && len(g) == 0) {
		t.Errorf("Groups %v, want %v", st.Groups, g)
	}
	if st.Threads < 1 {
		t.Errorf("Threads %d", st.Threads)
	}
	// The Go runtime installs handlers for SIGSEGV and SIGURG.
	for _, sig := range []syscall.Signal{unix.SIGSEGV, unix.SIGURG} {
		if st.SigCgt&(1<<(sig-1)) == 0 {
			t.Errorf("SigCgt %#x lacks %v", st.SigCgt, sig)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	eff := uint64(data[1].Effective)<<32 | uint64(data[0].Effective)
	prm := uint64(data[1].Permitted)<<32 | uint64(data[0].Permitted)
	if st.CapEff != eff || st.CapPrm != prm {
		t.Errorf("CapEff %#x CapPrm %#x, capget says %#x %#x", st.CapEff, st.CapPrm, eff, prm)
	}
	if st.CapBnd == 0 {
		t.Error("CapBnd 0")
	}
}

func unixGetpgid(t *testing.T) int {
	pg, err := unix.Getpgid(0)
	if err != nil {
		t.Fatal(err)
	}
	return pg
}

func TestReadTaskStatus(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	// Block a signal in this thread only: per-thread SigBlk must show it.
	var set, old unix.Sigset_t
	set.Val[0] = 1 << (unix.SIGUSR2 - 1)
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, &old); err != nil {
		t.Fatal(err)
	}
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)

	tasks, err := Tasks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(tasks, tid) || !slices.Contains(tasks, os.Getpid()) || !slices.IsSorted(tasks) {
		t.Fatalf("tasks %v lack tid %d or pid", tasks, tid)
	}
	st, err := ReadTaskStatus(os.Getpid(), tid)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pid != tid || st.Tgid != os.Getpid() || st.NSpid[0] != tid {
		t.Errorf("Pid %d Tgid %d NSpid %v, want tid %d", st.Pid, st.Tgid, st.NSpid, tid)
	}
	if st.State != 'R' {
		t.Errorf("State %q, want R (this thread is reading it)", st.State)
	}
	if st.SigBlk&(1<<(unix.SIGUSR2-1)) == 0 {
		t.Errorf("SigBlk %#x lacks SIGUSR2", st.SigBlk)
	}
}

func TestReadStatusChild(t *testing.T) {
	cmd := startSleep(t, `a\b`+"\tc", "")
	st, err := ReadStatus(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != "a\\b\tc" {
		t.Errorf("Name %q", st.Name)
	}
	if st.PPid != os.Getpid() || st.Threads != 1 || st.Pid != cmd.Process.Pid {
		t.Errorf("%+v", st)
	}
	if _, err := ReadStatus(deadPid(t)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dead pid: %v", err)
	}
}

func TestParseStatusEscapes(t *testing.T) {
	st, err := parseStatus(strings.NewReader("Name:\t x\\nb\\\\c \nUmask:\t0777\nGroups:\t\nNSpid:\t9\t1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != " x\nb\\c " || st.Umask != 0o777 || len(st.Groups) != 0 || !slices.Equal(st.NSpid, []int{9, 1}) {
		t.Errorf("%+v", st)
	}
	for _, bad := range []string{"Uid:\t1\t2\t3\n", "SigBlk:\tzz\n", "Pid:\t-\n", "State:\t\n", "Umask:\t9\n"} {
		if _, err := parseStatus(strings.NewReader(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: err %v, want ErrMalformed", bad, err)
		}
	}
}
