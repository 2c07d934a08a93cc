package procfs

import (
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestTimersSelf(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()

	// Never armed, so they never fire.
	id1 := timerCreate(t, unix.CLOCK_MONOTONIC, sigevent{value: 0x1234, signo: int32(unix.SIGUSR2), notify: sigevSignal})
	id2 := timerCreate(t, unix.CLOCK_BOOTTIME, sigevent{value: 0xdeadbeef00, signo: int32(unix.SIGUSR1),
		notify: sigevSignal | sigevThreadID, tid: int32(tid)})
	id3 := timerCreate(t, unix.CLOCK_REALTIME, sigevent{notify: sigevNone})

	ts, err := Timers(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]PosixTimer{
		id1: {ID: id1, Signal: int(unix.SIGUSR2), SigevValue: 0x1234, Notify: "signal", NotifyTid: os.Getpid(), ClockID: unix.CLOCK_MONOTONIC},
		id2: {ID: id2, Signal: int(unix.SIGUSR1), SigevValue: 0xdeadbeef00, Notify: "signal", ThreadID: true, NotifyTid: tid, ClockID: unix.CLOCK_BOOTTIME},
		id3: {ID: id3, Notify: "none", NotifyTid: os.Getpid(), ClockID: unix.CLOCK_REALTIME},
	}
	found := 0
	for _, tm := range ts {
		w, ok := want[tm.ID]
		if !ok {
			continue
		}
		found++
		// For SIGEV_NONE the kernel still records a signal number; ignore it.
		if w.Notify == "none" {
			w.Signal, w.SigevValue = tm.Signal, tm.SigevValue
		}
		if tm != w {
			t.Errorf("timer %d:\n got %+v\nwant %+v", tm.ID, tm, w)
		}
	}
	if found != len(want) {
		t.Errorf("found %d of our %d timers in %+v", found, len(want), ts)
	}
	if ts[0].SigevNotify() < 0 {
		t.Errorf("SigevNotify of %+v", ts[0])
	}
	if w := want[id2]; w.SigevNotify() != sigevSignal|sigevThreadID {
		t.Errorf("SigevNotify %d", w.SigevNotify())
	}
}

func TestParseTimersMalformed(t *testing.T) {
	for _, bad := range []string{"signal: 1/0\n", "ID: x\n", "ID: 1\nsignal: 1\n", "ID: 1\nnotify: signal/xid.3\n",
		"ID: 1\nnotify: signal/pid\n", "ID: 1\nClockID: z\n"} {
		if _, err := parseTimers(strings.NewReader(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: err %v", bad, err)
		}
	}
	ts, err := parseTimers(strings.NewReader("ID: 3\nsignal: 14/(null)\nnotify: thread/pid.7\nClockID: 0\nID: 4\nsignal: 10/0x10\n"))
	if err != nil || len(ts) != 2 || ts[0].SigevNotify() != sigevThread || ts[1].SigevValue != 16 {
		t.Errorf("%+v %v", ts, err)
	}
}
