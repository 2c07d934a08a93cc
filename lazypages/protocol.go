package lazypages

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Wire format of the hand-off (restore -> daemon) and guard (daemon ->
// guard) messages. Each message is one SOCK_SEQPACKET datagram, so the
// datagram boundary is the message boundary:
//
//	u32 magic | u16 version | u16 type | body (little endian, per type)
//
// File descriptors travel alongside in one SCM_RIGHTS control message; a
// message says in its body whether it carries a pidfd, so a count mismatch
// is detected instead of guessed. Error text in an ack is payload, never a
// marker.
const (
	protoMagic   uint32 = 0x4750_5a4c // "LZPG" read as little-endian bytes
	protoVersion uint16 = 2           // 2: hello carries the images' dump id
	headerSize          = 8

	// maxRangesPerMsg keeps a message near 64 KiB, well under the socket
	// buffer; Register sends longer lists in continuation messages.
	maxRangesPerMsg = 4096
	rangeSize       = 16
	// maxAckText bounds the error text a daemon sends back.
	maxAckText = 4096
	// maxMsgSize is the largest datagram either side ever sends.
	maxMsgSize = headerSize + registerFixedBody + 4 + maxRangesPerMsg*rangeSize
)

type msgType uint16

const (
	msgHello          msgType = 1 // client -> daemon: opens a session (version in the header)
	msgAck            msgType = 2 // daemon -> client: status and error text
	msgRegister       msgType = 3 // client -> daemon: a process, its fds and the first ranges
	msgRanges         msgType = 4 // client -> daemon: more ranges of the process being registered
	msgDone           msgType = 5 // client -> daemon: no more processes in this restore
	msgGuardHello     msgType = 6 // guard -> daemon: the guard runs
	msgGuardAdd       msgType = 7 // daemon -> guard: hold this uffd (and pidfd)
	msgGuardPidfd     msgType = 8 // daemon -> guard: the pidfd of a process added without one
	msgGuardRelease   msgType = 9 // daemon -> guard: the process is complete or gone, let go
	msgGuardFinished  msgType = 10
	msgTypeLast               = msgGuardFinished
	flagHasPidfd      uint32  = 1 << 0
	ackOK             uint32  = 0
	ackError          uint32  = 1
	registerFixedBody         = 12 // pid, flags, total
	guardAddBody              = 16 // id, pid, flags
)

// message is the decoded form of every message type; which fields are
// meaningful depends on Type.
type message struct {
	Type msgType
	// Register/GuardAdd/GuardPidfd
	Pid   int32
	Flags uint32
	// Register: number of ranges in the whole registration
	Total uint32
	// Register/Ranges
	Ranges []Range
	// Guard*: the daemon's process id
	ID uint64
	// Ack
	Status uint32
	Text   string
	// Hello: the dump id of the client's images (images.DumpID), or empty
	ImagesID []byte
}

// imagesIDSize is the length of a dump id (SHA-256).
const imagesIDSize = 32

var errProto = errors.New("lazypages: protocol error")

func (t msgType) String() string {
	names := [...]string{"?", "hello", "ack", "register", "ranges", "done",
		"guard-hello", "guard-add", "guard-pidfd", "guard-release", "guard-finished"}
	if int(t) < len(names) {
		return names[t]
	}
	return fmt.Sprintf("type %d", uint16(t))
}

// wantFds is the number of descriptors a message of this kind carries.
func (m *message) wantFds() int {
	switch m.Type {
	case msgRegister, msgGuardAdd:
		if m.Flags&flagHasPidfd != 0 {
			return 2
		}
		return 1
	case msgGuardPidfd:
		return 1
	}
	return 0
}

func encode(m *message) ([]byte, error) {
	le := binary.LittleEndian
	b := make([]byte, headerSize, headerSize+registerFixedBody+len(m.Ranges)*rangeSize)
	le.PutUint32(b[0:], protoMagic)
	le.PutUint16(b[4:], protoVersion)
	le.PutUint16(b[6:], uint16(m.Type))
	putRanges := func() error {
		if len(m.Ranges) > maxRangesPerMsg {
			return fmt.Errorf("%w: %d ranges in one message", errProto, len(m.Ranges))
		}
		b = le.AppendUint32(b, uint32(len(m.Ranges)))
		for _, r := range m.Ranges {
			b = le.AppendUint64(b, r.Start)
			b = le.AppendUint64(b, r.Len)
		}
		return nil
	}
	switch m.Type {
	case msgHello:
		if n := len(m.ImagesID); n != 0 && n != imagesIDSize {
			return nil, fmt.Errorf("%w: %d-byte dump id", errProto, n)
		}
		b = append(b, m.ImagesID...)
	case msgDone, msgGuardHello, msgGuardFinished:
	case msgAck:
		text := m.Text
		if len(text) > maxAckText {
			text = text[:maxAckText]
		}
		b = le.AppendUint32(b, m.Status)
		b = le.AppendUint32(b, uint32(len(text)))
		b = append(b, text...)
	case msgRegister:
		b = le.AppendUint32(b, uint32(m.Pid))
		b = le.AppendUint32(b, m.Flags)
		b = le.AppendUint32(b, m.Total)
		if err := putRanges(); err != nil {
			return nil, err
		}
	case msgRanges:
		if err := putRanges(); err != nil {
			return nil, err
		}
	case msgGuardAdd, msgGuardPidfd:
		b = le.AppendUint64(b, m.ID)
		b = le.AppendUint32(b, uint32(m.Pid))
		b = le.AppendUint32(b, m.Flags)
	case msgGuardRelease:
		b = le.AppendUint64(b, m.ID)
	default:
		return nil, fmt.Errorf("%w: encode unknown type %d", errProto, m.Type)
	}
	return b, nil
}

// decode parses one datagram. It trusts nothing: every length is checked
// against the bytes present and the body must be consumed exactly.
func decode(b []byte) (*message, error) {
	le := binary.LittleEndian
	if len(b) < headerSize {
		return nil, fmt.Errorf("%w: %d-byte message", errProto, len(b))
	}
	if magic := le.Uint32(b[0:]); magic != protoMagic {
		return nil, fmt.Errorf("%w: bad magic %#x", errProto, magic)
	}
	if v := le.Uint16(b[4:]); v != protoVersion {
		return nil, fmt.Errorf("%w: version %d, this side speaks %d", ErrVersion, v, protoVersion)
	}
	m := &message{Type: msgType(le.Uint16(b[6:]))}
	body := b[headerSize:]
	need := func(n int) error {
		if len(body) != n {
			return fmt.Errorf("%w: %v body is %d bytes, want %d", errProto, m.Type, len(body), n)
		}
		return nil
	}
	ranges := func(p []byte) error {
		if len(p) < 4 {
			return fmt.Errorf("%w: %v: no range count", errProto, m.Type)
		}
		n := le.Uint32(p)
		if n > maxRangesPerMsg {
			return fmt.Errorf("%w: %v: %d ranges", errProto, m.Type, n)
		}
		p = p[4:]
		if len(p) != int(n)*rangeSize {
			return fmt.Errorf("%w: %v: %d bytes for %d ranges", errProto, m.Type, len(p), n)
		}
		m.Ranges = make([]Range, n)
		for i := range m.Ranges {
			m.Ranges[i] = Range{Start: le.Uint64(p[i*rangeSize:]), Len: le.Uint64(p[i*rangeSize+8:])}
		}
		return nil
	}
	switch m.Type {
	case msgHello:
		if len(body) != 0 {
			if err := need(imagesIDSize); err != nil {
				return nil, err
			}
			m.ImagesID = append([]byte(nil), body...)
		}
	case msgDone, msgGuardHello, msgGuardFinished:
		if err := need(0); err != nil {
			return nil, err
		}
	case msgAck:
		if len(body) < 8 {
			return nil, fmt.Errorf("%w: short ack", errProto)
		}
		m.Status = le.Uint32(body)
		n := le.Uint32(body[4:])
		if n > maxAckText {
			return nil, fmt.Errorf("%w: ack text of %d bytes", errProto, n)
		}
		if err := need(8 + int(n)); err != nil {
			return nil, err
		}
		if m.Status != ackOK && m.Status != ackError {
			return nil, fmt.Errorf("%w: ack status %d", errProto, m.Status)
		}
		m.Text = string(body[8:])
	case msgRegister:
		if len(body) < registerFixedBody {
			return nil, fmt.Errorf("%w: short register", errProto)
		}
		m.Pid = int32(le.Uint32(body))
		m.Flags = le.Uint32(body[4:])
		m.Total = le.Uint32(body[8:])
		if err := ranges(body[registerFixedBody:]); err != nil {
			return nil, err
		}
		if m.Pid <= 0 || m.Flags&^flagHasPidfd != 0 || uint32(len(m.Ranges)) > m.Total {
			return nil, fmt.Errorf("%w: register pid %d flags %#x, %d of %d ranges", errProto, m.Pid, m.Flags, len(m.Ranges), m.Total)
		}
	case msgRanges:
		if err := ranges(body); err != nil {
			return nil, err
		}
	case msgGuardAdd, msgGuardPidfd:
		if err := need(guardAddBody); err != nil {
			return nil, err
		}
		m.ID = le.Uint64(body)
		m.Pid = int32(le.Uint32(body[8:]))
		m.Flags = le.Uint32(body[12:])
		if m.Pid < 0 || m.Flags&^flagHasPidfd != 0 || (m.Type == msgGuardPidfd && (m.Pid == 0 || m.Flags != 0)) {
			return nil, fmt.Errorf("%w: %v pid %d flags %#x", errProto, m.Type, m.Pid, m.Flags)
		}
	case msgGuardRelease:
		if err := need(8); err != nil {
			return nil, err
		}
		m.ID = le.Uint64(body)
	default:
		return nil, fmt.Errorf("%w: unknown message type %d", errProto, uint16(m.Type))
	}
	return m, nil
}

// checkRanges validates a registration's ranges: page aligned, non-empty,
// not wrapping, sorted and disjoint.
func checkRanges(rs []Range) error {
	var prevEnd uint64
	for i, r := range rs {
		if r.Start%pageSize != 0 || r.Len%pageSize != 0 || r.Len == 0 {
			return fmt.Errorf("range %d [%#x,+%#x) is not whole pages", i, r.Start, r.Len)
		}
		if r.Len > math.MaxUint64-r.Start {
			return fmt.Errorf("range %d [%#x,+%#x) wraps", i, r.Start, r.Len)
		}
		if i > 0 && r.Start < prevEnd {
			return fmt.Errorf("range %d at %#x overlaps or precedes the previous one", i, r.Start)
		}
		prevEnd = r.Start + r.Len
	}
	return nil
}
