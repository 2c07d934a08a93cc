package dump

import (
	"encoding/binary"
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/siginfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timer"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/compel"
	"github.com/lazyr/lazyr/internal/procfs"
	"github.com/lazyr/lazyr/internal/sys"
)

// pendingSignals reads a thread's queued signals (shared: the process-wide queue) without dequeuing them.
func pendingSignals(tid int, shared bool) (*siginfo.SignalQueueEntry, error) {
	infos, err := sys.PtracePeekSiginfo(tid, shared)
	if err != nil {
		return nil, fmt.Errorf("pending signals of %d: %w", tid, err)
	}
	if len(infos) == 0 {
		return nil, nil
	}
	q := &siginfo.SignalQueueEntry{}
	for _, b := range infos {
		q.Signals = append(q.Signals, &siginfo.SiginfoEntry{Siginfo: b})
	}
	return q, nil
}

// posixTimers reads the process's POSIX timers: /proc shows how each notifies, timer_gettime and
// timer_getoverrun injected into the process give its state.
// Preconditions: called from Tracer.Do; t has a gadget and a scratch area.
func posixTimers(t *compel.Task, pid int) ([]*timer.PosixTimerEntry, error) {
	timers, err := procfs.Timers(pid)
	if err != nil {
		return nil, err
	}
	addr, _ := t.Scratch()
	var out []*timer.PosixTimerEntry
	for _, pt := range timers {
		if _, err := t.Syscall(unix.SYS_TIMER_GETTIME, uint64(pt.ID), addr); err != nil {
			return nil, fmt.Errorf("timer %d: timer_gettime: %w", pt.ID, err)
		}
		b, err := t.ReadScratch(0, 32)
		if err != nil {
			return nil, err
		}
		over, err := t.Syscall(unix.SYS_TIMER_GETOVERRUN, uint64(pt.ID))
		if err != nil {
			return nil, fmt.Errorf("timer %d: timer_getoverrun: %w", pt.ID, err)
		}
		le := binary.LittleEndian
		e := &timer.PosixTimerEntry{
			ItId:          proto.Uint32(uint32(pt.ID)),
			ClockId:       proto.Uint32(uint32(pt.ClockID)),
			SiSigno:       proto.Uint32(uint32(pt.Signal)),
			ItSigevNotify: proto.Uint32(uint32(pt.SigevNotify())),
			SivalPtr:      proto.Uint64(pt.SigevValue),
			Overrun:       proto.Uint32(uint32(over)),
			Isec:          proto.Uint64(le.Uint64(b[0:])),
			Insec:         proto.Uint64(le.Uint64(b[8:])),
			Vsec:          proto.Uint64(le.Uint64(b[16:])),
			Vnsec:         proto.Uint64(le.Uint64(b[24:])),
		}
		if pt.ThreadID {
			e.NotifyThreadId = proto.Int32(int32(pt.NotifyTid))
		}
		out = append(out, e)
	}
	return out, nil
}
