package regs

import (
	core_x86 "github.com/checkpoint-restore/go-criu/v8/crit/images/core-x86"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// ToImage converts ptrace registers into CRIU's user_x86_regs_entry.
func ToImage(r *unix.PtraceRegs) *core_x86.UserX86RegsEntry {
	u := proto.Uint64
	return &core_x86.UserX86RegsEntry{
		R15: u(r.R15), R14: u(r.R14), R13: u(r.R13), R12: u(r.R12),
		Bp: u(r.Rbp), Bx: u(r.Rbx), R11: u(r.R11), R10: u(r.R10),
		R9: u(r.R9), R8: u(r.R8), Ax: u(r.Rax), Cx: u(r.Rcx),
		Dx: u(r.Rdx), Si: u(r.Rsi), Di: u(r.Rdi), OrigAx: u(r.Orig_rax),
		Ip: u(r.Rip), Cs: u(r.Cs), Flags: u(r.Eflags), Sp: u(r.Rsp),
		Ss: u(r.Ss), FsBase: u(r.Fs_base), GsBase: u(r.Gs_base),
		Ds: u(r.Ds), Es: u(r.Es), Fs: u(r.Fs), Gs: u(r.Gs),
		Mode: core_x86.UserX86RegsMode_NATIVE.Enum(),
	}
}

// FromImage converts CRIU's registers back into ptrace form.
func FromImage(e *core_x86.UserX86RegsEntry) unix.PtraceRegs {
	return unix.PtraceRegs{
		R15: e.GetR15(), R14: e.GetR14(), R13: e.GetR13(), R12: e.GetR12(),
		Rbp: e.GetBp(), Rbx: e.GetBx(), R11: e.GetR11(), R10: e.GetR10(),
		R9: e.GetR9(), R8: e.GetR8(), Rax: e.GetAx(), Rcx: e.GetCx(),
		Rdx: e.GetDx(), Rsi: e.GetSi(), Rdi: e.GetDi(), Orig_rax: e.GetOrigAx(),
		Rip: e.GetIp(), Cs: e.GetCs(), Eflags: e.GetFlags(), Rsp: e.GetSp(),
		Ss: e.GetSs(), Fs_base: e.GetFsBase(), Gs_base: e.GetGsBase(),
		Ds: e.GetDs(), Es: e.GetEs(), Fs: e.GetFs(), Gs: e.GetGs(),
	}
}

// Kernel-internal restart codes a task stopped inside a system call shows in rax (include/linux/errno.h).
const (
	errRestartSys          = 512
	errRestartNoIntr       = 513
	errRestartNoHand       = 514
	errRestartRestartBlock = 516
)

// PrepareResume turns the registers of a task that was stopped inside an interrupted system call into
// registers that re-issue that call when the task resumes in a fresh process, and clears orig_rax so the
// kernel does not apply its own restart logic on top.
//
// -ERESTART_RESTARTBLOCK (nanosleep, clock_nanosleep, poll with a timeout) would normally continue through
// restart_syscall(), whose saved restart block lives in the old kernel task; a new task has none, so the
// original call is issued again with its original arguments (a relative sleep sleeps its full time again).
func PrepareResume(r unix.PtraceRegs) unix.PtraceRegs {
	if int64(r.Orig_rax) >= 0 {
		switch -int64(r.Rax) {
		case errRestartSys, errRestartNoIntr, errRestartNoHand, errRestartRestartBlock:
			r.Rax = r.Orig_rax
			r.Rip -= 2 // length of the `syscall` instruction
		}
	}
	r.Orig_rax = ^uint64(0)
	r.Eflags &^= 0x100 // never resume with the trap flag a single-step left behind
	return r
}
