package kernel

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// ProbeBPF loads a trivial socket-filter program ("return 0") with
// cilium/ebpf and closes it: the bpf(2) syscall, the verifier and program
// loading work for this process.
func ProbeBPF() error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "lazyr_probe",
		Type: ebpf.SocketFilter,
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
		License: "GPL",
	})
	if err != nil {
		return missing("bpf: loading a socket filter program (CONFIG_BPF_SYSCALL, CAP_BPF or CAP_SYS_ADMIN)", err)
	}
	return prog.Close()
}
