package dump

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	file_lock "github.com/checkpoint-restore/go-criu/v8/crit/images/file-lock"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/procfs"
)

// lockKind is not a kind of file: it reads the "lock:" lines of every fd's fdinfo, once all fds are
// known, into filelocks.img. A lock shows on every fd that can see it (dups, every fd of a POSIX lock's
// inode), so each is kept once: flock and OFD locks per open file description, POSIX locks per process,
// inode and range. Leases and delegations are refused.
type lockKind struct{}

func init() { registerFdKind(lockKind{}) }

func (lockKind) handles(*openFile) bool { return false }

func (lockKind) dump(*fileTable, *openFile, uint32) (*fdinfo.FileEntry, error) {
	return nil, fmt.Errorf("file locks are not files: %w", ErrUnsupported)
}

func (lockKind) finish(ft *fileTable) error {
	var entries []proto.Message
	seen := map[string]bool{}
	for _, s := range ft.seen {
		info, err := procfs.ReadFdInfo(s.pid, s.fd)
		if err != nil {
			return fmt.Errorf("process %d fd %d: %w", s.pid, s.fd, err)
		}
		for _, l := range info.Lines {
			if !strings.HasPrefix(l, "lock:") {
				continue
			}
			lk, err := parseLock(l)
			if err != nil {
				return fmt.Errorf("process %d fd %d: %w", s.pid, s.fd, err)
			}
			if lk == nil {
				continue // a waiter, not a held lock
			}
			var key string
			switch lk.flag {
			case images.FileLockPosix:
				if lk.pid != s.pid {
					continue
				}
				key = fmt.Sprintf("posix %d %s %d %d %d", lk.pid, lk.inode, lk.start, lk.length, lk.typ)
			default:
				key = fmt.Sprintf("file %d %d", s.id, lk.flag)
			}
			if seen[key] {
				continue
			}
			seen[key] = true
			entries = append(entries, &file_lock.FileLockEntry{
				Flag: proto.Uint32(lk.flag), Type: proto.Uint32(lk.typ), Pid: proto.Int32(int32(s.pid)), Fd: proto.Int32(int32(s.fd)),
				Start: proto.Int64(lk.start), Len: proto.Int64(lk.length),
			})
		}
	}
	if len(entries) > 0 {
		ft.addImage(images.FileLocksName, entries...)
	}
	return nil
}

type heldLock struct {
	flag          uint32
	typ           uint32 // F_RDLCK or F_WRLCK
	pid           int
	inode         string // maj:min:ino
	start, length int64  // length 0: to the end of the file
}

// parseLock reads one fdinfo lock line (fs/locks.c lock_get_status):
//
//	lock:	1: POSIX  ADVISORY  WRITE 23270 fe:00:9984556 10 29
//	lock:	1: FLOCK  ADVISORY  WRITE 23270 fe:00:9984553 0 EOF
//	lock:	1: OFDLCK ADVISORY  WRITE -1 fe:00:9984557 0 4
//	lock:	1: -> POSIX  ADVISORY  WRITE ...        (a blocked waiter: nil, nil)
func parseLock(line string) (*heldLock, error) {
	f := strings.Fields(strings.TrimPrefix(line, "lock:"))
	if len(f) > 1 && f[1] == "->" {
		return nil, nil
	}
	if len(f) != 8 {
		return nil, fmt.Errorf("lock line %q: %d fields", line, len(f))
	}
	lk := &heldLock{inode: f[5]}
	switch f[1] {
	case "POSIX":
		lk.flag = images.FileLockPosix
	case "FLOCK":
		lk.flag = images.FileLockFlock
	case "OFDLCK":
		lk.flag = images.FileLockOFD
	default:
		return nil, fmt.Errorf("lock line %q: %s locks: %w", line, f[1], ErrUnsupported)
	}
	switch f[3] {
	case "READ":
		lk.typ = unix.F_RDLCK
	case "WRITE":
		lk.typ = unix.F_WRLCK
	default:
		return nil, fmt.Errorf("lock line %q: lock type %s: %w", line, f[3], ErrUnsupported)
	}
	var err error
	if lk.pid, err = strconv.Atoi(f[4]); err != nil {
		return nil, fmt.Errorf("lock line %q: pid: %w", line, err)
	}
	if lk.start, err = strconv.ParseInt(f[6], 10, 64); err != nil || lk.start < 0 {
		return nil, fmt.Errorf("lock line %q: bad start", line)
	}
	if f[7] != "EOF" {
		end, err := strconv.ParseInt(f[7], 10, 64)
		if err != nil || end < lk.start || end == 1<<63-1 {
			return nil, fmt.Errorf("lock line %q: bad end", line)
		}
		lk.length = end - lk.start + 1
	}
	return lk, nil
}
