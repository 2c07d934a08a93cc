package dump

import (
	"fmt"
	"sort"
	"strconv"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/tty"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/procfs"
)

// Character device numbers of terminals (Documentation/admin-guide/devices.txt).
const (
	ttyAuxMajor    = 5   // 5:0 /dev/tty, 5:1 /dev/console, 5:2 /dev/ptmx
	ptsMajorFirst  = 136 // UNIX98 pty slaves: 136..143, 256 minors each
	ptsMajorLast   = 143
	vtMajor        = 4 // /dev/ttyN (minor < 64) and /dev/ttySN
	ptmxMinor      = 2
	consoleMinor   = 1
	ctlTTYMinor    = 0
	nccs           = 19 // the kernel's termios c_cc size on x86
	unknownTTYType = tty.TtyType_UNKNOWN
)

// ttyKind: terminals. A pty whose master (/dev/ptmx) is in the process is recorded as a pair with its
// termios, window size and lock/packet/exclusive modes, and restored as a new pair with the same index.
// Any other terminal (the one a shell gave the process, a VT, the console) belongs to someone else: it
// is recorded only with --shell-job, and a restore then gives the process the restoring shell's
// terminal. Data waiting in a terminal's buffers is not kept.
type ttyKind struct{}

func init() { registerFdKind(ttyKind{}) }

func (ttyKind) handles(f *openFile) bool {
	if f.Stat.Mode&unix.S_IFMT != unix.S_IFCHR {
		return false
	}
	return ttyType(f.Stat.Rdev) != unknownTTYType
}

// ttyType classifies a character device.
func ttyType(rdev uint64) tty.TtyType {
	maj, min := unix.Major(rdev), unix.Minor(rdev)
	switch {
	case maj >= ptsMajorFirst && maj <= ptsMajorLast, maj == ttyAuxMajor && min == ptmxMinor:
		return tty.TtyType_PTY
	case maj == ttyAuxMajor && min == consoleMinor:
		return tty.TtyType_CONSOLE
	case maj == ttyAuxMajor && min == ctlTTYMinor:
		return tty.TtyType_CTTY
	case maj == vtMajor && min < 64:
		return tty.TtyType_VT
	case maj == vtMajor:
		return tty.TtyType_SERIAL
	}
	return unknownTTYType
}

type ttyState struct {
	infos   map[string]*tty.TtyInfoEntry // by "pty N" or the device number
	masters map[uint32]bool              // pty indexes whose master is in the dump
	slaves  map[uint32]string            // pty index -> where a slave fd is, for messages
	nextID  uint32
}

func (ttyKind) dump(ft *fileTable, f *openFile, id uint32) (*fdinfo.FileEntry, error) {
	s := kindState[ttyState](ft, "tty")
	if s.infos == nil {
		s.infos, s.masters, s.slaves = map[string]*tty.TtyInfoEntry{}, map[uint32]bool{}, map[uint32]string{}
	}
	typ := ttyType(f.Stat.Rdev)
	maj, min := unix.Major(f.Stat.Rdev), unix.Minor(f.Stat.Rdev)
	var key string
	var index uint32
	master := false
	switch {
	case typ == tty.TtyType_PTY && maj == ttyAuxMajor:
		master = true
		v, ok := fdinfoValue(f.Info.Lines, "tty-index")
		n, err := strconv.ParseUint(v, 10, 32)
		if !ok || err != nil {
			return nil, fmt.Errorf("pty master without a tty-index in fdinfo")
		}
		index = uint32(n)
		s.masters[index] = true
		key = fmt.Sprintf("pty %d", index)
	case typ == tty.TtyType_PTY:
		index = (maj-ptsMajorFirst)<<8 | min
		s.slaves[index] = fmt.Sprintf("process %d fd %d (%s)", f.Pid, f.Fd.Num, f.Fd.Target)
		key = fmt.Sprintf("pty %d", index)
	default:
		if !ft.opts.ShellJob {
			return nil, fmt.Errorf("%s is a terminal of someone else (run from a shell? use --shell-job): %w", f.Fd.Target, ErrUnsupported)
		}
		key = fmt.Sprintf("dev %d:%d", maj, min)
	}
	info := s.infos[key]
	if info == nil {
		s.nextID++
		info = &tty.TtyInfoEntry{
			Id: proto.Uint32(s.nextID), Type: typ.Enum(), Locked: proto.Bool(false), Exclusive: proto.Bool(false),
			PacketMode: proto.Bool(false), Sid: proto.Uint32(0), Pgrp: proto.Uint32(0), Rdev: proto.Uint32(uint32(f.Stat.Rdev)),
		}
		if typ == tty.TtyType_PTY {
			info.Pty = &tty.TtyPtyEntry{Index: proto.Uint32(index)}
		}
		s.infos[key] = info
	}
	if master || typ != tty.TtyType_PTY {
		if err := ttyModes(f, info, master); err != nil {
			return nil, err
		}
	}
	regID := ft.id()
	ft.entries = append(ft.entries, &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_REG.Enum(),
		Id:   proto.Uint32(regID),
		Reg: &regfile.RegFileEntry{
			Id: proto.Uint32(regID), Flags: proto.Uint32(f.Flags), Pos: proto.Uint64(0), Fown: zeroFown(),
			Name: proto.String(f.Fd.Target), Mode: proto.Uint32(f.Stat.Mode), Size: proto.Uint64(0),
		},
	})
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_TTY.Enum(),
		Id:   proto.Uint32(id),
		Tty: &tty.TtyFileEntry{
			Id: proto.Uint32(id), TtyInfoId: info.Id, Flags: proto.Uint32(f.Flags), Fown: zeroFown(), RegfId: proto.Uint32(regID),
		},
	}, nil
}

// ttyModes reads the terminal's settings through a duplicate of the task's fd. On a pty master the
// ioctls act on the slave side, which is where termios and the window size live.
func ttyModes(f *openFile, info *tty.TtyInfoEntry, master bool) error {
	c, err := taskFile(f.Pid, f.Fd.Num)
	if err != nil {
		return err
	}
	defer c.Close()
	fd := int(c.Fd())
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("%s: TCGETS: %w", f.Fd.Target, err)
	}
	info.Termios = termiosEntry(t)
	if ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ); err == nil {
		info.Winsize = &tty.WinsizeEntry{WsRow: proto.Uint32(uint32(ws.Row)), WsCol: proto.Uint32(uint32(ws.Col)),
			WsXpixel: proto.Uint32(uint32(ws.Xpixel)), WsYpixel: proto.Uint32(uint32(ws.Ypixel))}
	}
	if v, err := unix.IoctlGetInt(fd, unix.TIOCGEXCL); err == nil {
		info.Exclusive = proto.Bool(v != 0)
	}
	if master {
		if v, err := unix.IoctlGetInt(fd, unix.TIOCGPTLCK); err == nil {
			info.Locked = proto.Bool(v != 0)
		}
		if v, err := unix.IoctlGetInt(fd, unix.TIOCGPKT); err == nil {
			info.PacketMode = proto.Bool(v != 0)
		}
		// Through the master anyone may ask; through a slave only a process whose terminal it is.
		if v, err := unix.IoctlGetInt(fd, unix.TIOCGSID); err == nil {
			info.Sid = proto.Uint32(uint32(v))
		}
		if v, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP); err == nil {
			info.Pgrp = proto.Uint32(uint32(v))
		}
		return nil
	}
	st, err := procfs.ReadStat(f.Pid)
	if err != nil {
		return err
	}
	info.Sid, info.Pgrp = proto.Uint32(uint32(st.Session)), proto.Uint32(uint32(st.Pgrp))
	return nil
}

func termiosEntry(t *unix.Termios) *tty.TermiosEntry {
	cc := make([]uint32, nccs)
	for i := range cc {
		cc[i] = uint32(t.Cc[i])
	}
	return &tty.TermiosEntry{
		CIflag: proto.Uint32(t.Iflag), COflag: proto.Uint32(t.Oflag), CCflag: proto.Uint32(t.Cflag), CLflag: proto.Uint32(t.Lflag),
		CLine: proto.Uint32(uint32(t.Line)), CIspeed: proto.Uint32(t.Ispeed), COspeed: proto.Uint32(t.Ospeed), CCc: cc,
	}
}

// finish checks that every pty slave has its master in the dump, or --shell-job, and queues tty-info.img.
func (ttyKind) finish(ft *fileTable) error {
	s := kindState[ttyState](ft, "tty")
	if len(s.infos) == 0 {
		return nil
	}
	var idx []uint32
	for i := range s.slaves {
		idx = append(idx, i)
	}
	sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
	for _, i := range idx {
		if s.masters[i] {
			continue
		}
		if !ft.opts.ShellJob {
			return fmt.Errorf("%s: a terminal whose master is outside the process (run from a shell? use --shell-job): %w", s.slaves[i], ErrUnsupported)
		}
		// The shell's pty: its settings are the shell's business, read what the process sees.
		s.infos[fmt.Sprintf("pty %d", i)].Type = tty.TtyType_EXT_TTY.Enum()
	}
	keys := make([]string, 0, len(s.infos))
	for k := range s.infos {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(a, b int) bool { return s.infos[keys[a]].GetId() < s.infos[keys[b]].GetId() })
	entries := make([]proto.Message, len(keys))
	for i, k := range keys {
		entries[i] = s.infos[k]
	}
	ft.addImage(images.TtyInfoName, entries...)
	return nil
}
