package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/tty"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/compel"
	"github.com/lazyr/lazyr/images"
)

// maxPtyTries bounds how many ptys are opened to get the dumped index back.
const maxPtyTries = 256

// ttyOpener restores terminals. A pty whose master is in the images is made again with the same index:
// /dev/ptmx hands out the lowest free index, so masters are opened until the wanted one comes (the
// extra ones are closed again), and its settings (termios, window size, lock, packet and exclusive
// modes) are set; a slave is then opened by path. Any other terminal was someone else's (the shell's):
// with ShellJob the process gets lazyr's own terminal instead, else the restore is refused.
type ttyOpener struct{}

func init() { registerFdOpener(fdinfo.FdTypes_TTY, ttyOpener{}) }

type ttyState struct {
	infos   map[uint32]*tty.TtyInfoEntry
	masters map[uint32]bool   // pty indexes with a master in the images
	created map[uint32]uint64 // pty index -> master fd made for a slave, not handed out yet
	handed  map[uint32]bool   // pty index -> its master fd was handed out
}

func (s *ttyState) load(rf *fileRestore) error {
	s.infos, s.masters, s.created, s.handed = map[uint32]*tty.TtyInfoEntry{}, map[uint32]bool{}, map[uint32]uint64{}, map[uint32]bool{}
	infos, err := images.Read[tty.TtyInfoEntry](rf.p.dir, images.TtyInfoName)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s: %w", ErrBadImages, images.TtyInfoName, err)
	}
	for _, i := range infos {
		s.infos[i.GetId()] = i
	}
	for _, f := range rf.p.files {
		if tf := f.GetTty(); tf != nil {
			if info := s.infos[tf.GetTtyInfoId()]; info != nil && isMaster(rf, tf) {
				s.masters[info.GetPty().GetIndex()] = true
			}
		}
	}
	return nil
}

// isMaster tells a pty master from a slave by the device of its path entry (5:2, /dev/ptmx).
func isMaster(rf *fileRestore, tf *tty.TtyFileEntry) bool {
	reg := rf.p.files[tf.GetRegfId()].GetReg()
	return reg != nil && (reg.GetName() == "/dev/ptmx" || reg.GetName() == "/dev/pts/ptmx")
}

func (ttyOpener) open(rf *fileRestore, f *fdinfo.FileEntry) (uint64, error) {
	tf := f.GetTty()
	if tf == nil {
		return 0, fmt.Errorf("%w: tty entry %d without its tty part", ErrBadImages, f.GetId())
	}
	s := kindState[ttyState](rf, "tty")
	if s.infos == nil {
		if err := s.load(rf); err != nil {
			return 0, err
		}
	}
	info := s.infos[tf.GetTtyInfoId()]
	if info == nil {
		return 0, fmt.Errorf("%w: tty %d missing from %s", ErrBadImages, tf.GetTtyInfoId(), images.TtyInfoName)
	}
	t := rf.t
	flags := tf.GetFlags() | unix.O_NOCTTY
	index := info.GetPty().GetIndex()
	if info.GetType() != tty.TtyType_PTY || !s.masters[index] {
		return openShellTTY(rf, info, flags)
	}
	if isMaster(rf, tf) {
		if s.handed[index] {
			return 0, fmt.Errorf("pty %d has two open masters: %w", index, ErrUnsupported)
		}
		s.handed[index] = true
		if fd, ok := s.created[index]; ok {
			delete(s.created, index)
			return fd, setStatusFlags(t, fd, tf.GetFlags())
		}
		fd, err := openPty(t, info)
		if err != nil {
			return 0, err
		}
		return fd, setStatusFlags(t, fd, tf.GetFlags())
	}
	if _, ok := s.created[index]; !ok && !s.handed[index] {
		fd, err := openPty(t, info)
		if err != nil {
			return 0, err
		}
		if fd, err = rf.parkHelper(fd); err != nil {
			return 0, err
		}
		s.created[index] = fd
	}
	return openInTask(t, fmt.Sprintf("/dev/pts/%d", index), flags)
}

// openPty opens /dev/ptmx until it gets the pty with the dumped index, and sets the pty up.
func openPty(t *compel.Task, info *tty.TtyInfoEntry) (uint64, error) {
	want := uint64(info.GetPty().GetIndex())
	var extra []uint64
	defer func() {
		for _, fd := range extra {
			closeInTask(t, fd)
		}
	}()
	for i := 0; i < maxPtyTries; i++ {
		fd, err := openInTask(t, "/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY)
		if err != nil {
			return 0, err
		}
		addr, _ := t.Scratch()
		if _, err := t.Syscall(unix.SYS_IOCTL, fd, unix.TIOCGPTN, addr); err != nil {
			closeInTask(t, fd)
			return 0, fmt.Errorf("TIOCGPTN: %w", err)
		}
		b, err := t.ReadScratch(0, 4)
		if err != nil {
			closeInTask(t, fd)
			return 0, err
		}
		got := uint64(binary.LittleEndian.Uint32(b))
		if got == want {
			if err := setupPty(t, fd, info); err != nil {
				closeInTask(t, fd)
				return 0, fmt.Errorf("pty %d: %w", want, err)
			}
			return fd, nil
		}
		extra = append(extra, fd)
		if got > want {
			return 0, fmt.Errorf("pty %d is taken (got %d): %w", want, got, ErrUnsupported)
		}
	}
	return 0, fmt.Errorf("pty %d not reached after %d ptys", want, maxPtyTries)
}

// setupPty sets the pty's modes through its master: termios and the window size act on the slave side.
func setupPty(t *compel.Task, fd uint64, info *tty.TtyInfoEntry) error {
	ioctlInt := func(req uint64, v bool) error {
		n := uint64(0)
		if v {
			n = 1
		}
		addr, err := t.WriteScratch(0, []byte{byte(n), 0, 0, 0})
		if err != nil {
			return err
		}
		_, err = t.Syscall(unix.SYS_IOCTL, fd, req, addr)
		return err
	}
	if te := info.GetTermios(); te != nil {
		b := termiosBytes(te)
		addr, err := t.WriteScratch(0, b)
		if err != nil {
			return err
		}
		if _, err := t.Syscall(unix.SYS_IOCTL, fd, unix.TCSETS, addr); err != nil {
			return fmt.Errorf("TCSETS: %w", err)
		}
	}
	if ws := info.GetWinsize(); ws != nil {
		b := make([]byte, 8)
		le := binary.LittleEndian
		le.PutUint16(b, uint16(ws.GetWsRow()))
		le.PutUint16(b[2:], uint16(ws.GetWsCol()))
		le.PutUint16(b[4:], uint16(ws.GetWsXpixel()))
		le.PutUint16(b[6:], uint16(ws.GetWsYpixel()))
		addr, err := t.WriteScratch(0, b)
		if err != nil {
			return err
		}
		if _, err := t.Syscall(unix.SYS_IOCTL, fd, unix.TIOCSWINSZ, addr); err != nil {
			return fmt.Errorf("TIOCSWINSZ: %w", err)
		}
	}
	if err := ioctlInt(unix.TIOCSPTLCK, info.GetLocked()); err != nil {
		return fmt.Errorf("TIOCSPTLCK: %w", err)
	}
	if info.GetPacketMode() {
		if err := ioctlInt(unix.TIOCPKT, true); err != nil {
			return fmt.Errorf("TIOCPKT: %w", err)
		}
	}
	if info.GetExclusive() {
		if _, err := t.Syscall(unix.SYS_IOCTL, fd, unix.TIOCEXCL, 0); err != nil {
			return fmt.Errorf("TIOCEXCL: %w", err)
		}
	}
	return nil
}

// termiosBytes lays a TermiosEntry out as the kernel's struct termios (TCSETS): four flag words,
// c_line, 19 control characters, then the speeds.
func termiosBytes(te *tty.TermiosEntry) []byte {
	b := make([]byte, 44)
	le := binary.LittleEndian
	le.PutUint32(b, te.GetCIflag())
	le.PutUint32(b[4:], te.GetCOflag())
	le.PutUint32(b[8:], te.GetCCflag())
	le.PutUint32(b[12:], te.GetCLflag())
	b[16] = byte(te.GetCLine())
	for i, c := range te.GetCCc() {
		if i < 19 {
			b[17+i] = byte(c)
		}
	}
	le.PutUint32(b[36:], te.GetCIspeed())
	le.PutUint32(b[40:], te.GetCOspeed())
	return b
}

// openShellTTY gives the task lazyr's own terminal in place of one it had from its shell.
func openShellTTY(rf *fileRestore, info *tty.TtyInfoEntry, flags uint32) (uint64, error) {
	if !rf.opts.ShellJob {
		return 0, fmt.Errorf("the process used a terminal that is not its own (%v %d:%d): restore it with --shell-job: %w",
			info.GetType(), unix.Major(uint64(info.GetRdev())), unix.Minor(uint64(info.GetRdev())), ErrUnsupported)
	}
	if info.GetType() == tty.TtyType_CTTY {
		return openInTask(rf.t, "/dev/tty", flags)
	}
	path, err := ownTerminal()
	if err != nil {
		return 0, err
	}
	return openInTask(rf.t, path, flags)
}

// ownTerminal returns the path of lazyr's terminal: the first of its fds 0, 1, 2 that is one.
func ownTerminal() (string, error) {
	for fd := 0; fd < 3; fd++ {
		if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
			continue
		}
		p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		if err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("--shell-job: lazyr has no terminal on stdin, stdout or stderr to give the process")
}
