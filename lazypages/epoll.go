package lazypages

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// What an fd in the epoll set is; the daemon keys its watches by fd.
type watchKind int

const (
	watchListen watchKind = iota
	watchConn
	watchUffd
	watchPidfd
	watchGuard
	watchCancel
	watchNotify
)

type watch struct {
	kind watchKind
	conn *conn
	proc *process
}

// Watches are keyed by a token that is never reused, not by fd: an fd
// closed while handling one event can be reused (a new connection, a
// forked child's uffd) before a later event of the same batch, which must
// not reach the new owner.
func (d *daemon) watchFd(fd int, events uint32, w *watch) error {
	d.nextToken++
	tok := d.nextToken
	// The 64-bit epoll data is Fd (low half) and Pad (high half).
	ev := unix.EpollEvent{Events: events, Fd: int32(uint32(tok)), Pad: int32(uint32(tok >> 32))}
	if err := unix.EpollCtl(d.ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll add fd %d: %w", fd, err)
	}
	d.watches[tok] = w
	d.tokens[fd] = tok
	return nil
}

func (d *daemon) watchOf(ev *unix.EpollEvent) *watch {
	return d.watches[uint64(uint32(ev.Fd))|uint64(uint32(ev.Pad))<<32]
}

// unwatchFd removes fd from the epoll set. This must happen before close:
// epoll tracks the open file, not the fd, and a dup elsewhere (the guard
// holds dups of every uffd and pidfd) would keep a closed fd's
// registration alive and reporting.
func (d *daemon) unwatchFd(fd int) {
	tok, ok := d.tokens[fd]
	if !ok {
		return
	}
	unix.EpollCtl(d.ep, unix.EPOLL_CTL_DEL, fd, nil)
	delete(d.tokens, fd)
	delete(d.watches, tok)
}
