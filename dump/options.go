package dump

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
)

// Options says what to dump and where.
type Options struct {
	Pid          int
	ImagesDir    string
	LeaveRunning bool // let the task continue after the dump instead of killing it
	// ReapWait bounds how long a killing dump waits for the PID to disappear (the parent must reap it).
	ReapWait time.Duration
	// ShellJob allows dumping a process that uses a terminal it does not own (one started from a shell):
	// fds on terminals whose other end is outside the process are recorded, and a restore with
	// restore.Options.ShellJob gives the process the restoring shell's terminal instead (CRIU's --shell-job).
	ShellJob bool
	// TCPEstablished allows dumping established TCP connections (with TCP_REPAIR); without it they are refused.
	TCPEstablished bool
	// NetworkLock is how the tree's connections are kept quiet while dumped: "ebpf" (default) or "skip".
	NetworkLock string
	// Notify, if set, is told when the network is locked and unlocked (see Notify).
	Notify Notify
	Log    *zap.Logger
	// Progress, if set, is called from time to time with memory bytes written so far and the total.
	Progress func(done, total uint64)

	// ServeLazy, if set, makes a lazy (post-copy) dump (lazy_serve.go): the pages of lazy areas are left
	// out of the images (pagemap entries with PE_LAZY and no data), and once the images are written the
	// tree stays frozen while ServeLazy serves its memory from src. Return nil only once the destination
	// has every page: the tree is then killed (or released with LeaveRunning). An error (transfer
	// aborted, ctx cancelled) releases the tree, which runs on; Run then returns an ErrLazyAborted error.
	ServeLazy func(ctx context.Context, src *LazySource) error

	net   *netDump    // set by Run: the network lock and repaired sockets (fd_inet_lock.go)
	lazy  *LazySource // set by Run for a lazy dump (lazy_source.go)
	early earlySmaps  // set by Run: the tree's smaps, read before the freeze (smaps.go)
}

// Stats are the numbers of one dump; they are also stored as CRIU's stats-dump image.
type Stats struct {
	FreezingTime time.Duration `json:"freezing_time"`
	FrozenTime   time.Duration `json:"frozen_time"`
	MemdumpTime  time.Duration `json:"memdump_time"`
	MemwriteTime time.Duration `json:"memwrite_time"`
	PagesScanned uint64        `json:"pages_scanned"`
	PagesSkipped uint64        `json:"pages_skipped"` // not present, or the zero page
	PagesWritten uint64        `json:"pages_written"`
	// PagesLazy: written pages that a lazy restore may fill on demand; for a migration source (ServeLazy),
	// every page of its lazy areas, which are scanned only after the freeze (lazy_scan.go).
	PagesLazy uint64 `json:"pages_lazy"`
}

// Errors callers branch on. Returned errors wrap them together with the details.
var (
	ErrNoProcess   = errors.New("no such process")
	ErrZombie      = errors.New("process is a zombie")
	ErrUnsupported = errors.New("not supported")
	ErrPermission  = errors.New("permission denied")
)
