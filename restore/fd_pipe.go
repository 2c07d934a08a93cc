package restore

import (
	"encoding/binary"
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"
)

// pipeOpener recreates pipes: one pipe2() per dumped pipe, whose ends go to the first read and write files
// of that pipe; further open files of the same end are reopened through /proc/self/fd.
type pipeOpener struct{}

func init() { registerFdOpener(fdinfo.FdTypes_PIPE, pipeOpener{}) }

type pipeState struct {
	ends  [2]uint64 // read, write fds in the task
	first [2]uint32 // file id that got each end (0: none yet)
}

func (pipeOpener) open(rf *fileRestore, f *fdinfo.FileEntry) (uint64, error) {
	pe := f.GetPipe()
	if rf.pipes == nil {
		rf.pipes = map[uint32]*pipeState{}
	}
	ps := rf.pipes[pe.GetPipeId()]
	if ps == nil {
		var err error
		if ps, err = newPipe(rf, pe.GetPipeId()); err != nil {
			return 0, err
		}
		rf.pipes[pe.GetPipeId()] = ps
	}
	end := 0
	if pe.GetFlags()&unix.O_ACCMODE == unix.O_WRONLY {
		end = 1
	}
	fd := ps.ends[end]
	if ps.first[end] != 0 {
		// Another open file description of the same pipe end: reopen the parked first one through /proc.
		var err error
		if fd, err = openInTask(rf.t, fmt.Sprintf("/proc/self/fd/%d", rf.parked[ps.first[end]]), pe.GetFlags()); err != nil {
			return 0, err
		}
	} else {
		ps.first[end] = f.GetId()
	}
	if err := setFileFlags(rf.t, fd, pe.GetFlags()); err != nil {
		return 0, err
	}
	return fd, nil
}

func newPipe(rf *fileRestore, pipeID uint32) (*pipeState, error) {
	if holders, ok := rf.shared.pipes[pipeID]; ok {
		// Created by a process restored earlier: import both ends.
		ps := &pipeState{}
		for i, h := range holders {
			fd, err := importFd(rf.t, h)
			if err != nil {
				return nil, err
			}
			ps.ends[i] = fd
		}
		return ps, nil
	}
	addr, _ := rf.t.Scratch()
	if _, err := rf.t.Syscall(unix.SYS_PIPE2, addr, 0); err != nil {
		return nil, fmt.Errorf("pipe2: %w", err)
	}
	b, err := rf.t.ReadScratch(0, 8)
	if err != nil {
		return nil, err
	}
	ps := &pipeState{ends: [2]uint64{uint64(binary.LittleEndian.Uint32(b)), uint64(binary.LittleEndian.Uint32(b[4:]))}}
	// Keep a copy of both ends for the other processes of the tree that hold this pipe.
	var holders [2]remoteFd
	for i, end := range ps.ends {
		keep := rf.nextPark()
		if _, err := rf.t.Syscall(unix.SYS_DUP3, end, keep, unix.O_CLOEXEC); err != nil {
			return nil, fmt.Errorf("keep pipe end: %w", err)
		}
		holders[i] = remoteFd{t: rf.t, vpid: rf.p.pid, fd: keep}
		rf.shared.strays = append(rf.shared.strays, holders[i])
	}
	rf.shared.pipes[pipeID] = holders
	if data := rf.p.pipes[pipeID]; len(data) > 0 {
		if err := fillPipe(rf.t.Pid, ps.ends[1], data); err != nil {
			return nil, fmt.Errorf("pipe:[%d] data: %w", pipeID, err)
		}
	}
	return ps, nil
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
	_, err = f.Write(data)
	return err
}
