package soccr

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Restore creates a TCP socket that continues the connection described by st and returns its descriptor
// (close-on-exec, blocking, out of repair mode). It is RestoreInto on a new socket followed by Resume.
//
// Between dump and restore the connection should be held by a network lock; with Restore the lock can
// only be released afterwards, so the window probe sent when the socket leaves repair mode is lost and the
// connection resumes at the restored socket's first retransmission timeout: 3 s, since the kernel has
// no RTT sample for a socket that never did a handshake. To resume at once, call RestoreInto, release
// the lock, then call Resume.
//
// The socket is created in the network namespace of the calling thread, and that namespace must own
// st.Src. Needs CAP_NET_ADMIN there (repair mode, raw sockets for half-closed states).
func Restore(st *State) (int, error) {
	if err := st.Validate(); err != nil {
		return -1, err
	}
	fd, err := unix.Socket(familyOf(st), unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, fmt.Errorf("soccr: socket: %w", err)
	}
	if err := RestoreInto(fd, st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := Resume(fd, st); err != nil {
		_ = Repair(fd) // so that the close sends nothing
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// RestoreInto rebuilds the connection described by st in fd, a TCP socket of st's family that the caller
// created (unbound, unconnected), and leaves it in repair mode: Resume finishes the restore. On error the
// socket is left in repair mode when possible, so that closing it sends nothing to the peer.
func RestoreInto(fd int, st *State) (err error) {
	if err := st.Validate(); err != nil {
		return err
	}
	if err := Repair(fd); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			// A socket left out of repair mode would send a FIN or RST when the caller closes it.
			_ = Repair(fd)
		}
	}()
	r := restorer{fd: fd, st: st, family: familyOf(st)}
	return r.run()
}

type restorer struct {
	fd     int
	st     *State
	family int
	// Sequence numbers without the FINs: the FINs are recreated by shutdown() and forged segments, each of
	// which advances the kernel's sequence numbers by one.
	inqSeq, outqSeq uint32
}

func (r *restorer) run() error {
	st, mstate := r.st, 1<<r.st.TCPState
	r.inqSeq, r.outqSeq = st.InqSeq, st.OutqSeq
	if mstate&rcvFin != 0 {
		r.inqSeq--
	}
	if mstate&(sndFirstFin|sndSecondFin) != 0 {
		r.outqSeq--
	}
	if err := r.setBuffers(fillSize(st.SndBuf, st.OutqLen), fillSize(st.RcvBuf, st.InqLen)); err != nil {
		return err
	}
	if st.V6Only && r.family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(r.fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return fmt.Errorf("soccr: set IPV6_V6ONLY: %w", err)
		}
	}
	if err := r.connect(); err != nil {
		return err
	}
	if err := r.streamOpts(); err != nil {
		return err
	}
	if err := r.fill(queueRecv, st.InQueue); err != nil {
		return err
	}
	// The window goes in before the send queue so that unsent data can leave as soon as repair mode is
	// dropped for it; it cannot go earlier because the kernel checks rcv_wup against rcv_nxt, which the
	// receive queue fill moves.
	if err := r.window(); err != nil {
		return err
	}
	if err := r.sendQueue(); err != nil {
		return err
	}
	if err := r.fins(); err != nil {
		return err
	}
	return r.sockOpts()
}

// fillSize is the buffer size needed while a queue of n bytes is put back: the refill allocates its own
// skbs, whose overhead differs from the original ones, so it gets room beyond the dumped size.
func fillSize(dumped int, n uint32) int {
	need := 2*int(n) + 256<<10
	if dumped > need {
		return dumped
	}
	return need
}

// setBuffers sets SO_SNDBUF/SO_RCVBUF to the given effective sizes. The kernel doubles what it is given
// (to account for skb overhead) and getsockopt reports the doubled value, so half is passed. The *FORCE
// variants ignore net.core.[rw]mem_max, which the dumped size may exceed on another host.
func (r *restorer) setBuffers(snd, rcv int) error {
	set := func(force, plain, v int, name string) error {
		if v <= 0 {
			return nil
		}
		err := unix.SetsockoptInt(r.fd, unix.SOL_SOCKET, force, v/2)
		if errors.Is(err, unix.EPERM) {
			err = unix.SetsockoptInt(r.fd, unix.SOL_SOCKET, plain, v/2)
		}
		if err != nil {
			return fmt.Errorf("soccr: set %s %d: %w", name, v, err)
		}
		return nil
	}
	if err := set(unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, snd, "SO_SNDBUF"); err != nil {
		return err
	}
	return set(unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, rcv, "SO_RCVBUF")
}

// connect sets the initial sequence numbers and connects. In repair mode connect() sends no SYN: the
// socket goes straight to ESTABLISHED with snd_una = write_seq and rcv_nxt as set here, and the queue
// fills then advance them to the dumped values.
func (r *restorer) connect() error {
	st := r.st
	src, err := sockaddrOf(r.family, st.Src)
	if err != nil {
		return err
	}
	dst, err := sockaddrOf(r.family, st.Dst)
	if err != nil {
		return err
	}
	// Repair mode forces SO_REUSEADDR semantics, so the bind succeeds next to a listener on the same port.
	if err := unix.Bind(r.fd, src); err != nil {
		return fmt.Errorf("soccr: bind %v: %w", st.Src, err)
	}
	if err := setQueueSeq(r.fd, queueRecv, r.inqSeq-st.InqLen); err != nil {
		return err
	}
	if err := setQueueSeq(r.fd, queueSend, r.outqSeq-st.OutqLen); err != nil {
		return err
	}
	if err := unix.Connect(r.fd, dst); err != nil {
		return fmt.Errorf("soccr: connect %v: %w", st.Dst, err)
	}
	return nil
}

func setQueueSeq(fd, q int, seq uint32) error {
	if err := setRepairQueue(fd, q); err != nil {
		return err
	}
	if err := setUint32(fd, unix.SOL_TCP, unix.TCP_QUEUE_SEQ, seq); err != nil {
		return fmt.Errorf("soccr: set TCP_QUEUE_SEQ (queue %d) %d: %w", q, seq, err)
	}
	return nil
}

// streamOpts restores what the handshake negotiated. TCP_REPAIR_OPTIONS is accepted only in ESTABLISHED
// and before any data was sent, hence right after connect.
func (r *restorer) streamOpts() error {
	st := r.st
	var opts []unix.TCPRepairOpt
	if st.OptMask&OptSACK != 0 {
		opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_SACK_PERMITTED})
	}
	if st.OptMask&OptWscale != 0 {
		opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_WINDOW, Val: st.SndWscale | st.RcvWscale<<16})
	}
	if st.OptMask&OptTimestamps != 0 {
		opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_TIMESTAMP})
	}
	if st.MSS != 0 {
		opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_MAXSEG, Val: st.MSS})
	}
	if len(opts) > 0 {
		if err := unix.SetsockoptTCPRepairOpt(r.fd, unix.SOL_TCP, unix.TCP_REPAIR_OPTIONS, opts); err != nil {
			return fmt.Errorf("soccr: TCP_REPAIR_OPTIONS: %w", err)
		}
	}
	if st.OptMask&OptTimestamps != 0 {
		// Continue the timestamp clock where it was, so the peer's PAWS check never sees it go back.
		if err := setUint32(r.fd, unix.SOL_TCP, unix.TCP_TIMESTAMP, st.Timestamp); err != nil {
			return fmt.Errorf("soccr: set TCP_TIMESTAMP: %w", err)
		}
	}
	return nil
}

// fill writes data into a queue in repair mode: into the receive queue as if it had arrived, into the
// send queue as if it had been sent and not yet acknowledged.
func (r *restorer) fill(q int, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	if err := setRepairQueue(r.fd, q); err != nil {
		return err
	}
	return sendAll(r.fd, data, q)
}

// sendAll writes data, halving the chunk size when the kernel refuses it: a receive-queue refill allocates
// one skb per call and big allocations can fail with ENOMEM where smaller ones succeed.
func sendAll(fd int, data []byte, q int) error {
	chunk := len(data)
	for len(data) > 0 {
		c := min(chunk, len(data))
		n, err := unix.SendmsgN(fd, data[:c], nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if (err != nil || n == 0) && chunk > 1024 {
			chunk /= 2
			continue
		}
		if err != nil {
			return fmt.Errorf("soccr: refill queue %d (%d bytes left): %w", q, len(data), err)
		}
		if n == 0 {
			return fmt.Errorf("soccr: refill queue %d (%d bytes left): %w", q, len(data), unix.ENOBUFS)
		}
		data = data[n:]
	}
	return nil
}

func (r *restorer) window() error {
	st := r.st
	if !st.HasWindow {
		return nil
	}
	w := tcpRepairWindow{SndWl1: st.SndWl1, SndWnd: st.SndWnd, MaxWindow: st.MaxWindow, RcvWnd: st.RcvWnd, RcvWup: st.RcvWup}
	// rcv_wup was taken with the peer's FIN counted in rcv_nxt; the socket has not seen that FIN yet, and
	// the kernel refuses an rcv_wup beyond rcv_nxt. Move the left edge back, keeping the right edge.
	if int32(w.RcvWup-r.inqSeq) > 0 {
		d := w.RcvWup - r.inqSeq
		w.RcvWup -= d
		w.RcvWnd += d
	}
	if err := setRepairWindow(r.fd, w); err != nil {
		return fmt.Errorf("soccr: set TCP_REPAIR_WINDOW: %w", err)
	}
	return nil
}

// sendQueue puts back the send queue. The part that had been sent goes in through repair mode, so the
// kernel keeps it for retransmission without sending it now; the part that had never been sent must go
// through the normal path (repair mode briefly off) so that it is transmitted as usual.
func (r *restorer) sendQueue() error {
	st := r.st
	sent := st.OutQueue[:st.OutqLen-st.UnsqLen]
	unsent := st.OutQueue[st.OutqLen-st.UnsqLen:]
	if err := r.fill(queueSend, sent); err != nil {
		return err
	}
	if len(unsent) == 0 {
		return nil
	}
	// No window probe here: the final Unrepair sends one once everything is in place.
	if err := unix.SetsockoptInt(r.fd, unix.SOL_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF_NO_WP); err != nil {
		return fmt.Errorf("soccr: TCP_REPAIR off for unsent data: %w", err)
	}
	if err := sendAll(r.fd, unsent, queueSend); err != nil {
		return err
	}
	return Repair(r.fd)
}

func (r *restorer) sockOpts() error {
	st := r.st
	b := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	type intOpt struct {
		level, opt, val int
		name            string
	}
	opts := []intOpt{
		{unix.SOL_TCP, unix.TCP_NODELAY, b(st.Nodelay), "TCP_NODELAY"},
		{unix.SOL_TCP, unix.TCP_CORK, b(st.Cork), "TCP_CORK"},
	}
	// Keepalive timings are set even when keepalive is off: the application may turn it on later and
	// expects its own timings then. Zero means "not dumped".
	if st.KeepIdle > 0 {
		opts = append(opts, intOpt{unix.SOL_TCP, unix.TCP_KEEPIDLE, st.KeepIdle, "TCP_KEEPIDLE"})
	}
	if st.KeepIntvl > 0 {
		opts = append(opts, intOpt{unix.SOL_TCP, unix.TCP_KEEPINTVL, st.KeepIntvl, "TCP_KEEPINTVL"})
	}
	if st.KeepCnt > 0 {
		opts = append(opts, intOpt{unix.SOL_TCP, unix.TCP_KEEPCNT, st.KeepCnt, "TCP_KEEPCNT"})
	}
	opts = append(opts, intOpt{unix.SOL_SOCKET, unix.SO_KEEPALIVE, b(st.Keepalive), "SO_KEEPALIVE"})
	for _, o := range opts {
		if err := unix.SetsockoptInt(r.fd, o.level, o.opt, o.val); err != nil {
			return fmt.Errorf("soccr: set %s: %w", o.name, err)
		}
	}
	if err := r.setBuffers(st.SndBuf, st.RcvBuf); err != nil {
		return err
	}
	// Setting a size locks it against autotuning. Give back the lock state the application had; when it
	// is unknown (an image without it), keep sizes that were dumped, but hand sizes that were only set for
	// the refill back to autotuning.
	lock := st.BufLock
	if lock < 0 {
		lock = 0
		if st.SndBuf > 0 {
			lock |= 1 // SOCK_SNDBUF_LOCK
		}
		if st.RcvBuf > 0 {
			lock |= 2 // SOCK_RCVBUF_LOCK
		}
	}
	err := unix.SetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_BUF_LOCK, lock)
	if err != nil && !errors.Is(err, unix.ENOPROTOOPT) { // SO_BUF_LOCK is Linux 5.14+
		return fmt.Errorf("soccr: set SO_BUF_LOCK: %w", err)
	}
	return nil
}
