package dump

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timerfd"
	"google.golang.org/protobuf/proto"
)

// timerfdKind: clock, expirations not yet read (ticks), and the timer: it_value is the time left until
// the next expiration (relative, whatever the settime flags were), it_interval the period.
type timerfdKind struct{}

func init() { registerFdKind(timerfdKind{}) }

func (timerfdKind) handles(f *openFile) bool { return f.Fd.Target == "anon_inode:[timerfd]" }

func (timerfdKind) dump(ft *fileTable, f *openFile, id uint32) (*fdinfo.FileEntry, error) {
	e, err := parseTimerfd(f.Info.Lines)
	if err != nil {
		return nil, err
	}
	e.Id, e.Flags, e.Fown = proto.Uint32(id), proto.Uint32(f.Flags), zeroFown()
	return &fdinfo.FileEntry{Type: fdinfo.FdTypes_TIMERFD.Enum(), Id: proto.Uint32(id), Tfd: e}, nil
}

// parseTimerfd reads fs/timerfd.c's fdinfo:
//
//	clockid: 1
//	ticks: 0
//	settime flags: 01
//	it_value: (0, 499991647)
//	it_interval: (1, 0)
func parseTimerfd(lines []string) (*timerfd.TimerfdEntry, error) {
	clock, err := fdinfoUint(lines, "clockid", 10)
	if err != nil {
		return nil, err
	}
	ticks, err := fdinfoUint(lines, "ticks", 10)
	if err != nil {
		return nil, err
	}
	sflags, err := fdinfoUint(lines, "settime flags", 8)
	if err != nil {
		return nil, err
	}
	var tv [2][2]uint64
	for i, key := range []string{"it_value", "it_interval"} {
		v, ok := fdinfoValue(lines, key)
		if !ok {
			return nil, fmt.Errorf("fdinfo has no %q line", key)
		}
		if tv[i], err = parseTimespecPair(v); err != nil {
			return nil, fmt.Errorf("fdinfo %s: %w", key, err)
		}
	}
	if clock > 1<<31 || sflags > 1<<31 || tv[0][1] >= 1e9 || tv[1][1] >= 1e9 {
		return nil, fmt.Errorf("fdinfo of timerfd out of range (clock %d, flags %#o, value %v, interval %v)", clock, sflags, tv[0], tv[1])
	}
	return &timerfd.TimerfdEntry{
		Clockid: proto.Uint32(uint32(clock)), Ticks: proto.Uint64(ticks), SettimeFlags: proto.Uint32(uint32(sflags)),
		Vsec: proto.Uint64(tv[0][0]), Vnsec: proto.Uint64(tv[0][1]), Isec: proto.Uint64(tv[1][0]), Insec: proto.Uint64(tv[1][1]),
	}, nil
}

// parseTimespecPair parses "(sec, nsec)".
func parseTimespecPair(s string) ([2]uint64, error) {
	in, ok := strings.CutPrefix(s, "(")
	if in, ok2 := strings.CutSuffix(in, ")"); ok && ok2 {
		a, b, ok := strings.Cut(in, ",")
		if ok {
			sec, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 64)
			nsec, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 64)
			if err1 == nil && err2 == nil {
				return [2]uint64{sec, nsec}, nil
			}
		}
	}
	return [2]uint64{}, fmt.Errorf("%q is not (sec, nsec)", s)
}
