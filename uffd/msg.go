package uffd

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// Msg is a decoded struct uffd_msg. Event selects which of the other fields
// is meaningful; EventRemove and EventUnmap both use Remove.
type Msg struct {
	Event     uint8
	Pagefault Pagefault
	Fork      Fork
	Remap     Remap
	Remove    Remove
}

// Pagefault is the payload of EventPagefault.
type Pagefault struct {
	Flags   uint64 // PagefaultFlag*
	Address uint64 // page aligned unless FeatureExactAddress
	Ptid    uint32 // faulting thread, with FeatureThreadID
}

// Fork is the payload of EventFork. UFD is a new userfaultfd for the child's
// mm, installed in the reading process's fd table by the read itself: the
// reader owns it and must close it.
type Fork struct {
	UFD int
}

// Remap is the payload of EventRemap: mremap moved [From, From+Len) to To.
type Remap struct {
	From, To, Len uint64
}

// Remove is the payload of EventRemove (madvise DONTNEED/REMOVE: the pages
// are dropped and will read zero) and EventUnmap (munmap).
type Remove struct {
	Start, End uint64
}

func (m Msg) String() string {
	switch m.Event {
	case EventPagefault:
		return fmt.Sprintf("pagefault{addr %#x flags %#x ptid %d}", m.Pagefault.Address, m.Pagefault.Flags, m.Pagefault.Ptid)
	case EventFork:
		return fmt.Sprintf("fork{ufd %d}", m.Fork.UFD)
	case EventRemap:
		return fmt.Sprintf("remap{%#x -> %#x len %#x}", m.Remap.From, m.Remap.To, m.Remap.Len)
	case EventRemove:
		return fmt.Sprintf("remove{[%#x,%#x)}", m.Remove.Start, m.Remove.End)
	case EventUnmap:
		return fmt.Sprintf("unmap{[%#x,%#x)}", m.Remove.Start, m.Remove.End)
	}
	return fmt.Sprintf("event %#x", m.Event)
}

// DecodeMsg decodes one struct uffd_msg (MsgSize bytes, host order; the
// package only supports little-endian hosts like the rest of lazyr).
func DecodeMsg(b []byte) (Msg, error) {
	if len(b) != MsgSize {
		return Msg{}, fmt.Errorf("uffd_msg: %d bytes, want %d", len(b), MsgSize)
	}
	le := binary.LittleEndian
	m := Msg{Event: b[0]}
	arg := b[8:]
	switch m.Event {
	case EventPagefault:
		m.Pagefault = Pagefault{Flags: le.Uint64(arg[0:]), Address: le.Uint64(arg[8:]), Ptid: le.Uint32(arg[16:])}
	case EventFork:
		m.Fork = Fork{UFD: int(le.Uint32(arg[0:]))}
	case EventRemap:
		m.Remap = Remap{From: le.Uint64(arg[0:]), To: le.Uint64(arg[8:]), Len: le.Uint64(arg[16:])}
	case EventRemove, EventUnmap:
		m.Remove = Remove{Start: le.Uint64(arg[0:]), End: le.Uint64(arg[8:])}
	default:
		return m, fmt.Errorf("uffd_msg event %#x: %w", m.Event, ErrUnknownEvent)
	}
	return m, nil
}

// maxReadMsgs bounds one read so the buffer can live on the stack.
const maxReadMsgs = 64

// ReadMsgs reads up to len(buf) (at most 64) pending messages without
// blocking and decodes them into buf. It returns 0, nil when nothing is
// pending. The fd must be non-blocking (New with unix.O_NONBLOCK, or
// SetNonblock): on a blocking fd the read waits for a message.
//
// A message read is never dropped: one with an event code this package
// does not know is returned with only Event set. A fork message's UFD is
// already open in the caller when this returns.
func (u *FD) ReadMsgs(buf []Msg) (int, error) {
	var raw [maxReadMsgs * MsgSize]byte
	want := min(len(buf), maxReadMsgs)
	if want == 0 {
		return 0, nil
	}
	var n int
	var err error
	for {
		n, err = unix.Read(u.fd, raw[:want*MsgSize])
		if err != unix.EINTR {
			break
		}
	}
	if err == unix.EAGAIN {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read userfaultfd %d: %w", u.fd, err)
	}
	if n%MsgSize != 0 {
		return 0, fmt.Errorf("read userfaultfd %d: %d bytes is not a whole number of messages", u.fd, n)
	}
	count := n / MsgSize
	for i := 0; i < count; i++ {
		// Unknown events keep their code; the kernel-written buffer has
		// the right size, so that is the only possible decode error.
		buf[i], _ = DecodeMsg(raw[i*MsgSize : (i+1)*MsgSize])
	}
	return count, nil
}
