package restore

import (
	"encoding/binary"
	"fmt"
	"os"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/compel"
)

// restoreFiles recreates the task's file descriptors. Each open file is created once, parked on a high fd
// number (so that creating the next one cannot take a number that is still needed), then dup3()ed to
// every fd that refers to it, and the parking fds are closed.
func restoreFiles(t *compel.Task, p *plan) error {
	maxFd := uint32(0)
	for _, fd := range p.fds {
		if fd.GetFd() > maxFd {
			maxFd = fd.GetFd()
		}
	}
	park := uint64(maxFd) + 1
	parked := map[uint32]uint64{} // file id -> parking fd
	parkFd := func(fd uint64, id uint32) error {
		if _, err := t.Syscall(unix.SYS_DUP3, fd, park, 0); err != nil {
			return fmt.Errorf("park fd: %w", err)
		}
		if _, err := t.Syscall(unix.SYS_CLOSE, fd); err != nil {
			return err
		}
		parked[id] = park
		park++
		return nil
	}
	// Pipes: one pipe2() per pipe id, its two ends going to the first read and write file of that pipe.
	type pipeFiles struct{ r, w []*fdinfo.FileEntry }
	pipes := map[uint32]*pipeFiles{}
	var ids []uint32
	for id := range p.files {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	used := map[uint32]bool{}
	for _, fd := range p.fds {
		used[fd.GetId()] = true
	}
	for _, id := range ids {
		f := p.files[id]
		if !used[id] {
			continue // mapped files, cwd, root, exe: not open fds
		}
		switch f.GetType() {
		case fdinfo.FdTypes_PIPE:
			pe := f.GetPipe()
			pf := pipes[pe.GetPipeId()]
			if pf == nil {
				pf = &pipeFiles{}
				pipes[pe.GetPipeId()] = pf
			}
			if pe.GetFlags()&unix.O_ACCMODE == unix.O_WRONLY {
				pf.w = append(pf.w, f)
			} else {
				pf.r = append(pf.r, f)
			}
		case fdinfo.FdTypes_REG:
			fd, err := openRegular(t, f)
			if err != nil {
				return err
			}
			if err := parkFd(fd, id); err != nil {
				return err
			}
		default:
			return fmt.Errorf("file id %d of type %v: %w", id, f.GetType(), ErrUnsupported)
		}
	}
	var pipeIDs []uint32
	for id := range pipes {
		pipeIDs = append(pipeIDs, id)
	}
	sort.Slice(pipeIDs, func(i, j int) bool { return pipeIDs[i] < pipeIDs[j] })
	for _, pipeID := range pipeIDs {
		pf := pipes[pipeID]
		addr, _ := t.Scratch()
		if _, err := t.Syscall(unix.SYS_PIPE2, addr, 0); err != nil {
			return fmt.Errorf("pipe2: %w", err)
		}
		b, err := t.ReadScratch(0, 8)
		if err != nil {
			return err
		}
		rfd, wfd := uint64(binary.LittleEndian.Uint32(b)), uint64(binary.LittleEndian.Uint32(b[4:]))
		if data := p.pipes[pipeID]; len(data) > 0 {
			if err := fillPipe(t.Pid, wfd, data); err != nil {
				return fmt.Errorf("pipe:[%d] data: %w", pipeID, err)
			}
		}
		for end, files := range [][]*fdinfo.FileEntry{pf.r, pf.w} {
			base := rfd
			if end == 1 {
				base = wfd
			}
			for i, f := range files {
				fd := base
				if i > 0 {
					// Another open file description of the same pipe end: reopen it through /proc.
					var err error
					if fd, err = openInTask(t, fmt.Sprintf("/proc/self/fd/%d", base), f.GetPipe().GetFlags()); err != nil {
						return err
					}
				}
				if err := setFileFlags(t, fd, f.GetPipe().GetFlags()); err != nil {
					return err
				}
				if err := parkFd(fd, f.GetId()); err != nil {
					return err
				}
			}
			if len(files) == 0 {
				if _, err := t.Syscall(unix.SYS_CLOSE, base); err != nil {
					return err
				}
			}
		}
	}
	for _, fd := range p.fds {
		flags := uint64(0)
		if fd.GetFlags()&unix.FD_CLOEXEC != 0 {
			flags = unix.O_CLOEXEC
		}
		if _, err := t.Syscall(unix.SYS_DUP3, parked[fd.GetId()], uint64(fd.GetFd()), flags); err != nil {
			return fmt.Errorf("fd %d: dup3: %w", fd.GetFd(), err)
		}
	}
	for _, pfd := range parked {
		if _, err := t.Syscall(unix.SYS_CLOSE, pfd); err != nil {
			return err
		}
	}
	return nil
}

// openRegular opens a regular file (or an allowed device or directory) at its dumped position.
func openRegular(t *compel.Task, f *fdinfo.FileEntry) (uint64, error) {
	r := f.GetReg()
	var st unix.Stat_t
	if err := unix.Stat(r.GetName(), &st); err != nil {
		return 0, fmt.Errorf("file %s: %w", r.GetName(), err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG && uint64(st.Size) < r.GetPos() {
		return 0, fmt.Errorf("%w: file %s is %d bytes now, shorter than its saved position %d", ErrBadImages, r.GetName(), st.Size, r.GetPos())
	}
	fd, err := openInTask(t, r.GetName(), r.GetFlags())
	if err != nil {
		return 0, err
	}
	if r.GetPos() != 0 {
		if _, err := t.Syscall(unix.SYS_LSEEK, fd, r.GetPos(), unix.SEEK_SET); err != nil {
			return 0, fmt.Errorf("seek %s to %d: %w", r.GetName(), r.GetPos(), err)
		}
	}
	return fd, nil
}

func setFileFlags(t *compel.Task, fd uint64, flags uint32) error {
	fl := flags & (unix.O_NONBLOCK | unix.O_APPEND | unix.O_ASYNC | unix.O_DIRECT | unix.O_NOATIME)
	if fl == 0 {
		return nil
	}
	if _, err := t.Syscall(unix.SYS_FCNTL, fd, unix.F_SETFL, uint64(fl)); err != nil {
		return fmt.Errorf("fcntl(F_SETFL): %w", err)
	}
	return nil
}

// fillPipe writes the saved bytes into the task's pipe from outside, through /proc/PID/fd.
func fillPipe(pid int, wfd uint64, data []byte) error {
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", pid, wfd), os.O_WRONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if len(data) > 64<<10 {
		if _, err := unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, len(data)); err != nil {
			return fmt.Errorf("grow pipe to %d bytes: %w", len(data), err)
		}
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	return nil
}

// restoreFS sets the cwd and root.
func restoreFS(t *compel.Task, p *plan) error {
	if root := p.path(p.fs.GetRootId()); root != "/" {
		addr, err := t.WriteScratch(0, append([]byte(root), 0))
		if err != nil {
			return err
		}
		if _, err := t.Syscall(unix.SYS_CHROOT, addr); err != nil {
			return fmt.Errorf("chroot %s: %w", root, err)
		}
	}
	cwd := p.path(p.fs.GetCwdId())
	addr, err := t.WriteScratch(0, append([]byte(cwd), 0))
	if err != nil {
		return err
	}
	if _, err := t.Syscall(unix.SYS_CHDIR, addr); err != nil {
		return fmt.Errorf("chdir %s: %w", cwd, err)
	}
	if _, err := t.Syscall(unix.SYS_UMASK, uint64(p.fs.GetUmask())); err != nil {
		return fmt.Errorf("umask: %w", err)
	}
	return nil
}
