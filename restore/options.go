package restore

import (
	"errors"

	"github.com/lazyr/lazyr/compel"
	"time"

	"go.uber.org/zap"
)

// Options says what to restore and how.
type Options struct {
	ImagesDir string
	WorkDir   string
	// Detached: the caller does not wait for the process; a parent-death signal of the root task is then
	// not restored (its parent, lazyr, is about to exit).
	Detached  bool
	LazyPages bool // register private anonymous memory with userfaultfd and hand it to the lazy-pages daemon
	// ShellJob: the process was dumped with dump.Options.ShellJob; it gets lazyr's own terminal (the
	// first of lazyr's stdin, stdout, stderr that is one) in place of the terminal it had, and stays in
	// lazyr's session and process group (CRIU's --shell-job).
	ShellJob bool
	// TCPEstablished restores established TCP connections recorded by a dump with TCPEstablished.
	TCPEstablished bool
	// NetworkLock: "ebpf" (default) or "skip", as for the dump.
	NetworkLock string
	// Notify, if set, is told when the network is locked and unlocked (see Notify).
	Notify Notify
	Log    *zap.Logger
	// Progress, if set, is called from time to time with memory bytes restored so far and the total.
	Progress func(done, total uint64)

	net *netRestore // set by Run: inet sockets and the network lock (fd_inet_lock.go)
}

// Stats are the numbers of one restore.
type Stats struct {
	RestoreTime   time.Duration `json:"restore_time"`
	ForkingTime   time.Duration `json:"forking_time"`
	MemoryTime    time.Duration `json:"memory_time"`
	PagesRestored uint64        `json:"pages_restored"`
	PagesLazy     uint64        `json:"pages_lazy"`
}

// Result is a restored process.
type Result struct {
	Pid   int // the root process, as lazyr sees it (outside a restored PID namespace)
	Stats Stats
	task  *compel.Task
}

// Errors callers branch on.
var (
	ErrPidInUse    = errors.New("pid in use")
	ErrBadImages   = errors.New("bad image set")
	ErrUnsupported = errors.New("not supported")
)
