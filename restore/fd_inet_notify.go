package restore

// Notify is told when a restore locks and unlocks the network, for callers that manage the network
// themselves (a container runtime, say) instead of, or on top of, lazyr's own eBPF lock. Its method set
// is that of dump.Notify, so one value serves both. An error aborts the restore.
type Notify interface {
	// NetworkLock is called before anything is created.
	NetworkLock() error
	// NetworkUnlock is called once the restored connections are in place, right before the process
	// runs, or when the restore fails.
	NetworkUnlock() error
}

// NoNotify is the default Notify: it does nothing.
type NoNotify struct{}

func (NoNotify) NetworkLock() error   { return nil }
func (NoNotify) NetworkUnlock() error { return nil }
