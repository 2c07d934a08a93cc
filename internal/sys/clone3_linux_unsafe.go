package sys

import "unsafe"

// CloneArgs is struct clone_args (clone3), version 2 (with set_tid and cgroup).
type CloneArgs struct {
	Flags      uint64
	Pidfd      uint64
	ChildTid   uint64
	ParentTid  uint64
	ExitSignal uint64
	Stack      uint64
	StackSize  uint64
	TLS        uint64
	SetTid     uint64
	SetTidSize uint64
	Cgroup     uint64
}

// Bytes returns the in-memory representation to copy into a task before an injected clone3.
func (c *CloneArgs) Bytes() []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(c)), unsafe.Sizeof(*c))
}
