package restore

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timerfd"
	"golang.org/x/sys/unix"
)

// tfdIocSetTicks is TFD_IOC_SET_TICKS, _IOW('T', 0, u64): sets the expirations not read yet
// (CONFIG_CHECKPOINT_RESTORE).
const tfdIocSetTicks = 0x40085400

// timerfdOpener: timerfd_create() on the dumped clock, armed with the time that was left (as a relative
// time, or as now + left for an absolute timer, which cancel-on-set needs), then the unread ticks.
type timerfdOpener struct{}

func init() { registerFdOpener(fdinfo.FdTypes_TIMERFD, timerfdOpener{}) }

func (timerfdOpener) open(rf *fileRestore, f *fdinfo.FileEntry) (uint64, error) {
	e := f.GetTfd()
	if e == nil {
		return 0, fmt.Errorf("%w: timerfd entry %d without its timerfd part", ErrBadImages, f.GetId())
	}
	t := rf.t
	fd, err := t.Syscall(unix.SYS_TIMERFD_CREATE, uint64(e.GetClockid()), unix.TFD_CLOEXEC)
	if err != nil {
		return 0, fmt.Errorf("timerfd_create clock %d: %w", e.GetClockid(), err)
	}
	if err := armTimerfd(rf, fd, e); err != nil {
		closeInTask(t, fd)
		return 0, err
	}
	if err := setStatusFlags(t, fd, e.GetFlags()); err != nil {
		closeInTask(t, fd)
		return 0, err
	}
	return fd, nil
}

func armTimerfd(rf *fileRestore, fd uint64, e *timerfd.TimerfdEntry) error {
	t := rf.t
	vsec, vnsec := e.GetVsec(), e.GetVnsec()
	if vsec == 0 && vnsec == 0 {
		// A periodic timer that expired and was not read since shows no time left: the kernel moves it
		// on only when it is read. Its next expiration is then one period away (its pending ticks are
		// set below).
		vsec, vnsec = e.GetIsec(), e.GetInsec()
	}
	if vsec != 0 || vnsec != 0 {
		flags := uint64(0)
		if e.GetSettimeFlags()&unix.TFD_TIMER_ABSTIME != 0 {
			var now unix.Timespec
			if err := unix.ClockGettime(int32(e.GetClockid()), &now); err != nil {
				return fmt.Errorf("clock %d: %w", e.GetClockid(), err)
			}
			vsec, vnsec = vsec+uint64(now.Sec), vnsec+uint64(now.Nsec)
			if vnsec >= 1e9 {
				vsec, vnsec = vsec+1, vnsec-1e9
			}
			flags = uint64(e.GetSettimeFlags())
		}
		addr, err := t.WriteScratch(0, le64(e.GetIsec(), e.GetInsec(), vsec, vnsec))
		if err != nil {
			return err
		}
		if _, err := t.Syscall(unix.SYS_TIMERFD_SETTIME, fd, flags, addr, 0); err != nil {
			return fmt.Errorf("timerfd_settime: %w", err)
		}
	}
	// After settime, which clears the ticks.
	if ticks := e.GetTicks(); ticks != 0 {
		addr, err := t.WriteScratch(0, le64(ticks))
		if err != nil {
			return err
		}
		if _, err := t.Syscall(unix.SYS_IOCTL, fd, tfdIocSetTicks, addr); err != nil {
			return fmt.Errorf("timerfd ticks %d: %w", ticks, err)
		}
	}
	return nil
}
