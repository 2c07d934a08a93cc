package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"

	file_lock "github.com/checkpoint-restore/go-criu/v8/crit/images/file-lock"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/images"
)

// lockFinisher takes the dumped file locks again (filelocks.img), once every fd has its number: the
// entries name the fd each lock is taken through. Locks are taken without waiting: a lock someone else
// holds now (the dumped process still running, say) fails the restore.
type lockFinisher struct{}

func init() { registerFdFinisher(lockFinisher{}) }

func (lockFinisher) finish(rf *fileRestore) error {
	locks, err := images.Read[file_lock.FileLockEntry](rf.p.dir, images.FileLocksName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadImages, images.FileLocksName, err)
	}
	for _, l := range locks {
		if int(l.GetPid()) != rf.p.pid {
			continue
		}
		if err := takeLock(rf, l); err != nil {
			return fmt.Errorf("fd %d: lock %d-%d: %w", l.GetFd(), l.GetStart(), l.GetStart()+l.GetLen(), err)
		}
	}
	return nil
}

func takeLock(rf *fileRestore, l *file_lock.FileLockEntry) error {
	t, fd := rf.t, uint64(l.GetFd())
	typ := l.GetType()
	if typ != unix.F_RDLCK && typ != unix.F_WRLCK {
		return fmt.Errorf("%w: lock type %d", ErrBadImages, typ)
	}
	switch l.GetFlag() {
	case images.FileLockFlock:
		op := uint64(unix.LOCK_SH)
		if typ == unix.F_WRLCK {
			op = unix.LOCK_EX
		}
		if _, err := t.Syscall(unix.SYS_FLOCK, fd, op|unix.LOCK_NB); err != nil {
			return fmt.Errorf("flock: %w", err)
		}
		return nil
	case images.FileLockPosix, images.FileLockOFD:
		if l.GetStart() < 0 || l.GetLen() < 0 {
			return fmt.Errorf("%w: lock range %d+%d", ErrBadImages, l.GetStart(), l.GetLen())
		}
		// struct flock: short l_type, short l_whence, (pad), off_t l_start, off_t l_len, pid_t l_pid.
		b := make([]byte, 32)
		le := binary.LittleEndian
		le.PutUint16(b, uint16(typ))
		le.PutUint16(b[2:], unix.SEEK_SET)
		le.PutUint64(b[8:], uint64(l.GetStart()))
		le.PutUint64(b[16:], uint64(l.GetLen()))
		addr, err := t.WriteScratch(0, b)
		if err != nil {
			return err
		}
		cmd := uint64(unix.F_SETLK)
		if l.GetFlag() == images.FileLockOFD {
			cmd = unix.F_OFD_SETLK
		}
		if _, err := t.Syscall(unix.SYS_FCNTL, fd, cmd, addr); err != nil {
			return fmt.Errorf("fcntl lock: %w", err)
		}
		return nil
	}
	return fmt.Errorf("lock kind %#x: %w", l.GetFlag(), ErrUnsupported)
}
