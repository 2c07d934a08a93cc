package soccr

import (
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"google.golang.org/protobuf/proto"
)

// ToImage maps the state onto CRIU's tcp-stream image entry. The queue contents are not part of the entry:
// CRIU writes InQueue and then OutQueue as raw bytes right after it in the same image file. Addresses, TCP
// state, keepalive and buffer sizes belong to CRIU's inet socket entry (see TCPOptsImage) and are not
// carried here.
func (s *State) ToImage() *tcp_stream.TcpStreamEntry {
	e := &tcp_stream.TcpStreamEntry{
		InqLen:    proto.Uint32(s.InqLen),
		InqSeq:    proto.Uint32(s.InqSeq),
		OutqLen:   proto.Uint32(s.OutqLen),
		OutqSeq:   proto.Uint32(s.OutqSeq),
		OptMask:   proto.Uint32(s.OptMask),
		SndWscale: proto.Uint32(s.SndWscale),
		MssClamp:  proto.Uint32(s.MSS),
		UnsqLen:   proto.Uint32(s.UnsqLen),
	}
	// CRIU writes rcv_wscale and timestamp only when the option was negotiated.
	if s.OptMask&OptWscale != 0 {
		e.RcvWscale = proto.Uint32(s.RcvWscale)
	}
	if s.OptMask&OptTimestamps != 0 {
		e.Timestamp = proto.Uint32(s.Timestamp)
	}
	// The deprecated cork/nodelay fields are still written by CRIU, and older CRIU reads only them.
	if s.Cork {
		e.Cork = proto.Bool(true)
	}
	if s.Nodelay {
		e.Nodelay = proto.Bool(true)
	}
	if s.HasWindow {
		e.SndWl1 = proto.Uint32(s.SndWl1)
		e.SndWnd = proto.Uint32(s.SndWnd)
		e.MaxWindow = proto.Uint32(s.MaxWindow)
		e.RcvWnd = proto.Uint32(s.RcvWnd)
		e.RcvWup = proto.Uint32(s.RcvWup)
	}
	return e
}

// TCPOptsImage returns the TCP socket options as CRIU's tcp_opts_entry (part of its inet socket entry).
func (s *State) TCPOptsImage() *tcp_stream.TcpOptsEntry {
	e := &tcp_stream.TcpOptsEntry{
		Cork:    proto.Bool(s.Cork),
		Nodelay: proto.Bool(s.Nodelay),
	}
	if s.KeepCnt > 0 {
		e.Keepcnt = proto.Uint32(uint32(s.KeepCnt))
	}
	if s.KeepIdle > 0 {
		e.Keepidle = proto.Uint32(uint32(s.KeepIdle))
	}
	if s.KeepIntvl > 0 {
		e.Keepintvl = proto.Uint32(uint32(s.KeepIntvl))
	}
	return e
}

// FromImage builds a State from CRIU's tcp-stream entry and the queue bytes that follow it in the image.
// Family, addresses, TCP state and the socket-level options come from the inet socket entry: the caller
// fills them in (and may apply ApplyTCPOptsImage). A mismatch between the entry's lengths and the queue
// slices is reported by Restore, not here.
func FromImage(e *tcp_stream.TcpStreamEntry, inq, outq []byte) *State {
	s := &State{
		TCPState:  StateEstablished,
		InqLen:    e.GetInqLen(),
		InqSeq:    e.GetInqSeq(),
		OutqLen:   e.GetOutqLen(),
		OutqSeq:   e.GetOutqSeq(),
		UnsqLen:   e.GetUnsqLen(),
		OptMask:   e.GetOptMask(),
		SndWscale: e.GetSndWscale(),
		RcvWscale: e.GetRcvWscale(),
		MSS:       e.GetMssClamp(),
		Timestamp: e.GetTimestamp(),
		Cork:      e.GetCork(),
		Nodelay:   e.GetNodelay(),
		BufLock:   -1,
		InQueue:   inq,
		OutQueue:  outq,
	}
	// CRIU writes the five window fields together; an image from a kernel without TCP_REPAIR_WINDOW has
	// none of them.
	if e.SndWnd != nil {
		s.HasWindow = true
		s.SndWl1, s.SndWnd, s.MaxWindow = e.GetSndWl1(), e.GetSndWnd(), e.GetMaxWindow()
		s.RcvWnd, s.RcvWup = e.GetRcvWnd(), e.GetRcvWup()
	}
	return s
}

// ApplyTCPOptsImage takes the TCP socket options from CRIU's tcp_opts_entry; set fields override the
// deprecated ones of the stream entry.
func (s *State) ApplyTCPOptsImage(o *tcp_stream.TcpOptsEntry) {
	if o == nil {
		return
	}
	if o.Cork != nil {
		s.Cork = o.GetCork()
	}
	if o.Nodelay != nil {
		s.Nodelay = o.GetNodelay()
	}
	if o.Keepcnt != nil {
		s.KeepCnt = int(o.GetKeepcnt())
	}
	if o.Keepidle != nil {
		s.KeepIdle = int(o.GetKeepidle())
	}
	if o.Keepintvl != nil {
		s.KeepIntvl = int(o.GetKeepintvl())
	}
}
