package soccr

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// fins recreates the FINs of a half-closed connection, in the order they happened (libsoccr's scheme): our
// FIN through shutdown(SHUT_WR), the peer's FIN and the peer's acknowledgement of our FIN as forged
// segments. Each step is checked by waiting for the TCP state it must produce.
func (r *restorer) fins() error {
	st, mstate := r.st, 1<<r.st.TCPState
	if mstate&sndFirstFin != 0 {
		if err := r.shutdownWrite(mstate&sndFinAcked != 0); err != nil {
			return err
		}
	}
	if mstate&rcvFin != 0 {
		want := StateCloseWait
		if mstate&sndFirstFin != 0 {
			want = StateClosing
		}
		if err := r.forge(tcpFIN|tcpACK, r.inqSeq, r.outqSeq-st.OutqLen, want); err != nil {
			return err
		}
	}
	if mstate&sndSecondFin != 0 {
		if err := r.shutdownWrite(false); err != nil {
			return err
		}
	}
	if mstate&sndFinAcked != 0 {
		// Acknowledge everything including our FIN: FIN_WAIT1 -> FIN_WAIT2.
		if err := r.forge(tcpACK, r.inqSeq, r.outqSeq+1, StateFinWait2); err != nil {
			return err
		}
	}
	return nil
}

// shutdownWrite queues our FIN. A FIN the peer has already acknowledged must not go on the wire again:
// with the send repair queue selected the kernel records it as sent without transmitting it. An
// unacknowledged FIN is transmitted (the peer may not have it).
func (r *restorer) shutdownWrite(acked bool) error {
	q := queueNone
	if acked {
		q = queueSend
	}
	if err := setRepairQueue(r.fd, q); err != nil {
		return err
	}
	if err := unix.Shutdown(r.fd, unix.SHUT_WR); err != nil {
		return fmt.Errorf("soccr: shutdown(SHUT_WR) to restore our FIN: %w", err)
	}
	return setRepairQueue(r.fd, queueNone)
}

// forgeTimeout bounds the wait for a forged segment to be processed. Delivery over loopback normally
// completes within the sendto() call (softirq on the same CPU), but may be deferred to ksoftirqd.
const forgeTimeout = 2 * time.Second

func (r *restorer) forge(flags uint8, seq, ack uint32, want int) error {
	st := r.st
	win := st.SndWnd
	if st.OptMask&OptWscale != 0 {
		win >>= st.SndWscale
	}
	seg := segment{src: st.Dst, dst: st.Src, seq: seq, ack: ack, flags: flags, window: uint16(min(win, 0xffff))}
	if err := seg.send(); err != nil {
		return err
	}
	deadline := time.Now().Add(forgeTimeout)
	for {
		ti, err := getTCPInfoHead(r.fd)
		if err != nil {
			return fmt.Errorf("soccr: TCP_INFO: %w", err)
		}
		if int(ti.State) == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("soccr: forged segment (flags %#x) left the socket in state %d, want %d: %w",
				flags, ti.State, want, unix.ETIMEDOUT)
		}
		time.Sleep(time.Millisecond)
	}
}
