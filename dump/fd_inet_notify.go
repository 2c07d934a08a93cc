package dump

// Notify is told when a dump locks and unlocks the network of the process, for callers that manage the
// network themselves (a container runtime that firewalls the container, say) instead of, or on top of,
// lazyr's own eBPF lock. An error aborts the dump, which then gives the process back untouched.
type Notify interface {
	// NetworkLock is called before the process is frozen.
	NetworkLock() error
	// NetworkUnlock is called when the dump gives the process back: after a failure, or at the end of
	// a dump with LeaveRunning. After a dump that kills the process the network stays locked until the
	// restore unlocks it.
	NetworkUnlock() error
}

// NoNotify is the default Notify: it does nothing.
type NoNotify struct{}

func (NoNotify) NetworkLock() error   { return nil }
func (NoNotify) NetworkUnlock() error { return nil }
