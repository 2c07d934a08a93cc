package compel

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// batchCode is a tiny in-task executor: it runs a table of system calls and traps, so that N syscalls
// cost one ptrace round trip instead of N (about 30 µs each on this machine). Source (Intel syntax):
//
//	loop: test r13, r13 ; jz done          ; r12 = table, r13 = entries left
//	      mov rax,[r12] ; mov rdi,[r12+8] ; mov rsi,[r12+16] ; mov rdx,[r12+24]
//	      mov r10,[r12+32] ; mov r8,[r12+40] ; mov r9,[r12+48]
//	      syscall
//	      mov [r12+56], rax
//	      cmp rax, -4095 ; jae done         ; stop at the first error
//	      add r12, 64 ; dec r13 ; jmp loop
//	done: int3
var batchCode = []byte{
	0x4d, 0x85, 0xed, 0x74, 0x3a,
	0x49, 0x8b, 0x04, 0x24,
	0x49, 0x8b, 0x7c, 0x24, 0x08,
	0x49, 0x8b, 0x74, 0x24, 0x10,
	0x49, 0x8b, 0x54, 0x24, 0x18,
	0x4d, 0x8b, 0x54, 0x24, 0x20,
	0x4d, 0x8b, 0x44, 0x24, 0x28,
	0x4d, 0x8b, 0x4c, 0x24, 0x30,
	0x0f, 0x05,
	0x49, 0x89, 0x44, 0x24, 0x38,
	0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff,
	0x73, 0x09,
	0x49, 0x83, 0xc4, 0x40,
	0x49, 0xff, 0xcd,
	0xeb, 0xc1,
	0xcc,
}

const batchEntry = 64 // bytes per table entry: nr, six arguments, result

// BatchCodeSize is the room the executor needs in the task.
const BatchCodeSize = 64

// Call is one system call of a batch.
type Call struct {
	Nr   uintptr
	Args [6]uint64
	Ret  uint64 // filled in by Batch
}

// NewCall builds a Call.
func NewCall(nr uintptr, args ...uint64) Call {
	c := Call{Nr: nr}
	copy(c.Args[:], args)
	return c
}

// InstallBatch writes the executor at code (in an executable, writable mapping of the task) and reserves
// table bytes at table for batches. Afterwards Batch can be used.
func (t *Task) InstallBatch(code, table uint64, tableSize uint64) error {
	if err := t.WriteMem(code, batchCode); err != nil {
		return err
	}
	t.batchCode, t.batchTable, t.batchTableSize = code, table, tableSize
	return nil
}

// Batch runs the calls in order inside the task with one ptrace round trip and fills in their results.
// It stops at the first call that fails and returns its error (a *SyscallError naming the call's index).
// Preconditions: called from Tracer.Do; InstallBatch was called; no call may need ptrace's attention
// (no clone, no exec).
func (t *Task) Batch(calls []Call) error {
	if err := t.tr.check(); err != nil {
		return err
	}
	if t.batchCode == 0 {
		return fmt.Errorf("compel: no batch executor installed")
	}
	max := int(t.batchTableSize / batchEntry)
	for len(calls) > max {
		if err := t.Batch(calls[:max]); err != nil {
			return err
		}
		calls = calls[max:]
	}
	if len(calls) == 0 {
		return nil
	}
	tab := make([]byte, len(calls)*batchEntry)
	le := binary.LittleEndian
	for i, c := range calls {
		e := tab[i*batchEntry:]
		le.PutUint64(e, uint64(c.Nr))
		for j, a := range c.Args {
			le.PutUint64(e[8+8*j:], a)
		}
		le.PutUint64(e[56:], ^uint64(0)-4096) // "not run" marker
	}
	if err := t.WriteMem(t.batchTable, tab); err != nil {
		return err
	}
	r := t.saved
	r.R12, r.R13 = t.batchTable, uint64(len(calls))
	r.Rip = t.batchCode
	r.Orig_rax = ^uint64(0)
	r.Eflags &^= eflagsTF
	if err := unix.PtraceSetRegs(t.Pid, &r); err != nil {
		return fmt.Errorf("setregs %d: %w", t.Pid, err)
	}
	if err := unix.PtraceCont(t.Pid, 0); err != nil {
		return fmt.Errorf("cont %d: %w", t.Pid, err)
	}
	ws, err := t.waitStop()
	if err != nil {
		return err
	}
	if !ws.Stopped() || ws.StopSignal() != unix.SIGTRAP {
		return fmt.Errorf("task %d: batch stopped by %#x, not its trap", t.Pid, uint32(ws))
	}
	var out unix.PtraceRegs
	if err := unix.PtraceGetRegs(t.Pid, &out); err != nil {
		return fmt.Errorf("getregs %d: %w", t.Pid, err)
	}
	if out.Rip != t.batchCode+uint64(len(batchCode)) {
		return fmt.Errorf("task %d: batch trapped at %#x, not at its end", t.Pid, out.Rip)
	}
	if err := t.ReadMem(t.batchTable, tab); err != nil {
		return err
	}
	for i := range calls {
		ret := le.Uint64(tab[i*batchEntry+56:])
		calls[i].Ret = ret
		if int64(ret) < 0 && int64(ret) >= -4095 {
			return &SyscallError{Nr: calls[i].Nr, Errno: unix.Errno(-int64(ret)), Index: i}
		}
	}
	return nil
}
