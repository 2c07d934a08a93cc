// Package regs converts x86-64 register state between its kernel forms (user_regs_struct from
// PTRACE_GETREGS, the XSAVE area from NT_X86_XSTATE) and CRIU's image entries (core-x86.proto), and
// prepares registers for resuming a task that was stopped inside a system call.
//
// The XSAVE area is the standard, non-compacted layout that ptrace always uses; the offsets of the
// components CRIU records (AVX, MPX, AVX-512, PKRU) are architectural constants of that layout.
package regs
