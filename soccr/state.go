package soccr

import (
	"errors"
	"fmt"
	"net/netip"
)

// TCP states as the kernel numbers them (include/net/tcp_states.h); State.TCPState holds one of these.
const (
	StateEstablished = 1
	StateSynSent     = 2
	StateSynRecv     = 3
	StateFinWait1    = 4
	StateFinWait2    = 5
	StateTimeWait    = 6
	StateClose       = 7
	StateCloseWait   = 8
	StateLastAck     = 9
	StateListen      = 10
	StateClosing     = 11
)

// TCPI_OPT_* bits of tcp_info.tcpi_options; State.OptMask holds them.
const (
	OptTimestamps = 1
	OptSACK       = 2
	OptWscale     = 4
	OptECN        = 8
)

// Repair queue selectors for TCP_REPAIR_QUEUE (enum in include/uapi/linux/tcp.h).
const (
	queueNone = 0
	queueRecv = 1
	queueSend = 2
)

// PacketMark is the SO_MARK carried by the packets Restore forges to rebuild a half-closed connection (a
// FIN from the peer, an ACK of our FIN). A network lock that drops the connection's packets must let packets
// with this mark through; it is CRIU's SOCCR_MARK, so firewall rules written for CRIU keep working.
const PacketMark = 0xC114

var (
	// ErrUnsupportedState is returned for a socket in a TCP state that cannot be checkpointed
	// (listening, SYN_RECV, TIME_WAIT, ...).
	ErrUnsupportedState = errors.New("soccr: unsupported TCP state")
	// ErrQueueChanged is returned by Dump when a queue did not hold as many bytes as SIOCINQ/SIOCOUTQ
	// reported a moment before: the socket was not quiescent (not in repair mode, or still in use).
	ErrQueueChanged = errors.New("soccr: socket queue changed while dumping")
	// ErrInvalidState is returned by Restore for a State whose fields contradict each other.
	ErrInvalidState = errors.New("soccr: invalid state")
)

// State is everything needed to recreate one TCP connection endpoint. It is plain data: it can be
// serialised (see ToImage) and restored in another process or on another machine that owns the
// source address.
//
// Sequence numbers follow CRIU's tcp_stream image: InqSeq is rcv_nxt and OutqSeq is write_seq (the
// sequence number after the last byte queued for sending), both as the kernel reports them, FIN
// included; InqLen/OutqLen never count a FIN.
type State struct {
	Family   int            // AF_INET or AF_INET6: the family of the socket (an AF_INET6 socket may carry v4-mapped addresses)
	Src, Dst netip.AddrPort // local and remote address; an IPv6 link-local address carries its zone (interface name)
	TCPState int            // one of the State* constants

	InqLen  uint32 // bytes in the receive queue not yet read by the application
	InqSeq  uint32 // rcv_nxt
	OutqLen uint32 // bytes in the send queue: unacknowledged + unsent
	OutqSeq uint32 // write_seq
	UnsqLen uint32 // bytes of the send queue never sent (a suffix of OutQueue)

	MSS       uint32 // mss_clamp (TCP_MAXSEG in repair mode)
	SndWscale uint32
	RcvWscale uint32
	Timestamp uint32 // TCP_TIMESTAMP: the connection's timestamp clock at dump time
	OptMask   uint32 // Opt* bits

	HasWindow bool // the window fields below are valid (TCP_REPAIR_WINDOW, Linux 4.8+)
	SndWl1    uint32
	SndWnd    uint32
	MaxWindow uint32
	RcvWnd    uint32
	RcvWup    uint32

	Nodelay   bool
	Cork      bool
	Keepalive bool
	KeepIdle  int // seconds
	KeepIntvl int // seconds
	KeepCnt   int
	ReuseAddr bool
	V6Only    bool // IPV6_V6ONLY, AF_INET6 only
	SndBuf    int  // SO_SNDBUF as getsockopt reports it (the kernel's doubled value)
	RcvBuf    int  // SO_RCVBUF as getsockopt reports it
	BufLock   int  // SO_BUF_LOCK: SOCK_SNDBUF_LOCK(1)|SOCK_RCVBUF_LOCK(2), -1 if the kernel lacks it

	InQueue  []byte // receive queue contents, len InqLen
	OutQueue []byte // send queue contents, len OutqLen; the last UnsqLen bytes were never sent
}

func (s *State) String() string {
	return fmt.Sprintf("tcp %v->%v state %d inq %d@%d outq %d(unsent %d)@%d",
		s.Src, s.Dst, s.TCPState, s.InqLen, s.InqSeq, s.OutqLen, s.UnsqLen, s.OutqSeq)
}

// Half-closed connections keep a FIN in a queue. These masks (1<<state) say where, following the TCP
// state diagram: a FIN we sent is in the send queue in FIN_WAIT1/2, CLOSING and LAST_ACK; a FIN we received
// is in the receive queue in CLOSE_WAIT, LAST_ACK and CLOSING.
const (
	sndFirstFin  = 1<<StateFinWait1 | 1<<StateFinWait2 | 1<<StateClosing // our FIN went out before theirs arrived
	sndSecondFin = 1 << StateLastAck                                     // our FIN went out after theirs arrived
	sndFinAcked  = 1 << StateFinWait2
	rcvFin       = 1<<StateCloseWait | 1<<StateLastAck | 1<<StateClosing
)

func supportedState(st int) bool {
	switch st {
	case StateEstablished, StateFinWait1, StateFinWait2, StateCloseWait, StateLastAck, StateClosing:
		return true
	}
	return false
}

// Validate checks what Restore relies on, so a corrupt or hand-made State fails with an error instead of a
// half-built socket. Restore and RestoreInto call it; callers that read states from images can call it
// first, before they create anything. Errors wrap ErrInvalidState or ErrUnsupportedState.
func (s *State) Validate() error {
	if !supportedState(s.TCPState) {
		return fmt.Errorf("%w: %d", ErrUnsupportedState, s.TCPState)
	}
	if !s.Src.IsValid() || !s.Dst.IsValid() {
		return fmt.Errorf("%w: missing address (%v -> %v)", ErrInvalidState, s.Src, s.Dst)
	}
	if s.Src.Addr().Is4() != s.Dst.Addr().Is4() {
		return fmt.Errorf("%w: mixed address families %v -> %v", ErrInvalidState, s.Src, s.Dst)
	}
	if uint32(len(s.InQueue)) != s.InqLen {
		return fmt.Errorf("%w: receive queue has %d bytes, InqLen %d", ErrInvalidState, len(s.InQueue), s.InqLen)
	}
	if uint32(len(s.OutQueue)) != s.OutqLen {
		return fmt.Errorf("%w: send queue has %d bytes, OutqLen %d", ErrInvalidState, len(s.OutQueue), s.OutqLen)
	}
	if s.UnsqLen > s.OutqLen {
		return fmt.Errorf("%w: unsent %d > send queue %d", ErrInvalidState, s.UnsqLen, s.OutqLen)
	}
	if s.OptMask&OptWscale != 0 && (s.SndWscale > 14 || s.RcvWscale > 14) {
		return fmt.Errorf("%w: window scale %d/%d > 14", ErrInvalidState, s.SndWscale, s.RcvWscale)
	}
	return nil
}
