package compel

import (
	"encoding/binary"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/internal/sys"
)

// The stub is a ~130-byte static ELF whose only job is to be a clean, single-threaded, fd-less process
// that restore can drive by injected syscalls; restored tasks are cloned out of it with exact PIDs.
const (
	stubBase    = 0x10000 // low and page aligned, above the usual vm.mmap_min_addr; restore unmaps it
	stubHdrSize = 64 + 56 // ELF header + one program header
	// StubScratchOffset / StubScratchSize: zero-filled memory (bss) right after the code page.
	stubScratchOffset = 0x1000
	stubScratchSize   = 0x10000
)

// stubCode: loop { pause() } with the `syscall` used as the injection gadget.
var stubCode = []byte{
	0xb8, 0x22, 0x00, 0x00, 0x00, // mov eax, SYS_pause
	0x0f, 0x05, // syscall  <- gadget
	0xeb, 0xf7, // jmp back to mov
}

// stubELF assembles the stub image.
func stubELF() []byte {
	le := binary.LittleEndian
	size := stubHdrSize + len(stubCode)
	b := make([]byte, size)
	copy(b, []byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* LE */, 1 /* version */})
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 0x3e) // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], stubBase+stubHdrSize) // entry
	le.PutUint64(b[32:], 64)                   // phoff
	le.PutUint16(b[52:], 64)                   // ehsize
	le.PutUint16(b[54:], 56)                   // phentsize
	le.PutUint16(b[56:], 1)                    // phnum
	ph := b[64:]
	le.PutUint32(ph[0:], 1)                                          // PT_LOAD
	le.PutUint32(ph[4:], 7)                                          // RWX
	le.PutUint64(ph[8:], 0)                                          // offset
	le.PutUint64(ph[16:], stubBase)                                  // vaddr
	le.PutUint64(ph[24:], stubBase)                                  // paddr
	le.PutUint64(ph[32:], uint64(size))                              // filesz
	le.PutUint64(ph[40:], uint64(stubScratchOffset+stubScratchSize)) // memsz
	le.PutUint64(ph[48:], 0x1000)                                    // align
	copy(b[stubHdrSize:], stubCode)
	return b
}

// StartStub starts the stub process traced by this tracer and stopped at its first instruction.
// The stub has no file descriptors, and dies if the tracer dies (PTRACE_O_EXITKILL).
// Preconditions: called from Tracer.Do (the forking thread becomes the tracer and the parent).
func (tr *Tracer) StartStub() (*Task, error) {
	if err := tr.check(); err != nil {
		return nil, err
	}
	fd, err := unix.MemfdCreate("lazyr-stub", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create for stub: %w", err)
	}
	f := os.NewFile(uintptr(fd), "lazyr-stub")
	defer f.Close()
	if _, err := f.Write(stubELF()); err != nil {
		return nil, fmt.Errorf("write stub: %w", err)
	}
	// The child resolves /proc/self/fd/N before exec closes the CLOEXEC memfd, so it starts with no fds.
	p, err := os.StartProcess(fmt.Sprintf("/proc/self/fd/%d", fd), []string{"lazyr-stub"}, &os.ProcAttr{
		Env: []string{},
		Sys: &syscall.SysProcAttr{Ptrace: true},
	})
	if err != nil {
		return nil, fmt.Errorf("start stub: %w", err)
	}
	pid := p.Pid
	_ = p.Release()
	t := &Task{Pid: pid, tr: tr, pinned: tr.pinned}
	ws, err := t.waitStop()
	if err != nil {
		return nil, fmt.Errorf("stub did not stop at exec: %w", err)
	}
	if !ws.Stopped() || ws.StopSignal() != unix.SIGTRAP {
		_ = t.Kill()
		return nil, fmt.Errorf("stub %d: unexpected stop %#x", pid, uint32(ws))
	}
	if err := unix.PtraceSetOptions(pid, traceOptions); err != nil {
		_ = t.Kill()
		return nil, fmt.Errorf("ptrace setoptions on stub: %w", err)
	}
	if err := t.refreshRegs(); err != nil {
		_ = t.Kill()
		return nil, err
	}
	t.gadget = stubBase + stubHdrSize + 5
	t.scratch, t.scratchLen = stubBase+stubScratchOffset, stubScratchSize
	return t, nil
}

// CloneWithPid makes the task (normally the stub) create a child with exactly the PID pid using clone3 with
// set_tid. flags are extra clone flags (CLONE_PARENT makes the child a sibling: the tracer thread's child).
// The child is returned stopped and traced, sharing the caller's gadget and scratch addresses (its memory is a
// copy of the caller's).
func (t *Task) CloneWithPid(pid int, flags uint64) (*Task, error) {
	tids := make([]byte, 4)
	binary.LittleEndian.PutUint32(tids, uint32(pid))
	tidAddr, err := t.WriteScratch(0, tids)
	if err != nil {
		return nil, err
	}
	exitSignal := uint64(unix.SIGCHLD)
	if flags&(unix.CLONE_PARENT|unix.CLONE_THREAD) != 0 {
		exitSignal = 0 // clone3 rejects an exit signal with these; the parent's own exit signal is inherited
	}
	args := sys.CloneArgs{
		Flags:      flags,
		ExitSignal: exitSignal,
		SetTid:     tidAddr,
		SetTidSize: 1,
	}
	argsAddr, err := t.WriteScratch(64, args.Bytes())
	if err != nil {
		return nil, err
	}
	child := 0
	ret, err := t.SyscallRaw(unix.SYS_CLONE3, func(ev int, msg uint) error {
		if ev == unix.PTRACE_EVENT_FORK || ev == unix.PTRACE_EVENT_CLONE || ev == unix.PTRACE_EVENT_VFORK {
			child = int(msg)
		}
		return nil
	}, argsAddr, uint64(len(args.Bytes())))
	if err != nil {
		return nil, err
	}
	if int64(ret) < 0 {
		return nil, &SyscallError{Nr: unix.SYS_CLONE3, Errno: unix.Errno(-int64(ret))}
	}
	// The event message is the new task's pid as the tracer sees it; clone3's result is its pid in the
	// caller's namespace, which is the one set_tid chose unless the child starts a new PID namespace.
	if child == 0 {
		child = int(ret)
	}
	if flags&unix.CLONE_NEWPID == 0 && int(ret) != pid {
		return nil, fmt.Errorf("clone3 created pid %d, wanted %d", ret, pid)
	}
	c := &Task{Pid: child, tr: t.tr, gadget: t.gadget, scratch: t.scratch, scratchLen: t.scratchLen,
		batchCode: t.batchCode, batchTable: t.batchTable, batchTableSize: t.batchTableSize, pinned: t.pinned}
	// An auto-attached child starts with a stop of its own (SIGSTOP or PTRACE_EVENT_STOP).
	if _, err := c.waitStop(); err != nil {
		return nil, fmt.Errorf("new task %d: %w", child, err)
	}
	if err := c.refreshRegs(); err != nil {
		return nil, err
	}
	return c, nil
}
