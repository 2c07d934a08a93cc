package procfs

import (
	"errors"
	"io/fs"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestReadStatSelf(t *testing.T) {
	st, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.Pid != os.Getpid() || st.PPid != os.Getppid() || !strings.ContainsRune("RSD", rune(st.State)) || st.NumThreads < 1 {
		t.Errorf("%+v", st)
	}
	comm, _ := Comm(os.Getpid())
	if st.Comm != comm {
		t.Errorf("Comm %q, want %q", st.Comm, comm)
	}
	// Our own code lies between start_code and end_code.
	pc := uint64(reflect.ValueOf(TestReadStatSelf).Pointer())
	if st.StartCode == 0 || st.StartCode > st.EndCode || pc < st.StartCode || pc >= st.EndCode {
		t.Errorf("code %#x-%#x does not hold pc %#x", st.StartCode, st.EndCode, pc)
	}
	if st.StartBrk == 0 || st.StartData > st.EndData || st.ArgStart >= st.ArgEnd || st.EnvStart > st.EnvEnd {
		t.Errorf("layout %+v", st)
	}
	// The argument area holds argv: its size is the sum of the args + NULs.
	var n uint64
	for _, a := range os.Args {
		n += uint64(len(a)) + 1
	}
	if st.ArgEnd-st.ArgStart != n {
		t.Errorf("arg area %d bytes, argv takes %d", st.ArgEnd-st.ArgStart, n)
	}
	ms, err := Maps(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	stack := findMapping(ms, st.StartStack)
	if stack == nil || stack.Path != "[stack]" {
		t.Errorf("StartStack %#x not in [stack]: %+v", st.StartStack, stack)
	}
}

func TestReadStatChildOddComm(t *testing.T) {
	const name = "x) (y z)"
	cmd := startSleep(t, name, "")
	st, err := ReadStat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if st.Comm != name || st.Pid != cmd.Process.Pid || st.PPid != os.Getpid() || st.NumThreads != 1 ||
		st.ExitSignal != 17 || st.State != 'S' && st.State != 'R' {
		t.Errorf("%+v", st)
	}
	self, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.StartTime < self.StartTime || st.Session != self.Session || st.Pgrp != self.Pgrp {
		t.Errorf("child %+v vs self %+v", st, self)
	}
	if _, err := ReadStat(deadPid(t)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dead pid: %v", err)
	}
}

func TestParseStatMalformed(t *testing.T) {
	good := "12 (a) b) S 1 12 12 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 100 1000 10 18446744073709551615 " +
		"1 2 3 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 4 5 6 7 8 9 10 0\n"
	st, err := parseStat([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	want := Stat{Pid: 12, Comm: "a) b", State: 'S', PPid: 1, Pgrp: 12, Session: 12, TtyNr: 0, Flags: 4194560,
		Nice: 0, NumThreads: 1, StartTime: 100, StartCode: 1, EndCode: 2, StartStack: 3, ExitSignal: 17,
		StartData: 4, EndData: 5, StartBrk: 6, ArgStart: 7, ArgEnd: 8, EnvStart: 9, EnvEnd: 10}
	if *st != want {
		t.Errorf("got  %+v\nwant %+v", *st, want)
	}
	for _, bad := range []string{"", "12 (a", "x (a) S", good[:60], strings.Replace(good, " 4194560 ", " -1 ", 1),
		strings.Replace(good, ") S ", ") SS ", 1)} {
		if _, err := parseStat([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: err %v, want ErrMalformed", bad, err)
		}
	}
}
