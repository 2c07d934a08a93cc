package lazypages

import (
	"errors"
	"os/signal"

	"golang.org/x/sys/unix"
)

// GuardArg is the hidden first argument that makes a lazyr binary run as
// the lazy-pages guard. A program that uses Serve must check for it early
// in main:
//
//	if lazypages.IsGuard(os.Args) {
//		os.Exit(lazypages.GuardMain())
//	}
const GuardArg = "__lazy-guard"

// IsGuard reports whether args (os.Args) start the guard.
func IsGuard(args []string) bool { return len(args) > 1 && args[1] == GuardArg }

// guardSockFd is where the daemon puts the guard's end of their socket
// (the first of exec.Cmd.ExtraFiles).
const guardSockFd = 3

// GuardMain runs the guard: a small process that outlives the daemon if
// the daemon dies. It holds a dup of every userfaultfd the daemon serves
// and a pidfd of every process, received over a socket from the daemon.
// Holding the uffds keeps the kernel from unregistering the lazy ranges
// when the daemon goes away, so faults block instead of reading zeros.
// When the socket reaches end of stream without a "finished" message (the
// daemon exited, crashed, was SIGKILLed or gave up), the guard SIGKILLs
// every process it holds and their descendants, and only then closes the
// uffds. It returns the exit code: 0 after "finished", 1 after a kill.
func GuardMain() int {
	// Only the socket decides: a terminal's ^C or a SIGTERM sent to the
	// daemon's process group must not take the guard down first.
	signal.Ignore(unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGPIPE, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU)
	var st unix.Stat_t
	if err := unix.Fstat(guardSockFd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return 2
	}
	unix.CloseOnExec(guardSockFd)
	return runGuard(guardSockFd)
}

type guarded struct {
	pid   int
	uffd  int
	pidfd int
}

func (g *guarded) close() {
	unix.Close(g.uffd)
	if g.pidfd >= 0 {
		unix.Close(g.pidfd)
	}
}

func runGuard(sock int) int {
	held := map[uint64]*guarded{}
	if err := sendMsg(sock, &message{Type: msgGuardHello}); err != nil {
		return 1
	}
	buf, oob := make([]byte, maxMsgSize), oobSpace()
	for {
		m, fds, err := recvMsg(sock, buf, oob)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			// End of stream or garbage: the daemon is gone or broken.
			guardKill(held)
			return 1
		}
		switch m.Type {
		case msgGuardAdd:
			g := &guarded{pid: int(m.Pid), uffd: fds[0], pidfd: -1}
			if len(fds) == 2 {
				g.pidfd = fds[1]
			}
			if old := held[m.ID]; old != nil {
				old.close()
			}
			held[m.ID] = g
		case msgGuardPidfd:
			g := held[m.ID]
			if g == nil {
				closeAll(fds)
				continue
			}
			if g.pidfd >= 0 {
				unix.Close(g.pidfd)
			}
			g.pid, g.pidfd = int(m.Pid), fds[0]
		case msgGuardRelease:
			if g := held[m.ID]; g != nil {
				g.close()
				delete(held, m.ID)
			}
		case msgGuardFinished:
			for _, g := range held {
				g.close()
			}
			return 0
		default:
			closeAll(fds)
			guardKill(held)
			return 1
		}
	}
}

// guardKill kills everything held, then lets go of the uffds.
func guardKill(held map[uint64]*guarded) {
	var pidfds, pids []int
	for _, g := range held {
		if g.pidfd >= 0 {
			pidfds = append(pidfds, g.pidfd)
		}
		if g.pid > 0 {
			pids = append(pids, g.pid)
		}
	}
	killTree(pidfds, pids)
	for _, g := range held {
		g.close()
	}
}
