package procfs

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
)

// PosixTimer is one timer_create(2) timer from /proc/PID/timers. The timer's
// current value and overrun are not in /proc (read them with timer_gettime
// inside the task).
type PosixTimer struct {
	ID         int
	Signal     int
	SigevValue uint64 // sigev_value as a pointer-sized word
	// Notify is the delivery mechanism: "signal", "none" or "thread"
	// (SIGEV_SIGNAL, SIGEV_NONE, SIGEV_THREAD).
	Notify string
	// ThreadID is set when the kernel printed "tid": SIGEV_THREAD_ID, the
	// signal goes to thread NotifyTid rather than to the process.
	ThreadID bool
	// NotifyTid is the pid (or tid, with ThreadID) the signal goes to.
	NotifyTid int
	ClockID   int
}

// Sigev notify values (asm-generic/siginfo.h).
const (
	sigevSignal   = 0
	sigevNone     = 1
	sigevThread   = 2
	sigevThreadID = 4
)

// SigevNotify is the sigev_notify value to pass to timer_create(2) to
// recreate the timer, or -1 if Notify is unknown.
func (t PosixTimer) SigevNotify() int {
	var n int
	switch t.Notify {
	case "signal":
		n = sigevSignal
	case "none":
		n = sigevNone
	case "thread":
		n = sigevThread
	default:
		return -1
	}
	if t.ThreadID {
		n |= sigevThreadID
	}
	return n
}

// Timers reads /proc/PID/timers.
func Timers(pid int) ([]PosixTimer, error) {
	p := path(pid, "timers")
	b, err := readFile(p)
	if err != nil {
		return nil, err
	}
	t, err := parseTimers(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("procfs: %s: %w", p, err)
	}
	return t, nil
}

// parseTimers parses records of the form (kernel/time/posix-timers.c):
//
//	ID: 0
//	signal: 14/0000000000000000
//	notify: signal/pid.1234
//	ClockID: 1
func parseTimers(r io.Reader) ([]PosixTimer, error) {
	var out []PosixTimer
	s := bufio.NewScanner(r)
	for s.Scan() {
		line := s.Bytes()
		key, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		val = bytes.TrimSpace(val)
		if string(key) == "ID" {
			id, err := strconv.Atoi(string(val))
			if err != nil {
				return nil, malformedErr("timer ID", err)
			}
			out = append(out, PosixTimer{ID: id})
			continue
		}
		if len(out) == 0 {
			return nil, malformed("timer field before ID", line)
		}
		t := &out[len(out)-1]
		switch string(key) {
		case "signal":
			sig, value, ok := bytes.Cut(val, []byte("/"))
			if !ok {
				return nil, malformed("timer signal", line)
			}
			var err1, err2 error
			t.Signal, err1 = strconv.Atoi(string(sig))
			t.SigevValue, err2 = parseTimerValue(value)
			if err1 != nil || err2 != nil {
				return nil, malformed("timer signal", line)
			}
		case "notify":
			how, who, ok1 := bytes.Cut(val, []byte("/"))
			kind, id, ok2 := bytes.Cut(who, []byte("."))
			n, err := strconv.Atoi(string(id))
			if !ok1 || !ok2 || err != nil || (string(kind) != "pid" && string(kind) != "tid") {
				return nil, malformed("timer notify", line)
			}
			t.Notify = string(how)
			t.ThreadID = string(kind) == "tid"
			t.NotifyTid = n
		case "ClockID":
			c, err := strconv.Atoi(string(val))
			if err != nil {
				return nil, malformedErr("timer ClockID", err)
			}
			t.ClockID = c
		}
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// parseTimerValue parses the sigev_value word. Current kernels print it with
// %px (bare hex); older ones used %p, which could add "0x" or print "(null)".
func parseTimerValue(b []byte) (uint64, error) {
	if string(b) == "(null)" {
		return 0, nil
	}
	b = bytes.TrimPrefix(b, []byte("0x"))
	return strconv.ParseUint(string(b), 16, 64)
}
