package restore

import (
	"encoding/binary"
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/siginfo"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/compel"
)

// queueSignals puts a dumped signal queue back: the process-wide one with rt_sigqueueinfo from the leader,
// a thread's own with rt_tgsigqueueinfo from that thread. The kernel lets a task queue any siginfo to
// itself (to others only with negative si_code), which is why each call runs in its target. Signals stay
// blocked in the task until it resumes with its dumped mask, so nothing is delivered early.
func queueSignals(t *compel.Task, vpid, vtid int, q *siginfo.SignalQueueEntry, shared bool) error {
	for _, s := range q.GetSignals() {
		info := s.GetSiginfo()
		if len(info) < 12 {
			return fmt.Errorf("%w: short siginfo (%d bytes)", ErrBadImages, len(info))
		}
		signo := uint64(binary.LittleEndian.Uint32(info))
		addr, err := t.WriteScratch(0, info)
		if err != nil {
			return err
		}
		if shared {
			_, err = t.Syscall(unix.SYS_RT_SIGQUEUEINFO, uint64(vpid), signo, addr)
		} else {
			_, err = t.Syscall(unix.SYS_RT_TGSIGQUEUEINFO, uint64(vpid), uint64(vtid), signo, addr)
		}
		if err != nil {
			return fmt.Errorf("queue pending signal %d: %w", signo, err)
		}
	}
	return nil
}

// restorePosixTimers recreates the process's POSIX timers with their ids (PR_TIMER_CREATE_RESTORE_IDS
// makes timer_create take the id it is given) and arms them. Preconditions: run last before the task
// resumes, as the timers start ticking.
func restorePosixTimers(t *compel.Task, p *plan) error {
	timers := p.core.GetTc().GetTimers().GetPosix()
	if len(timers) == 0 {
		return nil
	}
	if _, err := t.Syscall(unix.SYS_PRCTL, unix.PR_TIMER_CREATE_RESTORE_IDS, unix.PR_TIMER_CREATE_RESTORE_IDS_ON, 0, 0, 0); err != nil {
		return fmt.Errorf("POSIX timers need PR_TIMER_CREATE_RESTORE_IDS (Linux 6.15+): %w", err)
	}
	le := binary.LittleEndian
	for _, pt := range timers {
		// struct sigevent: value, signo, notify, then the thread id for SIGEV_THREAD_ID; the timer id
		// (in/out) right after it.
		sev := make([]byte, 68)
		le.PutUint64(sev[0:], pt.GetSivalPtr())
		le.PutUint32(sev[8:], pt.GetSiSigno())
		le.PutUint32(sev[12:], pt.GetItSigevNotify())
		le.PutUint32(sev[16:], uint32(pt.GetNotifyThreadId()))
		le.PutUint32(sev[64:], pt.GetItId())
		addr, err := t.WriteScratch(0, sev)
		if err != nil {
			return err
		}
		if _, err := t.Syscall(unix.SYS_TIMER_CREATE, uint64(pt.GetClockId()), addr, addr+64); err != nil {
			return fmt.Errorf("timer %d: timer_create: %w", pt.GetItId(), err)
		}
		b, err := t.ReadScratch(64, 4)
		if err != nil {
			return err
		}
		if id := le.Uint32(b); id != pt.GetItId() {
			return fmt.Errorf("timer %d was created with id %d", pt.GetItId(), id)
		}
	}
	if _, err := t.Syscall(unix.SYS_PRCTL, unix.PR_TIMER_CREATE_RESTORE_IDS, unix.PR_TIMER_CREATE_RESTORE_IDS_OFF, 0, 0, 0); err != nil {
		return err
	}
	for _, pt := range timers {
		if pt.GetVsec() == 0 && pt.GetVnsec() == 0 {
			continue // disarmed
		}
		its := make([]byte, 32)
		le.PutUint64(its[0:], pt.GetIsec())
		le.PutUint64(its[8:], pt.GetInsec())
		le.PutUint64(its[16:], pt.GetVsec())
		le.PutUint64(its[24:], pt.GetVnsec())
		addr, err := t.WriteScratch(0, its)
		if err != nil {
			return err
		}
		if _, err := t.Syscall(unix.SYS_TIMER_SETTIME, uint64(pt.GetItId()), 0, addr, 0); err != nil {
			return fmt.Errorf("timer %d: timer_settime: %w", pt.GetItId(), err)
		}
	}
	return nil
}
