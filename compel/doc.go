// Package compel gets inside a live task: it seizes and interrupts tasks with ptrace, runs system calls in
// their context (syscall injection), reads and writes their memory and their register state, and starts the
// tiny stub process that restore grows into the restored tasks. It is usable on its own, like CRIU's libcompel.
//
// Ptrace requests are only valid from the thread that attached, so a Tracer owns one goroutine locked to its OS
// thread; callers hand it closures with Tracer.Do and every Task method runs inside such a closure
// (Preconditions: called from Tracer.Do). The thread is never given back to the Go scheduler for reuse while
// tracees may still depend on it: a restored task's parent is that thread, and its parent-death signal fires
// when the thread exits.
//
// Syscall injection: the task's registers are saved, rip is pointed at a `syscall` instruction (a gadget
// found in the task's vDSO, or the stub's own), the number and arguments are loaded, and the task is
// single-stepped over that one instruction; rax then holds the result and the saved registers are put back.
// orig_rax is set to -1 while doing so, so that the kernel's syscall-restart logic does not rewrite the
// injected state of a task that was interrupted inside a system call.
//
// Each injected syscall or batch is a round trip: the tracer wakes the task, the task wakes the tracer.
// Tracer.Pin keeps the tracer thread, and the tasks it creates, on one CPU while a restore runs, so that
// those wake-ups are plain context switches rather than wake-ups of another (idle, virtual) CPU; Detach
// gives a task the affinity it would have had otherwise.
package compel
