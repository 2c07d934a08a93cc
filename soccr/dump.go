package soccr

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Dump captures the state of a connected TCP socket.
//
// The socket should already be in repair mode (Repair); if it is not, Dump puts it there itself and leaves
// it there on success, because the captured state stays true only while the socket is frozen. After Dump
// the caller either closes the socket (in repair mode that sends nothing to the peer) or calls Resume.
//
// Kernel quirk: repair mode forces SO_REUSEADDR on, so the application's own SO_REUSEADDR can only be
// read before repair mode is taken; it is captured only when Dump takes repair mode itself.
//
// Preconditions: nothing else reads from or writes to the socket meanwhile (the owning task is frozen),
// and for a consistent picture the peer's packets are held off by a network lock.
func Dump(fd int) (st *State, err error) {
	inRepair, err := InRepair(fd)
	if err != nil {
		return nil, err
	}
	st = &State{BufLock: -1}
	if !inRepair {
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR)
		if err != nil {
			return nil, fmt.Errorf("soccr: get SO_REUSEADDR: %w", err)
		}
		st.ReuseAddr = v != 0
		if err := Repair(fd); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				_ = Unrepair(fd)
			}
		}()
	}

	ti, err := getTCPInfoHead(fd)
	if err != nil {
		return nil, fmt.Errorf("soccr: TCP_INFO: %w", err)
	}
	st.TCPState = int(ti.State)
	if !supportedState(st.TCPState) {
		return nil, fmt.Errorf("%w: %d", ErrUnsupportedState, st.TCPState)
	}
	if err := dumpAddrs(fd, st); err != nil {
		return nil, err
	}
	if err := dumpQueueLens(fd, st); err != nil {
		return nil, err
	}
	if err := dumpStreamOpts(fd, ti, st); err != nil {
		return nil, err
	}
	if err := dumpWindow(fd, st); err != nil {
		return nil, err
	}
	if st.InqSeq, st.InQueue, err = dumpQueue(fd, queueRecv, st.InqLen); err != nil {
		return nil, err
	}
	if st.OutqSeq, st.OutQueue, err = dumpQueue(fd, queueSend, st.OutqLen); err != nil {
		return nil, err
	}
	if err := setRepairQueue(fd, queueNone); err != nil {
		return nil, err
	}
	if err := dumpSockOpts(fd, st); err != nil {
		return nil, err
	}
	return st, nil
}

func dumpAddrs(fd int, st *State) error {
	dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return fmt.Errorf("soccr: get SO_DOMAIN: %w", err)
	}
	st.Family = dom
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("soccr: getsockname: %w", err)
	}
	if st.Src, err = addrPortOf(sa); err != nil {
		return err
	}
	pa, err := unix.Getpeername(fd)
	if err != nil {
		return fmt.Errorf("soccr: getpeername: %w", err)
	}
	if st.Dst, err = addrPortOf(pa); err != nil {
		return err
	}
	return nil
}

// dumpQueueLens reads the queue sizes. A FIN occupies one sequence number in the send queue (SIOCOUTQ and
// SIOCOUTQNSD count it while it is unacknowledged or unsent) but carries no data, so it is taken out here
// and recreated by shutdown() on restore. SIOCINQ already leaves out a received FIN.
func dumpQueueLens(fd int, st *State) error {
	outq, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	if err != nil {
		return fmt.Errorf("soccr: SIOCOUTQ: %w", err)
	}
	unsq, err := unix.IoctlGetInt(fd, unix.SIOCOUTQNSD)
	if err != nil {
		return fmt.Errorf("soccr: SIOCOUTQNSD: %w", err)
	}
	inq, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil {
		return fmt.Errorf("soccr: SIOCINQ: %w", err)
	}
	if 1<<st.TCPState&(sndFirstFin|sndSecondFin) != 0 {
		if outq > 0 {
			outq--
		}
		if unsq > 0 {
			unsq--
		}
	}
	st.OutqLen, st.UnsqLen, st.InqLen = uint32(outq), uint32(unsq), uint32(inq)
	return nil
}

func dumpStreamOpts(fd int, ti tcpInfoHead, st *State) error {
	// In repair mode TCP_MAXSEG reports mss_clamp, the MSS negotiated at the handshake, not the current
	// mss_cache; that is the value TCP_REPAIR_OPTIONS takes back.
	mss, err := unix.GetsockoptInt(fd, unix.SOL_TCP, unix.TCP_MAXSEG)
	if err != nil {
		return fmt.Errorf("soccr: get TCP_MAXSEG: %w", err)
	}
	st.MSS = uint32(mss)
	st.OptMask = uint32(ti.Options)
	if st.OptMask&OptWscale != 0 {
		st.SndWscale = uint32(ti.Wscale & 0xf)
		st.RcvWscale = uint32(ti.Wscale >> 4)
	}
	if st.OptMask&OptTimestamps != 0 {
		if st.Timestamp, err = getUint32(fd, unix.SOL_TCP, unix.TCP_TIMESTAMP); err != nil {
			return fmt.Errorf("soccr: get TCP_TIMESTAMP: %w", err)
		}
	}
	return nil
}

func dumpWindow(fd int, st *State) error {
	w, err := getRepairWindow(fd)
	if errors.Is(err, unix.ENOPROTOOPT) {
		return nil // before Linux 4.8; the window then starts from scratch on restore
	}
	if err != nil {
		return fmt.Errorf("soccr: get TCP_REPAIR_WINDOW: %w", err)
	}
	st.HasWindow = true
	st.SndWl1, st.SndWnd, st.MaxWindow, st.RcvWnd, st.RcvWup = w.SndWl1, w.SndWnd, w.MaxWindow, w.RcvWnd, w.RcvWup
	return nil
}

// dumpQueue reads a queue's sequence number and, with MSG_PEEK in repair mode, its contents. One byte more
// than expected is asked for, to notice a queue that grew since its length was read.
func dumpQueue(fd, q int, n uint32) (uint32, []byte, error) {
	if err := setRepairQueue(fd, q); err != nil {
		return 0, nil, err
	}
	seq, err := getUint32(fd, unix.SOL_TCP, unix.TCP_QUEUE_SEQ)
	if err != nil {
		return 0, nil, fmt.Errorf("soccr: get TCP_QUEUE_SEQ (queue %d): %w", q, err)
	}
	if n == 0 {
		return seq, nil, nil
	}
	buf := make([]byte, int(n)+1)
	got, _, err := unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	if err != nil {
		return 0, nil, fmt.Errorf("soccr: peek queue %d (%d bytes): %w", q, n, err)
	}
	if got != int(n) {
		return 0, nil, fmt.Errorf("%w: queue %d has %d bytes, expected %d", ErrQueueChanged, q, got, n)
	}
	return seq, buf[:n:n], nil
}

func dumpSockOpts(fd int, st *State) error {
	type intOpt struct {
		level, opt int
		dst        *int
		name       string
	}
	var nodelay, cork, keepalive, v6only int
	opts := []intOpt{
		{unix.SOL_TCP, unix.TCP_NODELAY, &nodelay, "TCP_NODELAY"},
		{unix.SOL_TCP, unix.TCP_CORK, &cork, "TCP_CORK"},
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, &keepalive, "SO_KEEPALIVE"},
		{unix.SOL_TCP, unix.TCP_KEEPIDLE, &st.KeepIdle, "TCP_KEEPIDLE"},
		{unix.SOL_TCP, unix.TCP_KEEPINTVL, &st.KeepIntvl, "TCP_KEEPINTVL"},
		{unix.SOL_TCP, unix.TCP_KEEPCNT, &st.KeepCnt, "TCP_KEEPCNT"},
		{unix.SOL_SOCKET, unix.SO_SNDBUF, &st.SndBuf, "SO_SNDBUF"},
		{unix.SOL_SOCKET, unix.SO_RCVBUF, &st.RcvBuf, "SO_RCVBUF"},
	}
	if st.Family == unix.AF_INET6 {
		opts = append(opts, intOpt{unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, &v6only, "IPV6_V6ONLY"})
	}
	for _, o := range opts {
		v, err := unix.GetsockoptInt(fd, o.level, o.opt)
		if err != nil {
			return fmt.Errorf("soccr: get %s: %w", o.name, err)
		}
		*o.dst = v
	}
	st.Nodelay, st.Cork, st.Keepalive, st.V6Only = nodelay != 0, cork != 0, keepalive != 0, v6only != 0
	// SO_BUF_LOCK (Linux 5.14) says whether the buffer sizes were set by the application (and so are
	// fixed) or are still autotuned; without it a restore has to fix them.
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BUF_LOCK)
	switch {
	case err == nil:
		st.BufLock = v
	case errors.Is(err, unix.ENOPROTOOPT):
		st.BufLock = -1
	default:
		return fmt.Errorf("soccr: get SO_BUF_LOCK: %w", err)
	}
	return nil
}
