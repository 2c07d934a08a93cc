package dump

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// What sock_diag (NETLINK_SOCK_DIAG, linux/unix_diag.h) tells about a unix socket that nothing else
// does: its peer's inode, the connections waiting in a listener's queue, the listen backlog and the
// shutdown state.
const (
	udiagShowName  = 0x01
	udiagShowVFS   = 0x02
	udiagShowPeer  = 0x04
	udiagShowIcons = 0x08
	udiagShowRqlen = 0x10

	unixDiagName     = 0
	unixDiagVFS      = 1
	unixDiagPeer     = 2
	unixDiagIcons    = 3
	unixDiagRqlen    = 4
	unixDiagShutdown = 6 // sent always, it has no show flag

	nlmsgHdrLen   = 16
	unixDiagMsgSz = 16 // family, type, state, pad, ino, cookie[2]
)

// unixDiag is one socket as sock_diag reports it.
type unixDiag struct {
	Type, State uint8
	Ino         uint32
	Name        []byte // nil: unbound; a leading 0 byte: abstract
	HasVFS      bool
	VFSIno      uint32
	VFSDev      uint32 // kernel dev_t (major<<20 | minor)
	Peer        uint32
	Icons       []uint32 // inodes of connections not accepted yet (listeners)
	Rqueue      uint32   // listeners: connections queued; others: bytes queued
	Wqueue      uint32   // listeners: the backlog; others: bytes in flight
	Shutdown    uint8    // RCV_SHUTDOWN 1 | SEND_SHUTDOWN 2
}

// queryUnixDiag asks sock_diag about the unix socket with inode ino, in lazyr's network namespace.
func queryUnixDiag(ino uint32) (*unixDiag, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	req := make([]byte, nlmsgHdrLen+24)
	le := binary.LittleEndian
	le.PutUint32(req[0:], uint32(len(req)))
	le.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	le.PutUint16(req[6:], unix.NLM_F_REQUEST)
	le.PutUint32(req[8:], ino) // seq
	b := req[nlmsgHdrLen:]
	b[0] = unix.AF_UNIX
	le.PutUint32(b[4:], ^uint32(0)) // all states
	le.PutUint32(b[8:], ino)
	le.PutUint32(b[12:], udiagShowName|udiagShowVFS|udiagShowPeer|udiagShowIcons|udiagShowRqlen)
	le.PutUint32(b[16:], ^uint32(0)) // no cookie check
	le.PutUint32(b[20:], ^uint32(0))
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag request: %w", err)
	}
	buf := make([]byte, 64<<10)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return nil, fmt.Errorf("sock_diag reply: %w", err)
	}
	d, err := parseUnixDiag(buf[:n])
	if err != nil {
		return nil, fmt.Errorf("sock_diag of socket %d: %w", ino, err)
	}
	if d.Ino != ino {
		return nil, fmt.Errorf("sock_diag answered for socket %d, not %d", d.Ino, ino)
	}
	return d, nil
}

// parseUnixDiag decodes one sock_diag reply (a netlink message holding a unix_diag_msg and its
// attributes, or an error).
func parseUnixDiag(b []byte) (*unixDiag, error) {
	le := binary.LittleEndian
	if len(b) < nlmsgHdrLen {
		return nil, errors.New("short netlink message")
	}
	mlen := int(le.Uint32(b))
	if mlen < nlmsgHdrLen || mlen > len(b) {
		return nil, fmt.Errorf("netlink message length %d of %d bytes", mlen, len(b))
	}
	typ := le.Uint16(b[4:])
	b = b[nlmsgHdrLen:mlen]
	switch typ {
	case unix.NLMSG_ERROR:
		if len(b) < 4 {
			return nil, errors.New("short netlink error")
		}
		if e := int32(le.Uint32(b)); e < 0 {
			// ENOENT: not a socket of lazyr's network namespace.
			return nil, unix.Errno(-e)
		}
		return nil, errors.New("netlink acknowledgement instead of an answer")
	case unix.SOCK_DIAG_BY_FAMILY:
	default:
		return nil, fmt.Errorf("unexpected netlink message type %d", typ)
	}
	if len(b) < unixDiagMsgSz {
		return nil, errors.New("short unix_diag_msg")
	}
	if b[0] != unix.AF_UNIX {
		return nil, fmt.Errorf("family %d is not AF_UNIX", b[0])
	}
	d := &unixDiag{Type: b[1], State: b[2], Ino: le.Uint32(b[4:])}
	for a := b[unixDiagMsgSz:]; len(a) >= 4; {
		alen := int(le.Uint16(a))
		atyp := le.Uint16(a[2:]) & 0x3fff // without NLA_F_NESTED / NLA_F_NET_BYTEORDER
		if alen < 4 || alen > len(a) {
			return nil, fmt.Errorf("attribute %d of length %d in %d bytes", atyp, alen, len(a))
		}
		v := a[4:alen]
		switch atyp {
		case unixDiagName:
			d.Name = append([]byte{}, v...)
		case unixDiagVFS:
			if len(v) < 8 {
				return nil, errors.New("short UNIX_DIAG_VFS")
			}
			d.HasVFS, d.VFSIno, d.VFSDev = true, le.Uint32(v), le.Uint32(v[4:])
		case unixDiagPeer:
			if len(v) < 4 {
				return nil, errors.New("short UNIX_DIAG_PEER")
			}
			d.Peer = le.Uint32(v)
		case unixDiagIcons:
			for i := 0; i+4 <= len(v); i += 4 {
				d.Icons = append(d.Icons, le.Uint32(v[i:]))
			}
		case unixDiagRqlen:
			if len(v) < 8 {
				return nil, errors.New("short UNIX_DIAG_RQLEN")
			}
			d.Rqueue, d.Wqueue = le.Uint32(v), le.Uint32(v[4:])
		case unixDiagShutdown:
			if len(v) < 1 {
				return nil, errors.New("short UNIX_DIAG_SHUTDOWN")
			}
			d.Shutdown = v[0]
		}
		step := (alen + 3) &^ 3
		if step > len(a) {
			break
		}
		a = a[step:]
	}
	return d, nil
}
