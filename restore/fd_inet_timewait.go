package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// TIME_WAIT sockets and restored listeners.
//
// A connection the dumped process closed first left a TIME_WAIT socket on the listener's port. The
// kernel copies SO_REUSEADDR from the listener into its connections and their TIME_WAIT sockets, and a
// bind or listen conflicts with a TIME_WAIT socket unless both have it: a listener without SO_REUSEADDR
// cannot be bound again on its own port for 60 s (the "Address already in use" of a restarted server).
// TCP repair mode forces the bind, but a listener cannot leave repair mode and its connections would
// inherit it. So when a bind or listen fails with EADDRINUSE, the TIME_WAIT sockets on exactly that local
// address and port (the process's own former connections, owned by no process) are destroyed through
// sock_diag (SOCK_DESTROY, CONFIG_INET_DIAG_DESTROY) and the call is retried once.

// sock_diag constants (linux/sock_diag.h, linux/inet_diag.h).
const (
	sockDiagByFamily = 20
	sockDestroy      = 21
	tcpTimeWait      = 6
	inetDiagReqLen   = 56 // struct inet_diag_req_v2
	inetDiagMsgLen   = 72 // struct inet_diag_msg
	inetDiagIDLen    = 48 // struct inet_diag_sockid
	nlmsgHdrLen      = 16
)

// diagID is struct inet_diag_sockid as the kernel sent it (ports and addresses in network order).
type diagID [inetDiagIDLen]byte

func (id diagID) localPort() uint16 { return binary.BigEndian.Uint16(id[0:]) }

func (id diagID) localAddr(family uint8) netip.Addr {
	if family == unix.AF_INET {
		return netip.AddrFrom4([4]byte(id[4:8]))
	}
	return netip.AddrFrom16([16]byte(id[4:20])).Unmap()
}

// timeWaitSock is one TIME_WAIT socket found by sock_diag.
type timeWaitSock struct {
	family uint8
	id     diagID
}

// diagRequest builds a netlink message carrying an inet_diag_req_v2.
func diagRequest(typ uint16, flags uint16, family uint8, states uint32, id *diagID) []byte {
	b := make([]byte, nlmsgHdrLen+inetDiagReqLen)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint16(b[6:], flags)
	binary.NativeEndian.PutUint32(b[8:], 1) // seq
	r := b[nlmsgHdrLen:]
	r[0], r[1] = family, unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(r[4:], states)
	if id != nil {
		copy(r[8:], id[:])
	}
	return b
}

// parseDiagDump decodes the answer to a sock_diag dump: the sockets it lists, whether the dump is done
// (NLMSG_DONE seen), or the error the kernel reported.
func parseDiagDump(b []byte) (socks []timeWaitSock, done bool, err error) {
	for len(b) >= nlmsgHdrLen {
		l := binary.NativeEndian.Uint32(b[0:])
		typ := binary.NativeEndian.Uint16(b[4:])
		if l < nlmsgHdrLen || uint64(l) > uint64(len(b)) {
			return nil, false, fmt.Errorf("sock_diag: truncated message (%d bytes of %d)", len(b), l)
		}
		body := b[nlmsgHdrLen:l]
		switch typ {
		case unix.NLMSG_DONE:
			return socks, true, nil
		case unix.NLMSG_ERROR:
			if len(body) < 4 {
				return nil, false, errors.New("sock_diag: short error message")
			}
			if e := int32(binary.NativeEndian.Uint32(body)); e != 0 {
				return nil, false, unix.Errno(-e)
			}
		case sockDiagByFamily:
			if len(body) < inetDiagMsgLen {
				return nil, false, fmt.Errorf("sock_diag: short inet_diag_msg (%d bytes)", len(body))
			}
			s := timeWaitSock{family: body[0]}
			copy(s.id[:], body[4:4+inetDiagIDLen])
			if body[1] == tcpTimeWait && (s.family == unix.AF_INET || s.family == unix.AF_INET6) {
				socks = append(socks, s)
			}
		}
		// Messages are aligned to 4 bytes.
		next := (uint64(l) + 3) &^ 3
		if next > uint64(len(b)) {
			break
		}
		b = b[next:]
	}
	return socks, false, nil
}

// destroyTimeWait destroys the TIME_WAIT sockets whose local end is local (any address when local's
// address is unspecified) in lazyr's network namespace, and returns how many it destroyed.
func destroyTimeWait(local netip.AddrPort) (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("sock_diag bind: %w", err)
	}
	var found []timeWaitSock
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		req := diagRequest(sockDiagByFamily, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, family, 1<<tcpTimeWait, nil)
		if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return 0, fmt.Errorf("sock_diag dump: %w", err)
		}
		buf := make([]byte, 64<<10)
		for done := false; !done; {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				return 0, fmt.Errorf("sock_diag dump: %w", err)
			}
			var socks []timeWaitSock
			if socks, done, err = parseDiagDump(buf[:n]); err != nil {
				return 0, fmt.Errorf("sock_diag dump: %w", err)
			}
			for _, s := range socks {
				a := s.id.localAddr(s.family)
				if s.id.localPort() == local.Port() && (local.Addr().IsUnspecified() || a == local.Addr().Unmap()) {
					found = append(found, s)
				}
			}
		}
	}
	destroyed := 0
	for _, s := range found {
		req := diagRequest(sockDestroy, unix.NLM_F_REQUEST|unix.NLM_F_ACK, s.family, 1<<tcpTimeWait, &s.id)
		if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return destroyed, fmt.Errorf("sock_diag destroy: %w", err)
		}
		buf := make([]byte, 4096)
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return destroyed, fmt.Errorf("sock_diag destroy: %w", err)
		}
		_, _, err = parseDiagDump(buf[:n])
		switch {
		case errors.Is(err, unix.ENOENT):
			// Gone by itself meanwhile.
		case err != nil:
			return destroyed, fmt.Errorf("sock_diag destroy: %w", err)
		default:
			destroyed++
		}
	}
	return destroyed, nil
}
